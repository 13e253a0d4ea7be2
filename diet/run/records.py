"""Result records: one JSON file per finished run, never silently overwritten."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from diet.errors import DietConfigError
import diet
from diet.io import atomic_create_text, json_text

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
        if status:  # which uncommitted change: two dirty trees of one commit are told apart
            diff = subprocess.run(["git", "diff", "HEAD", "--", *CODE_PATHS], cwd=root, capture_output=True,
                                  check=True).stdout
            info["dirty_sha"] = hashlib.sha256(diff + status.encode()).hexdigest()[:12]
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


SUBMITTED_CODE = "DIET_SUBMITTED_CODE"  # set by experiments.run when a sweep is submitted; jobs inherit it


def mark_submitted_code() -> None:
    """Fix the code version at submit time: cluster jobs start later, in new processes, from the same
    checkout, and inherit this environment variable (sbatch exports the submitting environment)."""
    os.environ[SUBMITTED_CODE] = json.dumps(code_version(), sort_keys=True)


def check_submitted_code() -> None:
    """A job whose checkout changed after its sweep was submitted would run other code than was submitted and
    record it under the wrong name: it stops instead (before any model is loaded)."""
    submitted = os.environ.get(SUBMITTED_CODE)
    if not submitted:  # not submitted by experiments.run (a test, a notebook, a launcher that exported it empty)
        return
    now = code_version()
    if json.loads(submitted) != now:
        raise DietConfigError(f"the checkout changed since this sweep was submitted (submitted: {submitted}; now: "
                              f"{json.dumps(now, sort_keys=True)}): resubmit the sweep, or run it from a checkout "
                              f"that stays at the submitted commit")


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
    """Atomically create a record file; a file of the same name is never replaced (a force=true rerun of an
    identical cell, or another writer racing for the name): the new record is suffixed __rerunN instead."""
    path = record_path(results_dir, record["method"], record["model"]["name"], record["config_hash"])
    text = json_text(record)
    counter = 1
    while not atomic_create_text(path, text):
        path = path.with_name(f"{path.stem.split('__rerun')[0]}__rerun{counter}.json")
        counter += 1
    return path


def iter_records(results_dir: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(Path(results_dir).glob("*.json")):
        record = json.loads(path.read_text())
        if record.get("schema") == SCHEMA_VERSION:
            record["_path"] = str(path)
            yield record
