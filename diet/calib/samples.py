"""Calibration samples: seeded draws from each task's TRAIN split, rendered by lm-eval's own task objects.

The text is exactly what evaluation scores: `fewshot_context(doc, 0)` gives the context and the gold
request's continuation is appended when `with_answer` is set (WinoGrande's partial scoring and
HellaSwag's preprocessing come for free).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from diet.errors import DietConfigError
from diet.registry import Registry


@dataclass(frozen=True)
class CalibrationSample:
    task: str
    doc_index: int
    context: str
    continuation: str  # gold continuation ("" when the answer is not appended)


def gold_index(task: Any, doc: dict) -> int:
    """The gold choice index exactly as lm-eval's multiple-choice process_results finds it."""
    gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
    if isinstance(gold, list):
        gold = gold[0]
    if isinstance(gold, str):
        gold = task.doc_to_choice(doc).index(gold)
    return int(gold)


# output type -> (task, doc, context, metadata) -> the gold (context, continuation) as lm-eval scores or generates it
GOLD_TEXT: Registry[Callable[[Any, dict, str, tuple], tuple[str, str]]] = Registry("calibrated output type")


@GOLD_TEXT.register("multiple_choice")
def _multiple_choice_gold(task: Any, doc: dict, context: str, metadata: tuple) -> tuple[str, str]:
    """The gold choice's loglikelihood request."""
    requests = task.construct_requests(doc=doc, ctx=context, metadata=metadata)
    return tuple(requests[gold_index(task, doc)].args[:2])  # type: ignore[return-value]


@GOLD_TEXT.register("loglikelihood")
def _loglikelihood_gold(task: Any, doc: dict, context: str, metadata: tuple) -> tuple[str, str]:
    """The one request: the context and its target."""
    request = task.construct_requests(doc=doc, ctx=context, metadata=metadata)
    request = request[0] if isinstance(request, list) else request
    return tuple(request.args[:2])  # type: ignore[return-value]


@GOLD_TEXT.register("generate_until")
def _generation_gold(task: Any, doc: dict, context: str, metadata: tuple) -> tuple[str, str]:
    """The prompt and the reference answer (its first, where a document has several), as a generation task's
    target follows its prompt (target_delimiter): the text a correct answer makes the model run over."""
    target = task.doc_to_target(doc)
    if isinstance(target, list):
        target = target[0]
    if isinstance(target, int) and task.config.doc_to_choice is not None:
        target = task.doc_to_choice(doc)[target]
    return context, f"{task.config.target_delimiter}{target}"


def draw_samples(task_name: str, task: Any, n: int, seed: int, with_answer: bool) -> list[CalibrationSample]:
    """`n` seeded samples from the task's training split (never from the split that is evaluated)."""
    if not task.has_training_docs():
        raise DietConfigError(
            f"task {task_name!r} has no training split for calibration "
            f"(offline: add <data.dir>/train/{task_name}_train.jsonl)"
        )
    docs = list(task.training_docs())
    if len(docs) < n:
        raise DietConfigError(
            f"calib.n={n} but the training split of {task_name!r} has only {len(docs)} documents: "
            f"use calib.n <= {len(docs)}"
        )
    indices = sorted(random.Random(seed).sample(range(len(docs)), n))
    samples = []
    for index in indices:
        doc = docs[index]
        context = task.fewshot_context(doc, num_fewshot=0)
        gold_context, gold_continuation = GOLD_TEXT.get(task.OUTPUT_TYPE)(task, doc, context, (task_name, index, 1))
        samples.append(
            CalibrationSample(task_name, index, gold_context, gold_continuation if with_answer else "")
        )
    return samples


def encode_samples(lm: Any, samples: Sequence[CalibrationSample], max_length: int) -> list[list[int]]:
    """Token ids exactly as lm-eval's HFLM encodes (context, continuation) pairs, left-truncated."""
    encoded = []
    for sample in samples:
        if sample.continuation:
            context_ids, continuation_ids = lm._encode_pair(sample.context, sample.continuation)
        else:
            context_ids, continuation_ids = lm.tok_encode(sample.context), []
        encoded.append((list(context_ids) + list(continuation_ids))[-max_length:])
    return encoded
