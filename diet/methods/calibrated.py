"""Shared by every calibration-based method: per-task activation profiles, cached on disk."""

from __future__ import annotations

import logging

from diet.calibration import draw_samples, encode_samples
from diet.evaluate import EvalSettings, make_lm
from diet.methods.base import PruningContext
from diet.paths import cache_dir
from diet.profile import ActivationProfile, profile_activations
from diet.profile_cache import ProfileCache
from diet.tasks import build_tasks, data_files

log = logging.getLogger(__name__)


def profile_cache_key(ctx: PruningContext, task: str) -> dict:
    calib = ctx.cfg["calib"]
    key = {
        "model": ctx.loaded.fingerprint,
        "dtype": ctx.loaded.dtype,
        "task": task,
        "n": calib["n"],
        "seed": ctx.cfg["seed"],
        "with_answer": calib["with_answer"],
        "max_length": calib["max_length"],
        "add_bos_token": ctx.cfg["model"]["add_bos_token"],
        "source": "online" if ctx.data_dir is None else str(data_files(task, ctx.data_dir)["train"].name),
    }
    return key


def task_profiles(ctx: PruningContext) -> dict[str, ActivationProfile]:
    """One ActivationProfile per task; computed once per (model, task, calibration options)."""
    calib = ctx.cfg["calib"]
    cache = ProfileCache(cache_dir() / "profiles" / ctx.loaded.name)
    settings = EvalSettings(batch_size=calib["batch_size"], add_bos_token=ctx.cfg["model"]["add_bos_token"])
    lm = None
    task_objects = None
    profiles, hits = {}, []
    for task in ctx.tasks:
        def compute(task: str = task) -> ActivationProfile:
            nonlocal lm, task_objects
            if lm is None:
                lm = make_lm(ctx.loaded.model, ctx.loaded.tokenizer, settings, ctx.loaded.device)
                task_objects = build_tasks(ctx.tasks, ctx.data_dir, with_train=True)
            samples = draw_samples(task, task_objects[task], calib["n"], ctx.cfg["seed"], calib["with_answer"])
            sequences = encode_samples(lm, samples, calib["max_length"])
            pad_id = ctx.loaded.tokenizer.pad_token_id or 0
            return profile_activations(
                ctx.loaded.model, sequences, calib["batch_size"], pad_id, desc=f"profile {task}"
            )

        profiles[task], hit = cache.get_or_compute(profile_cache_key(ctx, task), compute)
        hits.append(hit)
    log.info("profiles: %d cached, %d computed", sum(hits), len(hits) - sum(hits))
    ctx.notes["profiles_cached"] = sum(hits)
    ctx.notes["profiles_computed"] = len(hits) - sum(hits)
    return profiles
