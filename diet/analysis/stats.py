"""The few statistics the tables use: averages with standard errors, chance levels, honest differences.

Tasks are treated as independent samples, so the standard error of a mean over T tasks is
sqrt(sum se_t^2) / T. Two methods evaluated on the same documents are positively correlated: where
both records hold per-document outcomes, a difference's se comes from the per-document differences
(paired); otherwise the unpaired se is used, which is conservative: a difference called significant is real.
"""

from __future__ import annotations

import math
from typing import Sequence


Z = 2.0  # "clearly" / "significant" = more than 2 standard errors
ALPHA = 0.05  # family-wise error rate of the Holm-corrected reading
VOTE_EPS = 1e-9  # same slack as diet.select.masks: threshold 0.142857 with 7 tasks needs 1 vote


def mean_se(scores: Sequence[float], stderrs: Sequence[float]) -> tuple[float, float]:
    """Mean over tasks and its standard error (independent tasks); NaN for no tasks."""
    if not scores:
        return math.nan, math.nan
    count = len(scores)
    return sum(scores) / count, math.sqrt(sum(se * se for se in stderrs)) / count


def clearly_above_chance(chance: float | None, score: float, stderr: float) -> bool:
    """Whether score exceeds a task's chance level (diet.eval.tasks.chance_level: the majority-label rate of BoolQ
    and RTE, uniform guessing among the options elsewhere) by more than Z standard errors (no chance level: no)."""
    return chance is not None and score - chance > Z * stderr


def difference(a: float, se_a: float, b: float, se_b: float) -> tuple[float, float, bool]:
    """a - b, its standard error, and whether |a - b| exceeds Z of them."""
    diff = a - b
    se = math.sqrt(se_a * se_a + se_b * se_b)
    return diff, se, bool(abs(diff) > Z * se)


def paired_difference(a: str, b: str) -> tuple[float, float]:
    """Mean and standard error of the per-document differences of two '0'/'1' outcome strings over the
    same documents (sample sd with ddof=1, as lm-eval's stderr); se is NaN for fewer than 2 documents."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need the same documents: {len(a)} vs {len(b)} outcomes")
    count = len(a)
    if count == 0:
        return math.nan, math.nan
    diffs = [int(x) - int(y) for x, y in zip(a, b)]
    mean = sum(diffs) / count
    if count < 2:
        return mean, math.nan
    variance = sum((d - mean) ** 2 for d in diffs) / (count - 1)
    return mean, math.sqrt(variance / count)


def votes_needed(threshold: float, n_tasks: int) -> int:
    """k: the votes a channel needs at this threshold (as in the "vote" merge of diet.select.masks)."""
    return max(1, math.ceil(threshold * n_tasks - VOTE_EPS))


def two_sided_p(diff: float, se: float) -> float:
    """Two-sided p-value of diff / se under a normal null (NaN where either is NaN or se is not positive)."""
    if math.isnan(diff) or math.isnan(se) or se <= 0:
        return math.nan
    return math.erfc(abs(diff) / se / math.sqrt(2.0))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (Holm 1979): the k-th smallest of m p-values
    times (m - k + 1), made monotone by a running maximum, capped at 1. NaN entries are not comparisons:
    they stay NaN and do not count in m."""
    ranked = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m, adjusted, running = len(ranked), [math.nan] * len(pvalues), 0.0
    for k, (p, i) in enumerate(ranked):
        running = max(running, min(1.0, (m - k) * p))
        adjusted[i] = running
    return adjusted

