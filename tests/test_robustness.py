"""Interrupted sweeps resume without redoing or corrupting anything; records are never overwritten."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO_ROOT, compose_config
from diet import records
from diet.pipeline import run_cell
from diet.records import iter_records

SWEEP = [
    "-m", "model=tiny_gemma2", "method=dense,diet", "sparsity=0.2,0.4", "tasks=[arc_easy]",
    "eval.limit=4", "calib.n=4", "wandb.mode=disabled",
]


def sweep_command(results_dir: Path, sweep_dir: Path) -> list[str]:
    return [sys.executable, "-m", "experiments.run", *SWEEP, f"results_dir={results_dir}",
            f"hydra.sweep.dir={sweep_dir}"]


def run_sweep(results_dir: Path, sweep_dir: Path, cache: Path) -> None:
    env = {**os.environ, "DIET_CACHE": str(cache)}
    subprocess.run(sweep_command(results_dir, sweep_dir), cwd=REPO_ROOT, env=env, check=True,
                   capture_output=True, text=True, timeout=600)


def outcomes(results_dir: Path) -> dict[str, dict]:
    """What a table shows per cell: config hash -> per-task metrics and mask hash."""
    return {r["config_hash"]: {"tasks": r["tasks"], "mask": (r["mask"] or {}).get("mask_hash")}
            for r in iter_records(results_dir)}


def test_sigkilled_sweep_resumes_only_missing_cells(tmp_path):
    # dense at 0.2 and 0.4 is one cell (dense ignores sparsity): 3 cells in all
    reference = tmp_path / "reference"
    run_sweep(reference, tmp_path / "sweep_ref", tmp_path / "cache_ref")
    assert len(outcomes(reference)) == 3

    interrupted = tmp_path / "interrupted"
    env = {**os.environ, "DIET_CACHE": str(tmp_path / "cache")}
    process = subprocess.Popen(sweep_command(interrupted, tmp_path / "sweep1"), cwd=REPO_ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not list(interrupted.glob("*.json")) and time.time() < deadline:
        assert process.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # mid-sweep: the next cell is running
    process.wait()
    finished = {path: path.stat().st_mtime_ns for path in interrupted.glob("*.json")}
    assert 1 <= len(finished) < 3

    run_sweep(interrupted, tmp_path / "sweep2", tmp_path / "cache")
    for path, mtime in finished.items():
        assert path.stat().st_mtime_ns == mtime  # finished cells were not redone
    assert outcomes(interrupted) == outcomes(reference)
    assert not [p for p in interrupted.iterdir() if p.suffix != ".json"]  # no stray temp files kept as records


def test_forced_rerun_with_different_code_keeps_both_records(tmp_path, isolated_cache, monkeypatch):
    overrides = ["model=tiny_gemma2", "tasks=[arc_easy]", "eval.limit=4", "wandb.mode=disabled",
                 f"results_dir={tmp_path}"]
    _, first = run_cell(compose_config(overrides))
    monkeypatch.setattr(records, "code_tag", lambda: "0123456789ab")
    skipped, same = run_cell(compose_config(overrides))  # resuming after a commit: not redone
    assert skipped is None and same == first
    record, second = run_cell(compose_config([*overrides, "force=true"]))
    assert record is not None and first != second
    assert first.exists() and second.exists() and second.name.endswith("__0123456789ab.json")
