"""A cell being run is claimed: an exclusive file under results_dir, so a second job on the same cell (a
sweep's duplicate dense cells, a sweep submitted twice, two machines on one shared results_dir) says
"in progress" and leaves instead of computing it again.

`<results_dir>/.claims/<cell>.json` is created with O_EXCL (atomic on local filesystems and NFSv3+) and
holds who runs the cell. It is removed when the run ends, however it ends; a claim left by a killed job
is taken over when it is provably dead: the same host and a process id that no longer runs, the same Slurm
job (requeued after a timeout), or older than CLAIM_HOURS from another host (whose processes cannot be
seen from here). `force=true` does not break a live claim: remove the file by hand when that job is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator

from diet.io import exclusive_create_text

CLAIMS_DIR = ".claims"
CLAIM_HOURS = 24.0  # a claim from another host is trusted this long (longer than any cell's time limit)


class CellInProgress(RuntimeError):
    """Another job holds the cell's claim."""


def claim_path(results_dir: Path, stem: str) -> Path:
    return Path(results_dir) / CLAIMS_DIR / f"{stem}.json"


def slurm_job() -> str | None:
    """The Slurm job (array job and task) this process belongs to; None outside Slurm."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return None if job is None else f"{job}_{task}" if task is not None else job


def owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job": slurm_job(), "since": time.time()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def is_stale(held: dict[str, Any], me: dict[str, Any]) -> bool:
    """Whether a claim can be taken over (its job is provably gone, or it is this very job requeued)."""
    if held.get("slurm_job") and held.get("slurm_job") == me.get("slurm_job"):
        return True
    if held.get("host") == me["host"]:
        return held.get("pid") == me["pid"] or not _alive(int(held.get("pid", -1)))
    return time.time() - float(held.get("since", 0)) > CLAIM_HOURS * 3600


def read_claim(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # half-written by a process killed between create and write
        return {"host": "?", "pid": -1, "since": path.stat().st_mtime if path.exists() else 0}


def _create(path: Path, content: dict[str, Any]) -> bool:
    for _ in range(3):  # the folder may be removed by a job releasing the last claim in between
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return exclusive_create_text(path, json.dumps(content))
        except FileNotFoundError:
            continue
    raise OSError(f"could not create the claim {path}: its folder keeps disappearing")


def _release(path: Path) -> None:
    """Remove the claim, and the claims folder once no cell is running (results_dir holds records only)."""
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: other cells run; gone: another job removed it
        path.parent.rmdir()


def describe(held: dict[str, Any]) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(held.get("since", 0))))
    job = f", Slurm job {held['slurm_job']}" if held.get("slurm_job") else ""
    return f"host {held.get('host')}, pid {held.get('pid')}{job}, since {since}"


@contextlib.contextmanager
def claim_cell(results_dir: Path, stem: str) -> Iterator[Path]:
    """Hold the cell's claim for the block; raises CellInProgress when a live job holds it."""
    path, me = claim_path(results_dir, stem), owner()
    for _ in range(3):  # a stale claim is removed and created again; two takers race, one wins
        if _create(path, me):
            break
        held = read_claim(path)
        if held is None:
            continue
        if not is_stale(held, me):
            raise CellInProgress(f"cell {stem} is in progress elsewhere ({describe(held)}): not started again; "
                                 f"if that job is gone, remove {path}")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        raise CellInProgress(f"cell {stem}: its claim {path} keeps changing hands; not started")
    try:
        yield path
    finally:
        held = read_claim(path)
        if held is not None and held.get("pid") == me["pid"] and held.get("host") == me["host"]:
            _release(path)


def live_claim(results_dir: Path, stem: str) -> dict[str, Any] | None:
    """The claim of a cell being run by a live job (for experiments.plan), else None."""
    held = read_claim(claim_path(results_dir, stem))
    return None if held is None or is_stale(held, {**owner(), "slurm_job": None}) else held
