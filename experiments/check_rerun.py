"""Re-run stored cells with the current code on a seeded random subset of their own documents and compare,
document by document, with what the record stored (issue 16: "same metrics on a re-run of one committed cell
of each method").

    python -m experiments.check_rerun results/records                    # one cell per method, 40 docs/task
    python -m experiments.check_rerun results/records --method flap --docs 100

Each chosen record's selection is recomputed (diet.run.recheck: profiles from the cache), the model
pruned as the record's run pruned it, and `--docs` of the record's documents per task (drawn with `--seed`)
scored again. A document scored on a subset gets the same outcome as on its full sample
(tests/test_documents.py), so a re-check of a subset is exact: every document must match. Per method the
record of the primary study (random500s0, seed 0) is preferred. Exits 1 when a mask or an outcome differs.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from diet.analysis.check_table import print_checks
from diet.analysis.frame import newest_per_cell
from diet.run.recheck import rerun
from diet.run.records import iter_records

PREFERRED_DOCUMENTS = "random500s0"


def one_per_method(results_dir: Path, methods: list[str] | None) -> list[dict[str, Any]]:
    records = [r for r in newest_per_cell(iter_records(results_dir))
               if (not methods or r["method"] in methods)
               and all("outcomes" in entry for entry in r["tasks"].values())]
    chosen: dict[str, dict[str, Any]] = {}
    for record in records:
        key = (record["eval"].get("documents") == PREFERRED_DOCUMENTS, record.get("seed") == 0,
               record["finished_at"])
        kept = chosen.get(record["method"])
        if kept is None or key > kept[0]:
            chosen[record["method"]] = (key, record)
    return [chosen[method][1] for method in sorted(chosen)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--method", action="append", help="only this method (repeatable)")
    parser.add_argument("--docs", type=int, default=40, help="documents re-scored per task (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the re-scored subset")
    args = parser.parse_args(argv)
    if args.docs < 1:
        parser.error(f"--docs={args.docs} is not allowed: use a positive number of documents per task")
    logging.basicConfig(level=logging.WARNING)
    records = one_per_method(args.results_dir, args.method)
    if not records:
        raise SystemExit(f"no records with per-document outcomes in {args.results_dir} match")
    return print_checks(["record", "method", "documents", "mask", "outcomes", "result"],
                        (rerun_row(record, args.docs, args.seed) for record in records), "different")


def rerun_row(record: dict[str, Any], docs: int, seed: int) -> tuple[list[str], bool]:
    """One row of the printed table: the re-run's mask and per-document verdicts for one record."""
    got = rerun(record, docs, seed)
    differing = got.get("differing") or {}
    outcomes = ("identical" if not differing else
                "; ".join(f"{task}: {len(ids)} differ ({ids[:5]})" for task, ids in differing.items()))
    return ([Path(record["_path"]).name, record["method"], got.get("documents", ""), got.get("mask", ""),
             outcomes if "documents" in got else "", got["result"]], got["result"] == "DIFFERENT")


if __name__ == "__main__":
    raise SystemExit(main())
