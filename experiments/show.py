"""Print the per-task table of the records in a results folder: python -m experiments.show results/demo"""

from __future__ import annotations

import argparse
from pathlib import Path

from diet.run.records import iter_records
from diet.analysis.report import format_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--model", help="only records of this model")
    parser.add_argument("--limit", type=int, help="only records evaluated at this eval.limit")
    args = parser.parse_args()
    records = [
        r for r in iter_records(args.results_dir)
        if (args.model is None or r["model"]["name"] == args.model)
        and (args.limit is None or r["eval"]["limit"] == args.limit)
    ]
    if not records:
        raise SystemExit(f"no records in {args.results_dir} match")
    records.sort(key=lambda r: (r["method"] != "dense", r["sparsity"]["target"], r["method"], r["finished_at"]))
    print(format_table(records))


if __name__ == "__main__":
    main()
