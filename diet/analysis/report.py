"""Human-readable tables of records (terminal and markdown), every score with its standard error."""

from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd

from diet.analysis.blocks import task_rank
from diet.analysis.stats import Z, mean_se
from diet.analysis.tables import compare
from diet.eval.metric_kinds import ACCURACY, metric_kind
from diet.eval.tasks import averaged_tasks

SE_NOTE = "scores: accuracy in points ± one standard error"


def ordered_tasks(record: dict[str, Any]) -> list[str]:
    """Paper order, then others alphabetically (records store their tasks sorted by name)."""
    return sorted(record["tasks"], key=task_rank)


def stderr(metrics: dict[str, Any]) -> float:
    """A task's score_stderr, NaN where lm-eval gave none (a single document: 'N/A')."""
    value = metrics.get("score_stderr")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


def average_se(record: dict[str, Any]) -> float:
    """se of the record's average: sqrt(sum se_t^2) / T over its averaged tasks (independent tasks)."""
    tasks = record["average"].get("tasks") or averaged_tasks({t: record["tasks"][t] for t in ordered_tasks(record)})
    ses = [stderr(record["tasks"][task]) for task in tasks]
    return mean_se([record["tasks"][task]["score"] for task in tasks], ses)[1]


def points(score: float, se: float) -> str:
    """'62.0 ± 3.4' (points, one decimal); just '62.0' without an se."""
    return f"{100 * score:.1f}" if math.isnan(se) else f"{100 * score:.1f} ± {100 * se:.1f}"


def per_task_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows: one per record (method @ sparsity); columns: each task's headline score ± se, the average ± se,
    sparsity and parameters."""
    rows = []
    for record in records:
        row: dict[str, Any] = {
            "method": record["method"],
            "sparsity": round(record["sparsity"]["target"], 3),
            "actual": round(record["sparsity"]["actual"], 4),
            "params": record["parameters"]["after"]["total"],
        }
        for task in ordered_tasks(record):
            metrics = record["tasks"][task]
            row[f"{task} ({metrics['metric']})"] = (f"{metrics['score']:.2f}"  # not points
                                                    if metric_kind(metrics["metric"]) != ACCURACY
                                                    else points(metrics["score"], stderr(metrics)))
        average = record["average"]["score"]
        row["average"] = "n/a" if average is None else points(average, average_se(record))
        rows.append(row)
    return pd.DataFrame(rows)


def row_label(record: dict[str, Any]) -> str:
    return record["method"] if record["method"] == "dense" else f"{record['method']} @{record['sparsity']['target']:g}"


def as_run(record: dict[str, Any]) -> dict[str, Any]:
    """The shape diet.analysis.tables.compare takes: tasks {t: (score, se, n)}, outcomes {t: (outcomes, docs_sha256)}."""
    tasks = record["average"].get("tasks") or averaged_tasks({t: record["tasks"][t] for t in ordered_tasks(record)})
    return {
        "tasks": {t: (record["tasks"][t]["score"], stderr(record["tasks"][t]), record["tasks"][t]["n"]) for t in tasks},
        "outcomes": {t: (record["tasks"][t]["outcomes"], record["tasks"][t].get("docs_sha256"))
                     for t in tasks if record["tasks"][t].get("outcomes") is not None},
    }


def within_noise(records: Sequence[dict[str, Any]]) -> list[tuple[str, float, float, bool]]:
    """(row label, diff, se, paired) of every row whose average is within Z se of the first row's (the
    reference: dense where shown), in points. The se is paired (per-document differences,
    diet.analysis.tables.compare) where both records hold outcomes of the same documents, else unpaired,
    sqrt(se_a^2 + se_b^2)."""
    if len(records) < 2:
        return []
    ref_run = as_run(records[0])
    found = []
    for record in records[1:]:
        run = as_run(record)
        if not run["tasks"] or sorted(run["tasks"]) != sorted(ref_run["tasks"]):
            continue  # different tasks: the averages are not comparable
        diff, se, significant, paired = compare(run, ref_run, sorted(run["tasks"]))
        if significant is False and not math.isnan(se):
            found.append((row_label(record), diff, se, paired))
    return found


def significance_notes(records: Sequence[dict[str, Any]], max_lines: int = 3) -> list[str]:
    """A warning line per row within noise of the first row; more than `max_lines` of them: one line."""
    found = within_noise(records)
    if not found:
        return []
    reference = row_label(records[0])
    kinds = " or ".join(sorted({"paired per document" if paired else "unpaired" for *_, paired in found}))
    if len(found) <= max_lines:
        return [f"note: {label} and {reference} differ by {diff:+.1f} ± {se:.1f} points of average "
                f"(< {Z:g} se, {'paired per document' if paired else 'unpaired'}): not a significant difference"
                for label, diff, se, paired in found]
    rows = ", ".join(f"{label} {diff:+.1f} ± {se:.1f}" for label, diff, se, _ in found)
    return [f"note: {len(found)} rows differ from {reference} by less than {Z:g} se of average ({kinds}), "
            f"not significant differences: {rows}"]


def format_table(records: Sequence[dict[str, Any]]) -> str:
    frame = per_task_frame(records)
    n = {task: record["tasks"][task]["n"] for record in records for task in ordered_tasks(record)}
    footer = "docs per task: " + ", ".join(f"{task}={count}" for task, count in n.items())
    # disable_numparse: "60.0" stays "60.0" (tabulate would print a score without an se as 60)
    table = frame.to_markdown(index=False, disable_numparse=True)
    return "\n".join([table, SE_NOTE, *significance_notes(records), footer])
