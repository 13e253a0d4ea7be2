"""Checks that take milliseconds before a run that takes hours: every folder it writes to is writable,
and the model it loads is there (a local folder with config.json, or a hub id that is cached or reachable).

Without them a bad `results_dir` fails only when the record is written, after all the work, and a missing
or gated model fails deep inside transformers with a traceback. Each failure here is one DietConfigError
naming the option, the value and what to do. The model checks live with the models
(diet.models.availability), which the loaders share.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Mapping

from diet.devices import check_device, resolve_device
from diet.errors import DietConfigError
from diet.models.availability import check_model
from diet.paths import cache_root


def preflight(cfg: Mapping[str, Any]) -> None:
    """Raise DietConfigError unless the run's output folders are writable and its model can be loaded."""
    for option, path in output_dirs(cfg):
        check_writable(option, path)
    check_device(resolve_device(str(cfg["model"].get("device") or "auto")))
    check_model(cfg["model"])


# --------------------------------------------------------------------------- writable folders


def output_dirs(cfg: Mapping[str, Any]) -> list[tuple[str, Path]]:
    """(option, folder) for every folder the run writes to."""
    dirs = [("results_dir", Path(cfg["results_dir"])), ("the diet cache ($DIET_CACHE)", cache_root())]
    if cfg["wandb"]["mode"] != "disabled":
        dirs.append(("wandb.dir", Path(cfg["wandb"]["dir"])))
    return dirs


def check_writable(option: str, path: Path) -> None:
    """Create `path` if missing and prove it writable by writing and removing a probe file."""
    path = path.expanduser()
    if path.exists() and not path.is_dir():
        raise DietConfigError(f"{option}={str(path)!r} is a file, not a folder")
    probe = path / f".diet-write-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise DietConfigError(f"{option}={str(path)!r} is not a writable folder: {error.strerror or error}") from None
