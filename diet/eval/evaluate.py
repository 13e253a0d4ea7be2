"""Zero-shot evaluation of an in-memory model with lm-eval's own tasks, requests and metrics."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from diet.eval.documents import DocumentSelection
from diet.eval.fast import FastHFLM
from diet.registry import Registry
from diet.eval.metric_kinds import metric_kind
from diet.eval.tasks import build_tasks, chance_level, headline_metric, task_spec

log = logging.getLogger(__name__)

BOOTSTRAP_ITERS = 100000  # simple_evaluate's default, named: chunked tasks aggregate with the same setting


@dataclass(frozen=True)
class EvalSettings:
    limit: int | None = None
    batch_size: int = 8
    add_bos_token: bool = True
    metric: str = "auto"
    seed: int = 0
    max_length: int | None = None
    backend: str = "fast"
    docs: str = "random"   # with a limit: a seeded random sample of documents (diet.eval.documents) | first
    docs_seed: int = 0     # the documents' seed: fixed across calibration seeds and methods
    # exactly these document indices per task, overriding limit/docs (a re-check of a stored record's
    # documents: experiments/check_rerun.py)
    only_docs: Mapping[str, tuple[int, ...]] | None = None
    # with eval.by_task: documents per kept chunk of a task (diet.eval.chunks); None = a task at once
    chunk_docs: int | None = None

    @property
    def documents(self) -> DocumentSelection:
        return DocumentSelection(self.limit, self.docs, self.docs_seed)


# Evaluation backends: name -> zero-argument function returning an HFLM(-compatible) class. Imported
# lazily (lm-eval is slow to import). Every backend takes HFLM's constructor arguments and must give
# the same per-request results as "stock" (tests/test_fast_eval.py proves it for "fast").
BACKENDS: Registry[Callable[[], type]] = Registry("eval backend")


@BACKENDS.register("stock")
def _stock_backend() -> type:
    """lm-eval's own HFLM, unchanged."""
    from lm_eval.models.huggingface import HFLM

    return HFLM


@BACKENDS.register("fast")
def _fast_backend() -> type:
    """HFLM scoring shared contexts once and LM-head rows only where tokens are scored (diet/eval/fast.py)."""
    return FastHFLM


def scoring_dtype(model_dtype: torch.dtype) -> torch.dtype:
    """The dtype of the log-softmax and of the per-request sums of continuation log-probs (lm-eval's
    `softmax_dtype`, which both backends honour): float32 at least, whatever the model computes in. In
    bfloat16 a loglikelihood of -20 to -100 is only known to +-0.1-0.25 nats and ties go to the first
    choice. A no-op for float32 models (every record before it); float64 test models keep float64."""
    return torch.float64 if model_dtype == torch.float64 else torch.float32


def make_lm(model: nn.Module, tokenizer: Any, settings: EvalSettings, device: str) -> Any:
    """The `settings.backend` lm-eval LM (an HFLM subclass) around the live model (no reload, no copy)."""
    lm_class = BACKENDS.get(settings.backend)()
    return lm_class(
        pretrained=model,
        tokenizer=tokenizer,
        batch_size=settings.batch_size,
        add_bos_token=settings.add_bos_token,
        device=device,
        max_length=settings.max_length,
        softmax_dtype=scoring_dtype(next(model.parameters()).dtype),
    )


def document_outcomes(samples: Sequence[dict[str, Any]], metric: str, n_docs: int | None = None) -> dict[str, Any]:
    """Each document's headline metric as one '0'/'1' character in doc_id order, plus a digest of the
    documents (lm-eval's doc hashes): two runs with the same digest scored the same documents, so
    their difference can be tested per document (paired; diet.analysis.stats.paired_difference).

    When the documents are not 0..n-1 (a random sample of the split), `doc_ids` lists them in the same
    order, so a sample can also be matched against a run on the full split. Where the metric is not 0/1
    per document (a perplexity), only the documents are kept (no outcomes).
    """
    by_id = {sample["doc_id"]: sample for sample in samples}
    ids = sorted(by_id)
    ordered = [by_id[i] for i in ids]
    entry: dict[str, Any] = {
        "docs_sha256": hashlib.sha256("".join(sample["doc_hash"] for sample in ordered).encode()).hexdigest(),
    }
    if all(by_id[i].get(metric) in (0, 1) for i in by_id):
        entry = {"outcomes": "".join("1" if sample[metric] else "0" for sample in ordered), **entry}
    if ids != list(range(len(ids))):
        entry["doc_ids"] = ids
    if n_docs is not None:
        entry["split_docs"] = n_docs
    return entry


def task_chance(task: str, task_object: Any) -> float | None:
    """The chance level recorded beside a task's score: a paper task's hand-kept value; any other multiple-choice
    task's measured on its evaluated split (chance_level); None for any other output type."""
    spec = task_spec(task)
    if spec.paper:
        return spec.chance
    return chance_level(task_object) if spec.output_type == "multiple_choice" else None


def reported_filter(task: str, raw: Mapping[str, Any]) -> str:
    """The filter whose metrics a task is reported by: lm-eval's "none" where the task has no filter list, else its
    first filter (a generation task's answer extraction, e.g. GSM8K's "strict-match")."""
    if any(key.endswith(",none") for key in raw):
        return "none"
    filters = [f["name"] for f in task_spec(task).config.get("filter_list") or [] if isinstance(f, Mapping)]
    return filters[0] if filters else "none"


def summarize(results: dict[str, Any], tasks: Sequence[str], metric: str,
              task_objects: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """lm-eval's results dict -> {task: {acc, acc_stderr, acc_norm, ..., n, metric, score, kind, higher_is_better,
    chance[, outcomes, docs_sha256, doc_ids, split_docs]}} (outcomes when lm-eval logged samples; split_docs and a
    measured chance when the built tasks are given)."""
    summary: dict[str, dict[str, Any]] = {}
    for task in tasks:
        raw = results["results"][task]
        reported = reported_filter(task, raw)
        entry: dict[str, Any] = {} if reported == "none" else {"filter": reported}
        for key, value in raw.items():
            name, _, filter_name = key.partition(",")
            if filter_name == reported and isinstance(value, (int, float)):
                entry[name] = float(value)
        entry["n"] = int(results["n-samples"][task]["effective"])
        entry["metric"] = headline_metric(task, metric)
        if entry["metric"] not in entry:
            raise ValueError(f"task {task!r}: lm-eval reported {sorted(raw)}, not its headline metric "
                             f"{entry['metric']!r} under the filter {reported!r}")
        entry["score"] = entry[entry["metric"]]
        entry["score_stderr"] = entry.get(f"{entry['metric']}_stderr")
        entry["kind"] = metric_kind(entry["metric"])
        higher = task_spec(task).higher_is_better(entry["metric"])
        if higher is not None:
            entry["higher_is_better"] = higher
        built = (task_objects or {}).get(task)
        entry["chance"] = task_chance(task, built) if built is not None or task_spec(task).paper else None
        samples = [sample for sample in (results.get("samples") or {}).get(task) or []
                   if sample.get("filter", "none") == reported]
        if samples:
            entry.update(document_outcomes(samples, entry["metric"],
                                           None if built is None else len(built.eval_docs)))
        summary[task] = entry
    return summary


def run_harness(
    model: nn.Module,
    tokenizer: Any,
    tasks: Sequence[str],
    data_dir: Path | None,
    settings: EvalSettings,
    device: str = "cpu",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run lm-eval simple_evaluate zero-shot on the live model; returns lm-eval's results dict (with the
    logged samples) and the built tasks."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    task_objects = build_tasks(tasks, data_dir, with_train=False)
    split_sizes = {task: len(task_objects[task].eval_docs) for task in tasks}
    documents = settings.documents
    if settings.only_docs is not None:
        chosen = {task: sorted(settings.only_docs[task]) for task in tasks}
    else:
        chosen = {task: documents.indices(task, split_sizes[task]) for task in tasks}
    listed = settings.only_docs is not None or documents.is_random
    # lm-eval takes either `limit` (the first N) or `samples` (listed indices), never both
    samples = {task: ids for task, ids in chosen.items() if ids is not None} if listed else None
    for task, ids in chosen.items():
        if ids is not None:
            log.info("%s: %d of %d documents (%s)", task, len(ids), split_sizes[task],
                     "listed" if settings.only_docs is not None else documents.label())
    results = simple_evaluate(
        model=make_lm(model, tokenizer, settings, device),
        tasks=list(task_objects.values()),
        num_fewshot=0,
        limit=None if listed else settings.limit,
        samples=samples or None,
        log_samples=True,  # per-document outcomes for paired differences (kept compact in the record)
        task_manager=TaskManager(include_defaults=False),  # tasks are pre-built: skip the 15 s index
        random_seed=settings.seed,
        numpy_random_seed=settings.seed,
        torch_random_seed=settings.seed,
        fewshot_random_seed=settings.seed,
        bootstrap_iters=BOOTSTRAP_ITERS,
    )
    return results, task_objects


def evaluate(
    model: nn.Module,
    tokenizer: Any,
    tasks: Sequence[str],
    data_dir: Path | None,
    settings: EvalSettings,
    device: str = "cpu",
) -> dict[str, dict[str, Any]]:
    """Run lm-eval simple_evaluate zero-shot on the live model; returns the per-task summary."""
    results, task_objects = run_harness(model, tokenizer, tasks, data_dir, settings, device)
    return summarize(results, tasks, settings.metric, task_objects)
