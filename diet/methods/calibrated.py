"""Shared by every calibration-based method: per-task activation profiles and generic-text profiles, cached
on disk, computed from a method's typed calibration input (diet.methods.inputs: TaskSamples | GenericText).

Task-agnostic baselines (wanda_sp, flap, activation_pooled, shortgpt) calibrate on `calib.source`:
- `tasks` (default): the per-task samples pooled, so they see exactly the tokens DIET sees;
- `c4` (the offline data folder's C4 train excerpt) or the path of a text file: generic text, the
  baselines' published protocol, `calib.windows` windows of `calib.window_length` tokens sampled as the
  reference code samples them (diet/calib/generic_text.py, diet/calib/sources.py); null = the method's
  reference count and length (`Method.reference_calib`).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from diet.calib.generic_text import layout_of, sample_windows
from diet.calib.profile_cache import ProfileCache
from diet.calib.profiler import ActivationProfile, profile_activations
from diet.calib.samples import draw_samples, encode_samples
from diet.calib.sources import TASKS_SOURCE
from diet.eval.evaluate import EvalSettings, make_lm
from diet.eval.tasks import PAPER_TASKS, build_tasks, data_files, definition_digest
from diet.methods.base import PruningContext
from diet.methods.inputs import Calibration, GenericText, TaskSamples
from diet.paths import cache_dir

log = logging.getLogger(__name__)


def _bos_key(calibration: Calibration) -> dict[str, bool]:
    # in the cache key only when set, so that every existing cached profile keeps its key
    return {"exclude_first": True} if calibration.exclude_bos else {}


def profile_cache_key(ctx: PruningContext, samples: TaskSamples, task: str) -> dict:
    return {
        "model": ctx.loaded.fingerprint,
        "dtype": ctx.loaded.dtype,
        "task": task,
        "n": samples.n,
        "seed": samples.seed,
        "with_answer": samples.with_answer,
        "max_length": samples.max_length,
        "add_bos_token": samples.add_bos_token,
        "source": "online" if ctx.data_dir is None else str(data_files(task, ctx.data_dir)["train"].name),
        **_bos_key(samples),
        # a task not of the paper's by its definition's content: a changed YAML or data file is another profile
        **({} if task in PAPER_TASKS else {"definition": definition_digest(task, ctx.data_dir)}),
    }


class _TaskEncoder:
    """Builds the lm-eval LM and task objects once, on first use (a fully cached run needs neither)."""

    def __init__(self, ctx: PruningContext, samples: TaskSamples) -> None:
        self.ctx, self.samples = ctx, samples
        self.lm: Any = None
        self.tasks: dict[str, Any] | None = None

    def sequences(self, task: str) -> list[list[int]]:
        ctx, samples = self.ctx, self.samples
        if self.lm is None:
            settings = EvalSettings(batch_size=ctx.batch_size, add_bos_token=samples.add_bos_token)
            self.lm = make_lm(ctx.loaded.model, ctx.loaded.tokenizer, settings, ctx.loaded.device)
            self.tasks = build_tasks(list(samples.tasks), ctx.data_dir, with_train=True)
        drawn = draw_samples(task, self.tasks[task], samples.n, samples.seed, samples.with_answer)
        return encode_samples(self.lm, drawn, samples.max_length)


def task_profiles(ctx: PruningContext, samples: TaskSamples) -> dict[str, ActivationProfile]:
    """One ActivationProfile per profiled task; computed once per (model, task, calibration options)."""
    cache = ProfileCache(cache_dir() / "profiles" / ctx.loaded.name)
    encoder = _TaskEncoder(ctx, samples)
    profiles, hits = {}, []
    for task in samples.tasks:
        def compute(task: str = task) -> ActivationProfile:
            pad_id = ctx.loaded.tokenizer.pad_token_id or 0
            return profile_activations(
                ctx.loaded.model, encoder.sequences(task), ctx.batch_size, pad_id, desc=f"profile {task}",
                exclude_first=samples.exclude_bos,
            )

        profiles[task], hit = cache.get_or_compute(profile_cache_key(ctx, samples, task), compute)
        hits.append(hit)
    log.info("profiles: %d cached, %d computed", sum(hits), len(hits) - sum(hits))
    ctx.notes["profiles_cached"] = sum(hits)
    ctx.notes["profiles_computed"] = len(hits) - sum(hits)
    return profiles


def generic_notes(text: GenericText, reference: tuple[int, int]) -> dict[str, Any]:
    """What the record says about generic-text windows (each window is exactly window_length tokens)."""
    path = text.file
    return {"file": str(path), "sha256": text.sha256, "layout": layout_of(path), "windows": text.windows,
            "window_length": text.window_length, "tokens": text.windows * text.window_length, "seed": text.seed,
            "reference_windows_length": list(reference)}


def generic_sequences(ctx: PruningContext, text: GenericText, reference: tuple[int, int]) -> list[list[int]]:
    """The seeded generic-text windows (diet/calib/generic_text.py); what was drawn goes into the record's notes."""
    drawn = sample_windows(text.file, ctx.loaded.tokenizer, text.windows, text.window_length, text.seed,
                           bool(text.add_bos_token))
    ctx.notes["calib_source"] = {
        **generic_notes(text, reference), "tokens": sum(len(s) for s in drawn.sequences),
        **({"documents_drawn": drawn.documents_drawn} if drawn.layout == "documents" else {}),
    }
    return drawn.sequences


def file_profile(ctx: PruningContext, text: GenericText, reference: tuple[int, int]) -> ActivationProfile:
    """The profile of the generic-text windows; cached, keyed by the file's sha256 and the windows."""
    path = text.file
    key = {
        "model": ctx.loaded.fingerprint,
        "dtype": ctx.loaded.dtype,
        "task": "file-" + re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)[:40],
        "source_sha256": text.sha256,
        "layout": layout_of(path),
        "windows": text.windows,
        "window_length": text.window_length,
        "seed": text.seed,
        "add_bos_token": bool(text.add_bos_token),
        **_bos_key(text),
    }

    def compute() -> ActivationProfile:
        pad_id = ctx.loaded.tokenizer.pad_token_id or 0
        sequences = generic_sequences(ctx, text, reference)
        return profile_activations(ctx.loaded.model, sequences, ctx.batch_size, pad_id,
                                   desc="profile generic text", exclude_first=text.exclude_bos)

    profile, hit = ProfileCache(cache_dir() / "profiles" / ctx.loaded.name).get_or_compute(key, compute)
    if hit:  # the notes describe the windows even when the profile came from the cache (no re-draw)
        ctx.notes["calib_source"] = generic_notes(text, reference)
    ctx.notes["profiles_cached"] = int(hit)
    ctx.notes["profiles_computed"] = int(not hit)
    ctx.notes["calib_source"]["tokens_profiled"] = profile.n_tokens
    return profile


def calibration_profile(ctx: PruningContext, calibration: Calibration, reference: tuple[int, int]) -> ActivationProfile:
    """One profile of all calibration tokens (the task-agnostic baselines' input): the task samples pooled,
    or the generic-text windows."""
    if isinstance(calibration, TaskSamples):
        profiles = task_profiles(ctx, calibration)
        ctx.notes["calib_source"] = TASKS_SOURCE
        return ActivationProfile.pooled([profiles[task] for task in calibration.tasks])
    return file_profile(ctx, calibration, reference)


def calibration_sequences(ctx: PruningContext, calibration: Calibration,
                          reference: tuple[int, int]) -> list[list[int]]:
    """The calibration token sequences themselves (methods that run their own passes: sequential Wanda-sp)."""
    if isinstance(calibration, TaskSamples):
        encoder = _TaskEncoder(ctx, calibration)
        ctx.notes["calib_source"] = TASKS_SOURCE
        return [sequence for task in calibration.tasks for sequence in encoder.sequences(task)]
    return generic_sequences(ctx, calibration, reference)
