"""One cell, end to end: validate -> load -> (profile -> masks -> vote -> prune) -> evaluate -> record."""

from __future__ import annotations

import contextlib
import copy
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from diet.config.sections import EvalOptions, eval_options
from diet.devices import dtype_name
from diet.dims.accounting import actual_sparsity, dim_units, dims_accounting, sparsity_facts
from diet.errors import DietConfigError
from diet.eval.chunks import evaluate_in_chunks
from diet.eval import evaluate as evaluation  # called through the module: tests count its calls
from diet.eval.evaluate import EvalSettings, scoring_dtype
from diet.eval.tasks import averaged_tasks
from diet.export.room import check_room, model_bytes
from diet.export.save import check_save_path, export_model, model_card
from diet.methods import MaskSelection, Method, PruningContext
from diet.methods.inputs import with_dim_sparsity
from diet import models  # load_model through the package: tests refuse loading there
from diet.models.adapters import adapter_for, parameter_counts
from diet.models.loaders import LoadedModel, weights_sha256
from diet.io import atomic_write_text, stable_hash
from diet.recover.lora import recover
from diet.dims.apply import apply_selection
from diet.run.cell import Cell, resolve
from diet.run.claims import claim_cell
from diet.run.memory import peak_bytes, reset_peak
from diet.run.preflight import preflight
from diet.run.record_schema import Record, problems
from diet.run.threads import apply_threads
from diet.run.task_results import clear, partial_dir, TaskResults, tensor_digests
from diet.select.masks import selection_fingerprint
from diet.run.tracking import log_saved_model
from diet.run.records import (SCHEMA_VERSION, check_submitted_code, code_tag, code_version, library_versions,
                              machine, write_record)

log = logging.getLogger(__name__)


def free_device_memory() -> None:
    """Collect what was just dropped and hand the GPU's cached blocks back (a no-op on the CPU)."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class StageTimer:
    """`with timer("evaluate"):` records wall seconds and peak memory (GiB: CUDA max allocated on a GPU,
    peak resident set on CPU) per stage, and prints progress. A stage inside another does not reset the
    outer one's peak."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self.peak_memory_gib: dict[str, float] = {}
        self._depth = 0

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        log.info("[stage] %s ...", stage)
        if self._depth == 0:
            reset_peak(self.device)
        self._depth += 1
        start = time.perf_counter()
        try:
            yield
        finally:
            self._depth -= 1
            elapsed = time.perf_counter() - start
            peak = round(peak_bytes(self.device) / 2**30, 3)
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + elapsed, 3)
            self.peak_memory_gib[stage] = max(peak, self.peak_memory_gib.get(stage, 0.0))
            log.info("[stage] %s done in %.1f s (peak memory %.2f GiB)", stage, elapsed, peak)


def bos_prepended(tokenizer: Any, add_bos_token: bool) -> bool:
    """Whether evaluation inputs really start with BOS (recorded, since lm-eval defaults moved)."""
    ids = tokenizer("a", add_special_tokens=add_bos_token).input_ids
    return tokenizer.bos_token_id is not None and ids[:1] == [tokenizer.bos_token_id]


def average_score(metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The mean headline score over the tasks reported by an accuracy (diet.eval.metric_kinds: a perplexity or an
    F1 is never averaged with accuracies; None when no accuracy was evaluated)."""
    tasks = averaged_tasks(metrics)
    scores = [metrics[task]["score"] for task in tasks]
    return {"score": float(np.mean(scores)) if scores else None, "tasks": tasks, "n_tasks": len(scores)}


@dataclass(frozen=True)
class PrunedShape:
    """One pruned model, measured once: its units per dimension, its parameters, and what each dimension's
    removal took (apply_selection); the record and the model card are both computed from it."""

    units: dict[str, int]
    parameters: dict[str, int]
    removed: dict[str, dict[str, int]]

    @classmethod
    def of(cls, model: torch.nn.Module, removed: dict[str, dict[str, int]]) -> "PrunedShape":
        return cls(dim_units(model), parameter_counts(model), removed)


def card_facts(cell: Cell, chosen: "SelectedCell", model: torch.nn.Module, shape: PrunedShape) -> dict[str, Any]:
    """What a saved model's card (diet.export.save.model_card) says about the run that made it; its actual
    sparsity and parameter fractions are the record's (sparsity_section, parameters_section, one PrunedShape)."""
    import sys

    cfg = cell.cfg
    calib, method, loaded = cfg["calib"], chosen.method, chosen.loaded
    calibration = "none" if not method.prunes or not method.calibrates() else (
        f"{calib['n']} train samples per task of {', '.join(cell.calib_tasks)}, seed {cfg['seed']}"
        if not method.calib_source or calib.get("source", "tasks") == "tasks"
        else f"generic text {calib['source']}, seed {cfg['seed']} (windows as recorded)")
    sparsity = sparsity_section(cell, chosen, [shape.units], [shape.removed])
    parameters = parameters_section(chosen.params_before, [shape.parameters])
    return {"model": loaded.name, "model_type": model.config.model_type, "source": loaded.info.get("source"),
            "method": method.name, "sparsity": sparsity["target"], "dims": cfg["dims"], "actual": sparsity["actual"],
            "removed_non_embedding": parameters["removed_fraction_non_embedding"],
            "removed_total": parameters["removed_fraction_total"],
            "calibration": calibration, "params_before": parameters["before"]["total"],
            "recovery": None if cell.checked.recovery is None else cell.checked.recovery.describe(),
            "params_after": parameters["after"]["total"],
            "bos_prepended": bos_prepended(loaded.tokenizer, cfg["model"]["add_bos_token"]),
            "command": f"python -m experiments.{Path(sys.argv[0]).stem} " + " ".join(sys.argv[1:]), "code": code_tag(),
            "config_hash": cell.config_hash}


@dataclass
class SelectedCell:
    """A loaded model and what its method selected, before anything is removed."""

    timer: StageTimer
    loaded: LoadedModel
    method: Method
    ctx: PruningContext
    inputs: Any                  # what the method's select received (its Method.Inputs)
    selection: MaskSelection
    widths_before: list[int]
    units_before: dict[str, int]
    params_before: dict[str, int]
    sparsity_facts: dict[str, Any]


def select_cell(cell: Cell, save_dir: Path | None = None) -> SelectedCell:
    """Load the model and let the method select what to remove (profiling on the way). `save_dir`: where the
    pruned model will be saved, checked for room as soon as the model's size is known."""
    cfg = cell.cfg
    seed_everything(cfg["seed"])
    timer = StageTimer(str(cell.runtime.device or "cpu"))
    with timer("load_model"):
        loaded = models.load_model(cfg["model"])
    model = loaded.model
    if save_dir is not None:  # the dense weights bound the export: fail before profiling, not after
        check_room(save_dir, model_bytes(model))
    widths_before, units_before, params_before = adapter_for(model).mlp_widths(), dim_units(model), parameter_counts(model)
    method = cell.method()
    # sparsity_of=params: the method sees the solved per-dimension sparsity (diet/dims/accounting.py)
    facts = sparsity_facts(model, cfg) if method.prunes else {}
    inputs = with_dim_sparsity(cell.inputs, facts["dim_sparsity"]) if method.prunes else cell.inputs
    ctx = PruningContext(loaded=loaded, data_dir=cell.data_dir, timer=timer, batch_size=cell.runtime.calib_batch_size)
    selection = method.select(ctx, inputs)
    return SelectedCell(timer, loaded, method, ctx, inputs, selection, widths_before, units_before, params_before,
                        facts)


def save_model(cell: Cell, chosen: SelectedCell, model: torch.nn.Module, shape: PrunedShape,
               save_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Export the pruned `model` (`shape`: it measured after pruning) to `save_dir` (diet.export.save);
    returns (card facts, what the record stores)."""
    card = card_facts(cell, chosen, model, shape)
    saved = export_model(model, chosen.loaded.tokenizer, save_dir, model_card(card),
                         {"method": chosen.method.name, "config_hash": cell.config_hash},
                         pad=cell.options.export.pad, bos_prepended=card["bos_prepended"])
    return card, saved


def recover_job(cell: Cell, model: torch.nn.Module, loaded: LoadedModel, checkpoints: Path | None,
                task: str | None = None) -> dict[str, Any] | None:
    """Recovery fine-tuning of one pruned model in place (recover=lora; None for recover=none). `checkpoints`: the
    folder where it keeps its progress and resumes what a cut-off run of the same pruned weights and plan left
    (None: none kept, a re-check); `task`: the oracle's task model it tunes."""
    plan = cell.checked.recovery
    if plan is None:
        return None
    checkpoint = None if checkpoints is None else checkpoints / "recover" / f"{task or 'model'}.pt"
    fingerprint = stable_hash({"weights": weights_sha256(model), "plan": plan.identity()})
    return recover(model, loaded.tokenizer, plan, loaded.device, checkpoint, fingerprint, task).record()


def prune_cell(cfg: dict[str, Any]) -> dict[str, Any]:
    """Prune and save, no evaluation (experiments.prune): validate, select, remove, export to save_model."""
    cell = resolve(cfg)
    save_dir = cell.save_dir
    if save_dir is None:
        raise DietConfigError("pruning without evaluation needs save_model=DIR (or true): there is nothing else to keep")
    if cell.method.per_task_profiles or not cell.method.prunes:
        raise DietConfigError(f"method {cell.method.name!r} makes no single pruned model to save")
    preflight(cfg)
    apply_threads(cell.runtime.threads)
    check_save_path(save_dir)
    chosen = select_cell(cell, save_dir)
    model = chosen.loaded.model
    with chosen.timer("prune"):
        shape = PrunedShape.of(model, apply_selection(model, chosen.selection))
    if cell.checked.recovery is not None:
        with chosen.timer("recover"):
            recover_job(cell, model, chosen.loaded, partial_dir(cell.results_dir, cell.stem))
    with chosen.timer("save_model"):
        card, saved = save_model(cell, chosen, model, shape, save_dir)
    clear(partial_dir(cell.results_dir, cell.stem) / "recover")  # its checkpoints: the saved model holds it now
    log_saved_model(saved, cfg["wandb"], save_dir.name, cell.options.export.wandb_artifact)
    return {**saved, "config_hash": cell.config_hash, "parameters_after": card["params_after"],
            "parameters_before": card["params_before"], "timings": chosen.timer.seconds,
            "peak_memory_gib": chosen.timer.peak_memory_gib}


def eval_settings(cfg: dict[str, Any], options: EvalOptions | None = None) -> Any:
    """The evaluation settings (diet.eval.evaluate.EvalSettings) a cell's config asks for; `options`: its
    eval section when the caller has bound it already."""
    options = options or eval_options(cfg)
    return EvalSettings(limit=options.limit, batch_size=options.batch_size, add_bos_token=cfg["model"]["add_bos_token"],
                        metric=options.metric, seed=cfg["seed"], max_length=options.max_length,
                        backend=options.backend, docs=options.docs, docs_seed=options.docs_seed,
                        chunk_docs=options.chunk_docs)


@dataclass
class EvaluatedCell:
    """What pruning and evaluating a selected cell produced: per evaluated model (one, or one per task for
    an oracle) its units, parameters and what was removed, the scores of every task, and the saved model if any."""

    metrics: dict[str, dict[str, Any]]
    units: list[dict[str, int]]
    parameters: list[dict[str, int]]
    removed: list[dict[str, dict[str, int]]]
    saved: dict[str, Any] | None
    recovery: list[dict[str, Any]] = field(default_factory=list)  # per evaluated model (recover=lora)
    reused: dict[str, str] = field(default_factory=dict)  # task -> code that evaluated it (eval.by_task resume)
    # reused tasks whose weights matched up to float rounding -> largest relative norm difference
    within_rounding: dict[str, float] = field(default_factory=dict)


def evaluate_job(model: torch.nn.Module, loaded: Any, tasks: list[str], data_dir: Any, settings: Any,
                 cfg_hash: str, kept_dir: Path | None, done: EvaluatedCell,
                 selection: Any = None) -> dict[str, dict[str, Any]]:
    """Evaluate `tasks` on one pruned model: all at once, or (kept_dir set: eval.by_task) one task at a time,
    keeping each finished task and reusing the ones an interrupted run kept (diet/run/task_results.py);
    `selection`: the fingerprint of the selection that pruned the model."""
    if kept_dir is None:
        return evaluation.evaluate(model, loaded.tokenizer, tasks, data_dir, settings, loaded.device)
    kept = TaskResults(kept_dir, cfg_hash, weights_sha256(model), code_tag(), selection, tensor_digests(model))
    metrics = {}
    for task in tasks:
        summary = kept.load(task)
        if summary is None:  # eval.chunk_docs: the task's documents in kept chunks (diet/eval/chunks.py)
            summary = evaluate_in_chunks(model, loaded.tokenizer, task, data_dir, settings, kept, loaded.device)
            kept.save(task, summary)
        metrics[task] = summary
    done.reused.update(kept.reused)
    done.within_rounding.update(kept.within_rounding)
    return metrics


def prune_and_evaluate(cell: Cell, chosen: SelectedCell, save_dir: Path | None, kept_dir: Path | None = None,
                       settings: Any = None, checkpoints: Path | None = None) -> EvaluatedCell:
    """Apply the selection (and the recovery fine-tuning, if any) and evaluate; an oracle selection evaluates each
    task on its own pruned copy. `save_dir`: save the pruned model there first (None: not saved); `kept_dir`:
    evaluate task by task, keeping finished tasks there (eval.by_task); `settings`: evaluation settings other
    than the config's (a re-check on listed documents); `checkpoints`: where recovery keeps its progress."""
    selection, timer, loaded = chosen.selection, chosen.timer, chosen.loaded
    tasks, cfg_hash = cell.tasks, cell.config_hash
    settings = settings or eval_settings(cell.cfg, cell.options.eval)
    if selection.per_task is None:
        jobs = [(tasks, selection)]
    else:
        jobs = [([task], selection.per_task[task]) for task in tasks]
    done = EvaluatedCell({}, [], [], [], None)
    card = None
    for job_tasks, job_selection in jobs:
        job_model = loaded.model if selection.per_task is None else copy.deepcopy(loaded.model)
        with timer("prune"):
            shape = PrunedShape.of(job_model, apply_selection(job_model, job_selection))
        done.units.append(shape.units)
        done.parameters.append(shape.parameters)
        done.removed.append(shape.removed)
        if cell.checked.recovery is not None:  # after pruning, before saving and evaluating; shapes unchanged
            with timer("recover"):
                done.recovery.append(recover_job(cell, job_model, loaded, checkpoints,
                                                 None if selection.per_task is None else job_tasks[0]))
        if save_dir is not None:  # after pruning, before evaluation (validation refuses per-task methods)
            with timer("save_model"):
                card, done.saved = save_model(cell, chosen, job_model, shape, save_dir)
            log.info("saved the pruned model (%s): %s", done.saved["format"], save_dir)
        with timer("evaluate"):
            done.metrics.update(evaluate_job(job_model, loaded, job_tasks, cell.data_dir, settings, cfg_hash, kept_dir,
                                             done, selection_fingerprint(job_selection.stats)))
        if selection.per_task is not None:  # an oracle's task model: freed before the next task's copy
            del job_model
            free_device_memory()
    done.metrics = {task: done.metrics[task] for task in tasks}
    if card is not None:  # the card now has the run's scores
        atomic_write_text(save_dir / "README.md", model_card(card, done.metrics))
    return done


def sparsity_section(cell: Cell, chosen: SelectedCell, units_after: list[dict[str, int]],
                     removed: list[dict[str, dict[str, int]]]) -> dict[str, Any]:
    """record["sparsity"]: the target, what was removed (`actual`: diet.dims.accounting.actual_sparsity),
    per dimension (`by_dim`), and how sparsity_of was solved. `units_after` / `removed`: per evaluated model
    (one, or one per task for an oracle: the mean over the task models)."""
    cfg, prunes = cell.cfg, chosen.method.prunes
    dims = cfg.get("dims", "mlp")
    by_dim = dims_accounting(dims, chosen.units_before, units_after, removed) if prunes else None
    mlp_channels_after = float(np.mean([units["mlp"] for units in units_after]))
    return {
        "target": float(cfg["sparsity"]) if prunes else 0.0,
        "actual": actual_sparsity(dims, by_dim),
        "dims": cfg["dims"] if prunes else None,
        "mlp_channels_before": sum(chosen.widths_before),
        "mlp_channels_after": mlp_channels_after,
        "models_evaluated": len(units_after),
        **({"by_dim": by_dim, **chosen.sparsity_facts} if prunes else {}),
    }


def parameters_section(before: dict[str, int], per_model: list[dict[str, int]]) -> dict[str, Any]:
    """record["parameters"]: before, after (mean over the evaluated models) and what was removed."""
    after = {key: int(round(np.mean([p[key] for p in per_model]))) for key in per_model[0]}
    return {
        "before": before,
        "after": after,
        "removed": {key: before[key] - after[key] for key in ("total", "non_embedding")},
        "removed_fraction_total": 1.0 - after["total"] / before["total"],
        "removed_fraction_non_embedding": 1.0 - after["non_embedding"] / before["non_embedding"],
    }


def eval_section(cell: Cell, loaded: LoadedModel, reused: dict[str, str],
                 within_rounding: dict[str, float] | None = None) -> dict[str, Any]:
    """record["eval"]: the harness, the documents scored and how (`reused_tasks`: tasks an interrupted
    eval.by_task run had finished, with the code that evaluated them; `reused_within_rounding`: those of them
    evaluated on weights equal up to float rounding, with the largest relative norm difference)."""
    options, data_dir = cell.options.eval, cell.data_dir
    settings, documents = eval_settings(cell.cfg, options), options.documents()
    return {
        "harness": "lm-eval",
        "num_fewshot": 0,
        "limit": settings.limit,
        "docs": documents.docs if settings.limit is not None else None,
        "docs_seed": documents.seed if documents.is_random else None,
        "documents": documents.label(),
        "batch_size": settings.batch_size,
        "backend": settings.backend,
        "scoring_dtype": dtype_name(scoring_dtype(next(loaded.model.parameters()).dtype)),
        "add_bos_token": settings.add_bos_token,
        "bos_prepended": bos_prepended(loaded.tokenizer, settings.add_bos_token),
        "data": "online" if data_dir is None else str(data_dir),
        "by_task": options.by_task,
        **({"chunk_docs": options.chunk_docs} if options.chunk_docs is not None else {}),
        **({"reused_tasks": reused} if reused else {}),
        **({"reused_within_rounding": within_rounding} if within_rounding else {}),
    }


def run_cell(cfg: dict[str, Any], parallel_jobs: int = 1) -> tuple[dict[str, Any] | None, Path]:
    """Run one configured cell; returns (record, path), or (None, path) when it was already done.

    `parallel_jobs`: how many cells the launcher runs at once on this machine (sets the default threads)."""
    cell = resolve(cfg)  # fails in seconds, before any model is loaded
    preflight(cfg)  # writable output folders, a loadable model: also before any model is loaded
    check_submitted_code()  # a cluster job whose checkout moved after submission
    threads = apply_threads(cell.runtime.threads, parallel_jobs)
    existing = cell.finished_record()
    if existing is not None:
        log.info("cell already done, skipping (force=true reruns it): %s", existing)
        return None, existing
    check_save_path(cell.save_dir)
    with claim_cell(cell.results_dir, cell.stem):  # another job on this cell: CellInProgress, nothing written
        existing = cell.finished_record()  # finished by another job between the check above and the claim
        if existing is not None:
            log.info("cell finished by another job meanwhile, skipping: %s", existing)
            return None, existing
        return _run_claimed(cell, threads)


def _run_claimed(cell: Cell, threads: dict[str, int]) -> tuple[dict[str, Any], Path]:
    """run_cell's work once the cell is claimed: select, prune, evaluate, write the record."""
    cfg = cell.cfg
    partial = partial_dir(cell.results_dir, cell.stem)  # kept tasks (eval.by_task), recovery checkpoints
    kept_dir = partial if cell.runtime.by_task else None
    if cell.force:
        clear(partial)  # a forced rerun recovers and evaluates every task again

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    chosen = select_cell(cell, cell.save_dir)
    done = prune_and_evaluate(cell, chosen, cell.save_dir, kept_dir, checkpoints=partial)
    loaded, method, ctx = chosen.loaded, chosen.method, chosen.ctx
    record: Record = {
        "schema": SCHEMA_VERSION,
        "config_hash": cell.config_hash,
        "method": method.name,
        "tasks": done.metrics,
        "average": average_score(done.metrics),
        "calib_tasks": cell.calib_tasks if method.calibrates() else None,  # the tasks profiled
        "sparsity": sparsity_section(cell, chosen, done.units, done.removed),
        "parameters": parameters_section(chosen.params_before, done.parameters),
        "mask": chosen.selection.stats or None,
        **({"recovery": done.recovery} if done.recovery else {}),
        "model": {
            "name": loaded.name,
            "fingerprint": loaded.fingerprint,
            "dtype": loaded.dtype,
            "device": loaded.device,
            **loaded.info,
        },
        "eval": eval_section(cell, loaded, done.reused, done.within_rounding),
        "notes": ctx.notes,
        "saved_model": done.saved,
        "seed": cfg["seed"],
        "timings": chosen.timer.seconds,
        "peak_memory_gib": chosen.timer.peak_memory_gib,
        "config": cfg,
        "effective_config": cell.effective,
        "code": code_version(),
        "versions": library_versions(),
        "machine": {**machine(), **threads},
        "started_at": started,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    wrong = problems(record)
    if wrong:  # the writer and the schema the analysis reads must not drift apart
        raise RuntimeError(f"the record does not match diet.run.record_schema: {wrong}")
    path = write_record(record, cell.results_dir)
    log.info("record written: %s", path)
    clear(partial)  # the record holds every task (and the recovery) now
    return record, path
