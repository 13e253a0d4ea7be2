"""The table the check CLIs (check_masks, check_rerun) print: one markdown row per stored record as soon as
its check finishes (each can take minutes), then how many differed."""
from __future__ import annotations

from collections.abc import Iterable


def print_checks(header: list[str], rows: Iterable[tuple[list[str], bool]], differing: str,
                 unit: str = "record(s)") -> int:
    """Print `rows` ((cells, differs) pairs, computed lazily) under `header`; returns the exit status:
    1 when any row differs. `differing` words the count, e.g. "with a different mask"; `unit` what a row is."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    count = different = 0
    for cells, differs in rows:
        count += 1
        different += differs
        print("| " + " | ".join(str(cell) for cell in cells) + " |", flush=True)
    print(f"\n{count} {unit}: {different} {differing}")
    return 1 if different else 0
