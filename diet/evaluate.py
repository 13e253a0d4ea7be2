"""Zero-shot evaluation of an in-memory model with lm-eval's own tasks, requests and metrics."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from torch import nn

from diet.registry import Registry
from diet.tasks import build_tasks, headline_metric

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSettings:
    limit: int | None = None
    batch_size: int = 8
    add_bos_token: bool = True
    metric: str = "auto"
    seed: int = 0
    max_length: int | None = None
    backend: str = "fast"


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
    """HFLM scoring shared contexts once and LM-head rows only where tokens are scored (diet/fast_eval.py)."""
    from diet.fast_eval import FastHFLM

    return FastHFLM


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
    )


def summarize(results: dict[str, Any], tasks: Sequence[str], metric: str) -> dict[str, dict[str, Any]]:
    """lm-eval's results dict -> {task: {acc, acc_stderr, acc_norm, ..., n, metric, score}}."""
    summary: dict[str, dict[str, Any]] = {}
    for task in tasks:
        raw = results["results"][task]
        entry: dict[str, Any] = {}
        for key, value in raw.items():
            name, _, filter_name = key.partition(",")
            if filter_name == "none" and isinstance(value, (int, float)):
                entry[name] = float(value)
        entry["n"] = int(results["n-samples"][task]["effective"])
        entry["metric"] = headline_metric(task, metric)
        entry["score"] = entry[entry["metric"]]
        entry["score_stderr"] = entry.get(f"{entry['metric']}_stderr")
        summary[task] = entry
    return summary


def evaluate(
    model: nn.Module,
    tokenizer: Any,
    tasks: Sequence[str],
    data_dir: Path | None,
    settings: EvalSettings,
    device: str = "cpu",
) -> dict[str, dict[str, Any]]:
    """Run lm-eval simple_evaluate zero-shot on the live model; returns the per-task summary."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    task_objects = build_tasks(tasks, data_dir, with_train=False)
    results = simple_evaluate(
        model=make_lm(model, tokenizer, settings, device),
        tasks=list(task_objects.values()),
        num_fewshot=0,
        limit=settings.limit,
        log_samples=False,
        task_manager=TaskManager(include_defaults=False),  # tasks are pre-built: skip the 15 s index
        random_seed=settings.seed,
        numpy_random_seed=settings.seed,
        torch_random_seed=settings.seed,
        fewshot_random_seed=settings.seed,
    )
    return summarize(results, tasks, settings.metric)
