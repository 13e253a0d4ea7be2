"""Overlap of the MLP masks of stored records: the Jaccard of their kept channels (all layers), pairwise.

    python -m experiments.mask_overlap results/records/<a>.json results/records/<b>.json [...]

Each record's selection is recomputed with the current code from the profile cache (the sequential
calibrations of wanda_sp and flap are recomputed where not cached), and refused unless it reproduces the
record's mask hash, so the overlap is that of the masks the records were scored with.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from pathlib import Path

from diet.select.masks import jaccard

from diet.run.recheck import verified_selection


def label(record: dict) -> str:
    source = record["config"]["calib"].get("source", "tasks")
    return f"{record['method']} (seed {record['seed']}, calib {source})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("records", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if len(args.records) < 2:
        parser.error("name at least two records to compare")
    logging.basicConfig(level=logging.WARNING)
    masks, names = {}, []
    for path in args.records:
        record = json.loads(path.read_text())
        record["_path"] = str(path)
        selection = verified_selection(record)
        if selection.kept("mlp") is None:
            raise SystemExit(f"{path.name}: prunes no MLP channels, so it has no MLP mask to compare")
        names.append(f"{label(record)}: {path.name}")
        masks[names[-1]] = selection.kept("mlp")
    print("| mask A | mask B | Jaccard of the kept MLP channels |")
    print("|---|---|---:|")
    for a, b in itertools.combinations(names, 2):
        print(f"| {a} | {b} | {jaccard(masks[a], masks[b]):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
