"""Calibration samples: seeded draws from each task's TRAIN split, rendered by lm-eval's own task objects.

The text is exactly what evaluation scores: `fewshot_context(doc, 0)` gives the context and the gold
request's continuation is appended when `with_answer` is set (WinoGrande's partial scoring and
HellaSwag's preprocessing come for free).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

from diet.errors import DietConfigError


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
        requests = task.construct_requests(doc=doc, ctx=context, metadata=(task_name, index, 1))
        gold_context, gold_continuation = requests[gold_index(task, doc)].args[:2]
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
