"""Shared by every calibration-based method: per-task activation profiles, cached on disk.

Task-agnostic baselines (wanda_sp, flap, activation_pooled, shortgpt) calibrate on `calib.source`:
- `tasks` (default): the per-task samples pooled, so they see exactly the tokens DIET sees;
- `c4` (the offline data folder's C4 train excerpt) or the path of a text file: generic text, the
  baselines' published protocol, `calib.windows` windows of `calib.window_length` tokens sampled as the
  reference code samples them (diet/calib/generic_text.py); null = the method's reference count and length
  (`Method.reference_calib`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Mapping

from diet.calib.samples import draw_samples, encode_samples
from diet.errors import DietConfigError
from diet.eval.evaluate import EvalSettings, make_lm
from diet.calib.generic_text import NAMED_SOURCES, layout_of, sample_windows
from diet.io import sha256_file
from diet.methods.base import PruningContext
from diet.paths import cache_dir
from diet.paths import data_dir as resolve_data_dir
from diet.calib.profiler import ActivationProfile, profile_activations
from diet.calib.profile_cache import ProfileCache
from diet.eval.tasks import build_tasks, data_files

log = logging.getLogger(__name__)

TASKS_SOURCE = "tasks"


def exclude_bos(cfg: Mapping[str, Any]) -> bool:
    """`profile.exclude_bos`: leave position 0 (the BOS) out of the profile statistics."""
    return bool((cfg.get("profile") or {}).get("exclude_bos", False))


def _bos_key(cfg: Mapping[str, Any]) -> dict[str, bool]:
    # in the cache key only when set, so that every existing cached profile keeps its key
    return {"exclude_first": True} if exclude_bos(cfg) else {}


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
        **_bos_key(ctx.cfg),
    }
    return key


class _TaskEncoder:
    """Builds the lm-eval LM and task objects once, on first use (a fully cached run needs neither)."""

    def __init__(self, ctx: PruningContext) -> None:
        self.ctx = ctx
        self.lm: Any = None
        self.tasks: dict[str, Any] | None = None

    def sequences(self, task: str) -> list[list[int]]:
        ctx, calib = self.ctx, self.ctx.cfg["calib"]
        if self.lm is None:
            settings = EvalSettings(batch_size=calib["batch_size"], add_bos_token=ctx.cfg["model"]["add_bos_token"])
            self.lm = make_lm(ctx.loaded.model, ctx.loaded.tokenizer, settings, ctx.loaded.device)
            self.tasks = build_tasks(ctx.calib_tasks, ctx.data_dir, with_train=True)
        samples = draw_samples(task, self.tasks[task], calib["n"], ctx.cfg["seed"], calib["with_answer"])
        return encode_samples(self.lm, samples, calib["max_length"])


def task_profiles(ctx: PruningContext) -> dict[str, ActivationProfile]:
    """One ActivationProfile per task; computed once per (model, task, calibration options)."""
    calib = ctx.cfg["calib"]
    cache = ProfileCache(cache_dir() / "profiles" / ctx.loaded.name)
    encoder = _TaskEncoder(ctx)
    profiles, hits = {}, []
    for task in ctx.calib_tasks:
        def compute(task: str = task) -> ActivationProfile:
            pad_id = ctx.loaded.tokenizer.pad_token_id or 0
            return profile_activations(
                ctx.loaded.model, encoder.sequences(task), calib["batch_size"], pad_id, desc=f"profile {task}",
                exclude_first=exclude_bos(ctx.cfg),
            )

        profiles[task], hit = cache.get_or_compute(profile_cache_key(ctx, task), compute)
        hits.append(hit)
    log.info("profiles: %d cached, %d computed", sum(hits), len(hits) - sum(hits))
    ctx.notes["profiles_cached"] = sum(hits)
    ctx.notes["profiles_computed"] = len(hits) - sum(hits)
    return profiles


def calib_source(cfg: Mapping[str, Any]) -> str:
    """`calib.source`: "tasks" (pooled task train samples), "c4", or the path of a UTF-8 text file."""
    return str(cfg["calib"].get("source", TASKS_SOURCE) or TASKS_SOURCE)


def source_file(cfg: Mapping[str, Any]) -> Path | None:
    """None for `calib.source: tasks`; else the text file (named sources live in the data folder)."""
    source = calib_source(cfg)
    if source == TASKS_SOURCE:
        return None
    if source in NAMED_SOURCES:
        data_dir = resolve_data_dir((cfg.get("data") or {}).get("dir"))
        if data_dir is None:
            raise DietConfigError(
                f"calib.source={source!r} is read from the offline data folder (<data.dir>/{NAMED_SOURCES[source]}): "
                f"set data.dir / DIET_DATA_DIR, or give the path of a local copy as calib.source")
        path = data_dir / NAMED_SOURCES[source]
    else:
        path = Path(source).expanduser()
    if not path.is_file():
        raise DietConfigError(
            f"calib.source={source!r}: no such file {str(path)!r}; use 'tasks' (the task samples, pooled), "
            f"{', '.join(repr(name) for name in NAMED_SOURCES)} or the path of a UTF-8 text (.txt) or JSON lines "
            f"(.jsonl, a 'text' field per document) file")
    return path


def window_plan(cfg: Mapping[str, Any], reference: tuple[int, int]) -> tuple[int, int]:
    """(windows, tokens per window) of a generic-text calibration: calib.windows / calib.window_length,
    each null = the method's reference value."""
    calib = cfg["calib"]
    windows, length = calib.get("windows"), calib.get("window_length")
    return (reference[0] if windows is None else int(windows), reference[1] if length is None else int(length))


def source_identity(cfg: Mapping[str, Any], reference: tuple[int, int]) -> dict[str, Any]:
    """What a generic source adds to a cell's identity: the file by content, its layout and the windows."""
    path = source_file(cfg)
    windows, length = window_plan(cfg, reference)
    return {"file_sha256": sha256_file(path), "layout": layout_of(path), "windows": windows, "window_length": length}


def generic_notes(ctx: PruningContext, path: Path, reference: tuple[int, int]) -> dict[str, Any]:
    """What the record says about generic-text windows (each window is exactly window_length tokens)."""
    windows, length = window_plan(ctx.cfg, reference)
    return {"file": str(path), "sha256": sha256_file(path), "layout": layout_of(path), "windows": windows,
            "window_length": length, "tokens": windows * length, "seed": ctx.cfg["seed"],
            "reference_windows_length": list(reference)}


def generic_sequences(ctx: PruningContext, path: Path, reference: tuple[int, int]) -> list[list[int]]:
    """The seeded generic-text windows (diet/calib/generic_text.py); what was drawn goes into the record's notes."""
    windows, length = window_plan(ctx.cfg, reference)
    drawn = sample_windows(path, ctx.loaded.tokenizer, windows, length, ctx.cfg["seed"],
                           bool(ctx.cfg["model"]["add_bos_token"]))
    ctx.notes["calib_source"] = {
        **generic_notes(ctx, path, reference), "tokens": sum(len(s) for s in drawn.sequences),
        **({"documents_drawn": drawn.documents_drawn} if drawn.layout == "documents" else {}),
    }
    return drawn.sequences


def file_profile(ctx: PruningContext, path: Path, reference: tuple[int, int]) -> ActivationProfile:
    """The profile of the generic-text windows; cached, keyed by the file's sha256 and the windows."""
    windows, length = window_plan(ctx.cfg, reference)
    key = {
        "model": ctx.loaded.fingerprint,
        "dtype": ctx.loaded.dtype,
        "task": "file-" + re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)[:40],
        "source_sha256": sha256_file(path),
        "layout": layout_of(path),
        "windows": windows,
        "window_length": length,
        "seed": ctx.cfg["seed"],
        "add_bos_token": bool(ctx.cfg["model"]["add_bos_token"]),
        **_bos_key(ctx.cfg),
    }

    def compute() -> ActivationProfile:
        pad_id = ctx.loaded.tokenizer.pad_token_id or 0
        sequences = generic_sequences(ctx, path, reference)
        return profile_activations(ctx.loaded.model, sequences, ctx.cfg["calib"]["batch_size"], pad_id,
                                   desc="profile generic text", exclude_first=exclude_bos(ctx.cfg))

    profile, hit = ProfileCache(cache_dir() / "profiles" / ctx.loaded.name).get_or_compute(key, compute)
    if hit:  # the notes describe the windows even when the profile came from the cache (no re-draw)
        ctx.notes["calib_source"] = generic_notes(ctx, path, reference)
    ctx.notes["profiles_cached"] = int(hit)
    ctx.notes["profiles_computed"] = int(not hit)
    ctx.notes["calib_source"]["tokens_profiled"] = profile.n_tokens
    return profile


def calibration_profile(ctx: PruningContext, reference: tuple[int, int]) -> ActivationProfile:
    """One profile of all calibration tokens, per `calib.source` (the task-agnostic baselines' input)."""
    path = source_file(ctx.cfg)
    if path is None:
        profiles = task_profiles(ctx)
        ctx.notes["calib_source"] = TASKS_SOURCE
        return ActivationProfile.pooled([profiles[task] for task in ctx.calib_tasks])
    return file_profile(ctx, path, reference)


def calibration_sequences(ctx: PruningContext, reference: tuple[int, int]) -> list[list[int]]:
    """The calibration token sequences themselves (methods that run their own passes: sequential Wanda-sp)."""
    path = source_file(ctx.cfg)
    if path is None:
        encoder = _TaskEncoder(ctx)
        ctx.notes["calib_source"] = TASKS_SOURCE
        return [sequence for task in ctx.calib_tasks for sequence in encoder.sequences(task)]
    return generic_sequences(ctx, path, reference)
