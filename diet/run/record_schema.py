"""The record's schema (SCHEMA_VERSION 1), declared once: what run_cell writes and the analysis reads.

A record is JSON, so it stays a dict on disk and in memory; these TypedDicts name every section and field
with its type. Fields added after the first records were written are optional (`NotRequired`), so every
committed record still conforms and none needed a migration: the identity and the layout are unchanged.
`problems(record)` lists what a record lacks or has of the wrong type (tests check every committed record).
"""

from __future__ import annotations

import types
import typing
from typing import Any, NotRequired, TypedDict

Number = float | int


class TaskResult(TypedDict):
    metric: str                               # the headline metric: acc | acc_norm | exact_match | word_perplexity ...
    score: Number
    score_stderr: Number | None
    n: int                                    # documents scored
    outcomes: NotRequired[str]                # one 0/1 per document, in doc_id order
    docs_sha256: NotRequired[str]             # digest of lm-eval's document hashes: pairs two records
    filter: NotRequired[str]                  # the lm-eval filter the metrics are read under, where not "none"
    kind: NotRequired[str]                    # the metric's kind (diet.eval.metric_kinds): accuracy | perplexity | other
    higher_is_better: NotRequired[bool]       # as lm-eval reads it for the headline metric
    chance: NotRequired[Number | None]        # chance level of the evaluated split (multiple choice), else None


class Average(TypedDict):
    score: Number | None                      # mean headline score over the accuracy tasks
    tasks: list[str]
    n_tasks: int


class Sparsity(TypedDict):
    target: Number
    actual: Number                            # MLP channel fraction removed; dims without MLP: that dimension's
    dims: str | None
    mlp_channels_before: int
    mlp_channels_after: Number
    models_evaluated: NotRequired[int]        # one, or one per task for an oracle
    by_dim: NotRequired[dict[str, Any]]       # per dimension: before, after, removed_fraction, parameters_removed
    of: NotRequired[str]                      # sparsity_of
    dim_sparsity: NotRequired[Number]
    target_parameters: NotRequired[Number]
    predicted_parameters: NotRequired[Number]
    sparsity: NotRequired[Number]


class Parameters(TypedDict):
    before: dict[str, int]                    # total / embedding / non_embedding
    after: dict[str, int]
    removed: NotRequired[dict[str, int]]
    removed_fraction_total: Number
    removed_fraction_non_embedding: Number


class ModelInfo(TypedDict):
    name: str
    fingerprint: str
    dtype: str
    device: str
    source: str
    model_type: str
    parameters: dict[str, int]               # total / embedding / non_embedding at load
    load_seconds: Number


class EvalInfo(TypedDict):
    harness: str
    num_fewshot: int
    limit: int | None
    batch_size: int
    add_bos_token: bool
    bos_prepended: bool
    data: str                                 # "online" or the offline data folder
    backend: NotRequired[str]
    docs: NotRequired[str | None]             # random | first (None: all documents)
    docs_seed: NotRequired[int | None]
    documents: NotRequired[str]               # all | first<N> | random<N>s<seed>
    scoring_dtype: NotRequired[str]           # log-softmax and loglikelihood sums (float32 whatever the model)
    by_task: NotRequired[bool]                # evaluated one task at a time (eval.by_task)
    chunk_docs: NotRequired[int]              # ... and N documents at a time inside a task (eval.chunk_docs)
    # tasks (or chunks of a task: `<task>.docs<start>-<stop>`) an interrupted by_task run finished -> the code
    reused_tasks: NotRequired[dict[str, str]]
    reused_within_rounding: NotRequired[dict[str, float]]  # of those, evaluated on weights equal up to rounding


class Recovery(TypedDict):
    """One recovery fine-tuning (recover=lora; diet.recover.lora.RecoveryResult), per evaluated model."""

    plan: dict[str, Any]                      # its identity (options, text by content, seed) + source, description
    steps: int
    tokens_seen: int
    seconds: Number
    trainable_parameters: int
    val_loss_before: Number                   # held-out windows, before and after tuning
    val_loss_after: Number
    train_curve: list[list[Number]]           # [step, loss, learning rate]
    val_curve: list[list[Number]]             # [step, validation loss]
    resumed_from_step: int                    # 0 unless a cut-off run was resumed
    task: str | None                          # the oracle's task model; None for the one model


class Record(TypedDict):
    schema: int
    config_hash: str
    method: str
    tasks: dict[str, TaskResult]
    average: Average
    sparsity: Sparsity
    parameters: Parameters
    mask: dict[str, Any] | None
    model: ModelInfo
    eval: EvalInfo
    notes: dict[str, Any]
    seed: int
    timings: dict[str, Number]
    config: dict[str, Any]                    # the resolved run config
    effective_config: dict[str, Any]          # what config_hash covers (diet.config.identity)
    code: dict[str, Any]
    versions: dict[str, Any]
    machine: dict[str, Any]
    started_at: str
    finished_at: str
    calib_tasks: NotRequired[list[str] | None]
    saved_model: NotRequired[dict[str, Any] | None]
    peak_memory_gib: NotRequired[dict[str, Number]]
    recovery: NotRequired[list[Recovery]]     # recover=lora: one per evaluated model
    # records made before identities held the method's inputs (experiments/migrate_identity.py): what they
    # were identified by then
    config_hash_v1: NotRequired[str]
    effective_config_v1: NotRequired[dict[str, Any]]


def _matches(value: Any, expected: Any) -> bool:
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if expected is Any:
        return True
    if expected is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, option) for option in args)
    if typing.is_typeddict(expected):
        return isinstance(value, dict) and not problems(value, expected)
    if origin is dict:
        return isinstance(value, dict) and all(_matches(v, args[1]) for v in value.values())
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, expected)


def problems(record: dict[str, Any], schema: type = Record, where: str = "") -> list[str]:
    """What `record` lacks (required fields) or holds with a wrong type, as 'path: problem' lines."""
    hints = typing.get_type_hints(schema, include_extras=True)
    out = []
    for name, hint in hints.items():
        optional = typing.get_origin(hint) is NotRequired
        expected = typing.get_args(hint)[0] if optional else hint
        path = f"{where}{name}"
        if name not in record:
            if not optional:
                out.append(f"{path}: missing")
            continue
        value = record[name]
        if typing.is_typeddict(expected) and isinstance(value, dict):
            out += problems(value, expected, f"{path}.")
        elif typing.get_origin(expected) is dict and typing.is_typeddict(typing.get_args(expected)[1]) \
                and isinstance(value, dict):
            for key, item in value.items():
                out += problems(item, typing.get_args(expected)[1], f"{path}.{key}.")
        elif not _matches(value, expected):
            out.append(f"{path}: {type(value).__name__} {value!r:.40} is not {expected}")
    return out
