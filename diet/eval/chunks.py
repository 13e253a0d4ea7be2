"""One task evaluated in chunks of documents, each chunk kept as soon as it is scored (`eval.chunk_docs`).

`eval.by_task` keeps whole tasks, but the full HellaSwag split alone is 40,168 requests, hours on these
CPUs: a session that ends inside it loses all of it. With `eval.chunk_docs=N` a task's documents (the
random sample, or the whole split) are scored N at a time; each chunk's per-document metric values are
kept, and once every chunk is there the task's summary is aggregated from all of them with lm-eval's own
aggregation and standard-error functions (the ones simple_evaluate uses), then passed through the same
`summarize` as a task scored at once. Every document is scored by the same request code either way, so
outcomes agree per document (tests/test_chunks.py); only the summation order of the aggregates can differ,
in the last bits.

Chunking applies to tasks whose every metric is mean-aggregated (accuracy-type tasks); a task aggregated
otherwise (a perplexity: weighted means over words/bytes) is scored at once.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Protocol, Sequence

from torch import nn

from diet.eval import evaluate as evaluation  # the module: its functions are looked up at call time
from diet.eval.evaluate import BOOTSTRAP_ITERS, EvalSettings, summarize
from diet.eval.tasks import build_tasks

log = logging.getLogger(__name__)


class KeptChunks(Protocol):
    """Where finished chunks are kept (diet.run.task_results.TaskResults)."""

    def load(self, key: str) -> dict[str, Any] | None: ...

    def save(self, key: str, summary: dict[str, Any]) -> None: ...


def chunk_key(task: str, start: int, stop: int) -> str:
    """The kept file's name of documents [start, stop) of the task's chosen documents."""
    return f"{task}.docs{start}-{stop}"


def document_rows(samples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """lm-eval's logged samples -> per document: doc_id, doc_hash and each metric's value (what aggregation
    and `summarize` read), in doc_id order."""
    rows = [{"doc_id": s["doc_id"], "doc_hash": s["doc_hash"], **{m: s[m] for m in s["metrics"]}} for s in samples]
    return sorted(rows, key=lambda row: row["doc_id"])


def mean_aggregated(task_object: Any) -> bool:
    from lm_eval.api.metrics import mean

    aggregations = task_object.aggregation()
    return bool(aggregations) and all(fn is mean for fn in aggregations.values())


def aggregate_rows(task_object: Any, task: str, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """An lm-eval results dict for one task from per-document rows: each metric and its standard error
    computed by the functions lm-eval's evaluator uses (task.aggregation(), stderr_for_metric)."""
    from lm_eval.api.metrics import stderr_for_metric

    metrics: dict[str, Any] = {}
    for name, aggregate in task_object.aggregation().items():
        values = [row[name] for row in rows if name in row]
        if not values:
            continue
        metrics[f"{name},none"] = aggregate(values)
        stderr = stderr_for_metric(metric=aggregate, bootstrap_iters=BOOTSTRAP_ITERS)
        metrics[f"{name}_stderr,none"] = stderr(values) if stderr and len(values) > 1 else "N/A"
    samples = [{**row, "metrics": [name for name in task_object.aggregation() if name in row]} for row in rows]
    return {"results": {task: metrics}, "n-samples": {task: {"effective": len(rows)}}, "samples": {task: samples}}


def chosen_documents(task: str, n_docs: int, settings: EvalSettings) -> list[int]:
    """The document indices `settings` scores of a task with `n_docs` documents (all of them when unlimited)."""
    if settings.only_docs is not None:
        return sorted(settings.only_docs[task])
    ids = settings.documents.indices(task, n_docs)
    if ids is not None:
        return ids
    return list(range(n_docs if settings.limit is None else min(settings.limit, n_docs)))


def evaluate_in_chunks(model: nn.Module, tokenizer: Any, task: str, data_dir: Path | None, settings: EvalSettings,
                       kept: KeptChunks, device: str = "cpu") -> dict[str, Any]:
    """The summary of one task (as `evaluate` gives it), scored settings.chunk_docs documents at a time,
    reusing chunks kept by an interrupted run; a task not mean-aggregated, or no larger than one chunk, is
    scored at once."""
    size = settings.chunk_docs
    if size is None:
        return evaluation.evaluate(model, tokenizer, [task], data_dir, settings, device)[task]
    task_object = build_tasks([task], data_dir, with_train=False)[task]
    n_docs = len(task_object.eval_docs)
    ids = chosen_documents(task, n_docs, settings)
    if len(ids) <= size or not mean_aggregated(task_object):
        return evaluation.evaluate(model, tokenizer, [task], data_dir, settings, device)[task]
    rows: list[dict[str, Any]] = []
    starts = range(0, len(ids), size)
    for number, start in enumerate(starts, 1):
        part = ids[start:start + size]
        key = chunk_key(task, start, start + len(part))
        chunk = kept.load(key)
        if chunk is None or chunk.get("doc_ids") != part:
            log.info("%s: chunk %d of %d (documents %d-%d of %d)", task, number, len(starts), start,
                     start + len(part), len(ids))
            only = dataclasses.replace(settings, only_docs={task: tuple(part)}, chunk_docs=None)
            results, _ = evaluation.run_harness(model, tokenizer, [task], data_dir, only, device)
            chunk = {"doc_ids": part, "rows": document_rows(results["samples"][task])}
            kept.save(key, chunk)
        rows.extend(chunk["rows"])
    return summarize(aggregate_rows(task_object, task, rows), [task], settings.metric, {task: task_object})[task]
