"""Human-readable tables of records (terminal and markdown)."""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from diet.blocks import task_rank


def ordered_tasks(record: dict[str, Any]) -> list[str]:
    """Paper order, then others alphabetically (records store their tasks sorted by name)."""
    return sorted(record["tasks"], key=task_rank)


def per_task_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows: one per record (method @ sparsity); columns: each task's headline score, average, sparsity."""
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
            row[f"{task} ({metrics['metric']})"] = round(100 * metrics["score"], 2)
        row["average"] = round(100 * record["average"]["score"], 2)
        rows.append(row)
    return pd.DataFrame(rows)


def format_table(records: Sequence[dict[str, Any]]) -> str:
    frame = per_task_frame(records)
    n = {task: record["tasks"][task]["n"] for record in records for task in ordered_tasks(record)}
    footer = "docs per task: " + ", ".join(f"{task}={count}" for task, count in n.items())
    return frame.to_markdown(index=False) + "\n" + footer
