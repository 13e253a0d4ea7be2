"""Two records of one pruned model on different documents (e.g. the full split and a random sample) must
give every document they share the same outcome: scoring a document does not depend on which others were
scored, how many at a time (eval.chunk_docs) or on how many threads.

    python -m experiments.check_shared_docs results/records/<full split>.json results/records/<random 500>.json

Prints one row per task both records scored with per-document outcomes (documents shared, how many differ);
exits 1 when any shared document differs, 2 when the records are not of the same model and settings.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from diet.analysis.frame import run_row
from diet.run.recheck import record_documents
from diet.analysis.check_table import print_checks


def same_model(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same model, method, sparsity, seed the result depends on, and mask (when recorded): only the documents
    may differ."""
    def identity(record: dict[str, Any]) -> tuple:
        row = run_row(record)
        return (row.model, row.method, row.sparsity, row.seed, row.mask_hash)
    return identity(a) == identity(b)


def shared_rows(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[list[str], bool]]:
    rows = []
    for task in sorted(set(a["tasks"]) & set(b["tasks"])):
        if "outcomes" not in a["tasks"][task] or "outcomes" not in b["tasks"][task]:
            continue
        first, second = record_documents(a["tasks"][task]), record_documents(b["tasks"][task])
        shared = sorted(set(first) & set(second))
        differ = sum(first[doc] != second[doc] for doc in shared)
        rows.append(([task, len(first), len(second), len(shared), differ], differ > 0))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args(argv)
    a, b = (json.loads(path.read_text()) for path in (args.first, args.second))
    if not same_model(a, b):
        print(f"not the same pruned model: {args.first.name} and {args.second.name} differ in model, method, "
              "sparsity, mask or seed; compare two records of one model on different documents")
        return 2
    rows = shared_rows(a, b)
    if not rows:
        print("no task with per-document outcomes in both records")
        return 2
    return print_checks(["task", f"docs in {args.first.name}", f"docs in {args.second.name}", "shared", "differ"],
                        rows, "with a shared document scored differently", unit="task(s)")


if __name__ == "__main__":
    raise SystemExit(main())
