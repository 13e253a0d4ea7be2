"""Recompute the masks of stored records with the current code and compare them (no evaluation).

    python -m experiments.check_masks results/records            # one record per kind of cell
    python -m experiments.check_masks results/records --per-kind 0 --method diet   # every DIET record

A kind is (model, method, dims, calib.source, method.mask.scope, method.merge, method.profile.stat). A record whose identity the
current code computes differently (a method version bumped since) is listed as superseded, not checked.
Calibration profiles come from the profile cache where present, so most checks take seconds after the
model is loaded. Exits 1 when a recomputed mask differs from its record.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from diet.analysis.check_table import print_checks
from diet.analysis.frame import newest_per_cell
from diet.config.layout import current_layout
from diet.run.recheck import recompute_selection, same_mask
from diet.run.records import iter_records


def kind(record: dict[str, Any]) -> tuple:
    cfg = current_layout(record["config"])
    own = cfg["method"]
    return (record["model"]["name"], record["method"], cfg.get("dims", "mlp"), cfg["calib"].get("source", "tasks"),
            (own.get("mask") or {}).get("scope", "layer"), own.get("merge", "vote"),
            (own.get("profile") or {}).get("stat", "mean_abs"))


def chosen_records(results_dir: Path, methods: list[str] | None, per_kind: int) -> list[dict[str, Any]]:
    records = [r for r in newest_per_cell(iter_records(results_dir))
               if r["method"] != "dense" and (not methods or r["method"] in methods)]
    taken: dict[tuple, int] = {}
    out = []
    for record in sorted(records, key=lambda r: (kind(r), r["config_hash"])):
        if per_kind and taken.get(kind(record), 0) >= per_kind:
            continue
        taken[kind(record)] = taken.get(kind(record), 0) + 1
        out.append(record)
    return out


def check(record: dict[str, Any]) -> str:
    """'same' | 'DIFFERENT' | 'superseded' (diet.run.recheck)."""
    selection = recompute_selection(record)
    if selection is None:
        return "superseded"
    return "same" if same_mask(selection, record) else "DIFFERENT"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--method", action="append", help="only records of this method (repeatable)")
    parser.add_argument("--per-kind", type=int, default=1, help="records checked per kind of cell (0 = all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    records = chosen_records(args.results_dir, args.method, args.per_kind)
    if not records:
        raise SystemExit(f"no pruned records in {args.results_dir} match")
    return print_checks(["record", "method", "dims", "calib", "scope", "merge", "stat", "result"],
                        (mask_row(record) for record in records), "with a different mask")


def mask_row(record: dict[str, Any]) -> tuple[list[str], bool]:
    """One row of the printed table: what kind of cell the record is and whether its mask is the same."""
    result = check(record)
    _, method, dims, source, scope, merge, stat = kind(record)
    return [Path(record["_path"]).name, method, dims, source, scope, merge, stat, result], result == "DIFFERENT"


if __name__ == "__main__":
    raise SystemExit(main())
