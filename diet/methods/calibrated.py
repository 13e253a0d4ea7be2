"""Shared by every calibration-based method: per-task activation profiles, cached on disk.

Task-agnostic baselines (wanda_sp, flap, activation_pooled, shortgpt) use `calibration_profile`: by
default (`calib.source: tasks`) the per-task profiles pooled into one, so they see exactly the tokens
DIET sees; with `calib.source=/path/file.txt`, `calib.n` chunks of `calib.max_length` tokens of that text.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path

from diet.calibration import draw_samples, encode_samples
from diet.errors import DietConfigError
from diet.evaluate import EvalSettings, make_lm
from diet.io import sha256_file
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
    for task in ctx.calib_tasks:
        def compute(task: str = task) -> ActivationProfile:
            nonlocal lm, task_objects
            if lm is None:
                lm = make_lm(ctx.loaded.model, ctx.loaded.tokenizer, settings, ctx.loaded.device)
                task_objects = build_tasks(ctx.calib_tasks, ctx.data_dir, with_train=True)
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


TASKS_SOURCE = "tasks"


def calib_source(cfg: dict) -> str:
    """`calib.source`: "tasks" (pooled task train samples) or the path of a UTF-8 text file."""
    return str(cfg["calib"].get("source", TASKS_SOURCE) or TASKS_SOURCE)


def file_sequences(path: Path, tokenizer, n: int, length: int, seed: int, add_bos: bool) -> tuple[list[list[int]], int]:
    """`n` seeded chunks of a text file, each `length` tokens long including the BOS (when prepended).

    The whole file is tokenised without special tokens and cut into consecutive non-overlapping chunks
    of `length` (- 1 for the BOS) tokens; `n` of them are drawn with `seed` and kept in file order.
    Returns (sequences, tokens in the file).
    """
    ids = tokenizer(path.read_text(encoding="utf-8"), add_special_tokens=False).input_ids
    bos = tokenizer.bos_token_id if add_bos and tokenizer.bos_token_id is not None else None
    body = length - (bos is not None)
    available = len(ids) // body if body > 0 else 0
    if available < n:
        raise DietConfigError(
            f"calib.source={str(path)!r} has {len(ids)} tokens, enough for {available} chunks of "
            f"{body} tokens, but calib.n={n}: use a longer file, a smaller calib.n or calib.max_length"
        )
    chosen = sorted(random.Random(seed).sample(range(available), n))
    prefix = [bos] if bos is not None else []
    return [prefix + list(ids[c * body : (c + 1) * body]) for c in chosen], len(ids)


def file_profile(ctx: PruningContext, path: Path) -> ActivationProfile:
    """The profile of `calib.n` chunks of a local text file; cached, keyed by the file's sha256."""
    calib, tokenizer = ctx.cfg["calib"], ctx.loaded.tokenizer
    add_bos = bool(ctx.cfg["model"]["add_bos_token"])
    digest = sha256_file(path)
    key = {
        "model": ctx.loaded.fingerprint,
        "dtype": ctx.loaded.dtype,
        "task": "file-" + re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)[:40],
        "source_sha256": digest,
        "n": calib["n"],
        "seed": ctx.cfg["seed"],
        "max_length": calib["max_length"],
        "add_bos_token": add_bos,
    }
    facts: dict = {}

    def compute() -> ActivationProfile:
        sequences, facts["file_tokens"] = file_sequences(
            path, tokenizer, calib["n"], calib["max_length"], ctx.cfg["seed"], add_bos
        )
        pad_id = tokenizer.pad_token_id or 0
        return profile_activations(ctx.loaded.model, sequences, calib["batch_size"], pad_id, desc="profile file")

    profile, hit = ProfileCache(cache_dir() / "profiles" / ctx.loaded.name).get_or_compute(key, compute)
    ctx.notes["profiles_cached"] = int(hit)
    ctx.notes["profiles_computed"] = int(not hit)
    ctx.notes["calib_source"] = {"file": str(path), "sha256": digest, "tokens_profiled": profile.n_tokens, **facts}
    return profile


def calibration_profile(ctx: PruningContext) -> ActivationProfile:
    """One profile of all calibration tokens, per `calib.source` (the task-agnostic baselines' input)."""
    source = calib_source(ctx.cfg)
    if source == TASKS_SOURCE:
        profiles = task_profiles(ctx)
        ctx.notes["calib_source"] = TASKS_SOURCE
        return ActivationProfile.pooled([profiles[task] for task in ctx.calib_tasks])
    return file_profile(ctx, Path(source).expanduser())
