"""Result records: one JSON file per finished run, never silently overwritten."""

from __future__ import annotations

import functools
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import diet
from diet.io import atomic_write_json

SCHEMA_VERSION = 1
PACKAGES = ("torch", "transformers", "lm_eval", "datasets", "hydra-core", "omegaconf", "wandb", "pandas", "numpy")
CODE_PATHS = ("diet", "experiments", "conf")  # what changes a result; records/ edits do not


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """diet's version plus, inside a git checkout, the commit and whether result-relevant code is dirty."""
    root = Path(diet.__file__).resolve().parent.parent
    info: dict[str, Any] = {"diet": diet.__version__, "commit": None, "dirty": None}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", *CODE_PATHS], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        info.update(commit=commit, dirty=bool(status))
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def code_tag() -> str:
    info = code_version()
    if info["commit"] is None:
        return f"v{info['diet']}"
    return info["commit"] + ("-dirty" if info["dirty"] else "")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def machine() -> dict[str, Any]:
    """The platform, and the load average (1, 5, 15 min) when the record is written: above the run's own
    threads, other work shared the cores and the timings are not the cell's alone."""
    import os

    import torch

    info: dict[str, Any] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine()}
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(load, 2) for load in os.getloadavg()]
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def record_stem(method: str, model: str, cfg_hash: str) -> str:
    return f"{model}__{method}__{cfg_hash}"


def record_path(results_dir: Path, method: str, model: str, cfg_hash: str) -> Path:
    return Path(results_dir) / f"{record_stem(method, model, cfg_hash)}__{code_tag()}.json"


def find_existing(results_dir: Path, method: str, model: str, cfg_hash: str) -> Path | None:
    """A finished record of the same cell (same config hash, any code version), if any.

    A sweep resumed after a commit must not redo finished cells; `force=true` reruns a cell and the
    new record (told apart by its code version) is written beside the old one.
    """
    matches = sorted(Path(results_dir).glob(f"{record_stem(method, model, cfg_hash)}__*.json"))
    return matches[-1] if matches else None


def write_record(record: dict[str, Any], results_dir: Path) -> Path:
    """Atomically write a record; an existing file of the same name is kept and the new one suffixed."""
    path = record_path(results_dir, record["method"], record["model"]["name"], record["config_hash"])
    counter = 1
    while path.exists():  # force=true rerun of an identical cell: keep both
        path = path.with_name(f"{path.stem.split('__rerun')[0]}__rerun{counter}.json")
        counter += 1
    atomic_write_json(path, record)
    return path


def iter_records(results_dir: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(Path(results_dir).glob("*.json")):
        record = json.loads(path.read_text())
        if record.get("schema") == SCHEMA_VERSION:
            record["_path"] = str(path)
            yield record
