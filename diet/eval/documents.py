"""Which documents of each task's evaluated split are scored: all, a seeded random sample, or the first N.

`eval.limit` caps documents per task. The first N documents of a split are not a sample of it: HellaSwag
validation is ActivityNet for its first 3243 documents and WikiHow after them, so `eval.docs=random`
(the default whenever a limit is set) draws N document indices per task with `eval.docs_seed`, the same
for every method and every calibration seed, so two runs pair document by document. `first` keeps the
old behaviour (lm-eval's `limit`), recorded as such.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from diet.errors import DietConfigError

DOC_SELECTIONS = ("random", "first")


@dataclass(frozen=True)
class DocumentSelection:
    limit: int | None = None
    docs: str = "random"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.docs not in DOC_SELECTIONS:
            raise DietConfigError(f"eval.docs={self.docs!r} is not allowed: use one of {', '.join(DOC_SELECTIONS)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise DietConfigError(f"eval.docs_seed={self.seed!r} is not allowed: use an integer")

    @property
    def is_random(self) -> bool:
        return self.limit is not None and self.docs == "random"

    def label(self) -> str:
        """'all' | 'first500' | 'random500s0' (what a table says about its documents)."""
        if self.limit is None:
            return "all"
        return f"first{self.limit}" if self.docs == "first" else f"random{self.limit}s{self.seed}"

    def indices(self, task: str, n_docs: int) -> list[int] | None:
        """Sorted document indices of the random sample (None = lm-eval's own limit/all documents).

        A limit at or above the split size takes the whole split. The RNG is seeded by (seed, task), so
        tasks draw independently and a task's sample does not depend on which other tasks run."""
        if not self.is_random or self.limit >= n_docs:
            return None
        return sorted(random.Random(f"diet-docs:{self.seed}:{task}").sample(range(n_docs), self.limit))


def identity(selection: DocumentSelection) -> dict | None:
    """What the config hash adds for the documents: only for a random sample (first-N and all-documents
    cells keep the identity they had before random samples existed)."""
    return {"random_seed": selection.seed} if selection.is_random else None
