"""One run minus another, paired per document: the average over the accuracy tasks and every task, in points.

    python -m experiments.paired results/records --model smollm2_135m --documents random500s0 \\
        "method=diet" "method=flap"                      # more pairs: A B [A B ...]

A run is named by `column=value` filters on the results frame's run columns (method, seed, calib_source,
merge, exclude_bos, ...), comma-separated; each must match exactly one run of the block. The se is that of the
per-document differences where both records hold outcomes of the same documents (else unpaired), as in the
tables (diet.analysis.tables.compare); significant = |diff| > 2 se, uncorrected.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from diet.analysis.blocks import Block
from diet.analysis.tables import compare
from diet.analysis.block_lookup import find_block


def find_run(block: Block, spec: str) -> dict[str, Any]:
    """The one run of `block` whose columns match every `column=value` of `spec` (values compared as text)."""
    filters = [item.split("=", 1) for item in spec.split(",") if item]
    if not filters or any(len(item) != 2 for item in filters):
        raise SystemExit(f"{spec!r}: name a run as column=value[,column=value...], e.g. method=diet,seed=0")
    unknown = sorted({column for column, _ in filters} - set(block.runs[0]))
    if unknown:
        raise SystemExit(f"{spec!r}: unknown column(s) {unknown}; known: {sorted(block.runs[0])}")
    matches = [run for run in block.runs if all(str(run[column]) == value for column, value in filters)]
    if len(matches) != 1:
        found = [f"{run['method']} seed {run['seed']} {run['variant'] or '(default)'}" for run in matches]
        raise SystemExit(f"{spec!r} matches {len(matches)} runs of {block.model}/{block.documents}, not one: {found}")
    return matches[0]


def format_pair(block: Block, a: dict[str, Any], b: dict[str, Any]) -> str:
    diff, se, significant, paired = compare(a, b, block.averaged)
    tasks = ", ".join(f"{task} {d:+.1f} ± {e:.1f}" for task in block.averaged for d, e in [compare(a, b, [task])[:2]])
    above = ""
    if block.above_chance:  # the tasks where dense is > 2 se above chance, as in the tables' avg_above_chance
        d, e, s, _ = compare(a, b, block.above_chance)
        above = f"; above chance ({', '.join(block.above_chance)}) {d:+.1f} ± {e:.1f}{' (significant)' if s else ''}"
    return (f"average {diff:+.1f} ± {se:.1f} ({'paired' if paired else 'unpaired'}"
            f"{', significant' if significant else ''}){above}; {tasks}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--model", required=True)
    parser.add_argument("--documents", required=True, help="the block's documents label, e.g. random500s0, all")
    parser.add_argument("runs", nargs="+", help="pairs of run specs: A B [A B ...]; prints A minus B")
    args = parser.parse_args(argv)
    if len(args.runs) % 2:
        parser.error(f"runs come in pairs (A minus B); got {len(args.runs)}")
    logging.basicConfig(level=logging.WARNING)
    block = find_block(args.results_dir, args.documents, args.model)
    for a, b in zip(args.runs[::2], args.runs[1::2]):
        print(f"{a} minus {b}: {format_pair(block, find_run(block, a), find_run(block, b))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
