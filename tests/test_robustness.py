"""Interrupted sweeps resume without redoing or corrupting anything; records are never overwritten."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, compose_config
from diet.run import records
from diet.errors import DietConfigError
from diet.run.pipeline import run_cell
from diet.run.records import iter_records

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


# --------------------------------------------------------------------------- fail fast, before any load

def run_cli(*args: str, tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    """experiments.run in a subprocess on the tiny model, offline; returns the result and its seconds."""
    full_env = {**os.environ, "DIET_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
                "HF_DATASETS_OFFLINE": "1", **env}
    full_env.pop("HYDRA_FULL_ERROR", None)
    command = [sys.executable, "-m", "experiments.run", "model=tiny_gemma2", "tasks=[arc_easy]", "eval.limit=2",
               "wandb.mode=disabled", f"results_dir={tmp_path / 'records'}", *args,
               f"hydra.run.dir={tmp_path / 'hydra'}"]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO_ROOT, env=full_env, capture_output=True, text=True, timeout=120)
    return result, time.perf_counter() - start


def model_folder(tmp_path: Path, config: str | None) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "tokenizer.json").write_text("{}")
    if config is not None:
        (folder / "config.json").write_text(config)
    return folder


@pytest.mark.parametrize("case", ["results_dir", "cache", "missing_model", "no_config", "bad_config", "hub_offline"])
def test_cli_fails_fast_with_one_message(tmp_path, case):
    """Each bad location exits 2 in seconds (imports only: nothing is loaded, profiled or evaluated) with
    one line naming the value, and no traceback."""
    args: list[str] = []
    env: dict[str, str] = {}
    if case == "results_dir":
        args, expected = ["results_dir=/proc/diet-results"], "results_dir='/proc/diet-results' is not a writable folder"
    elif case == "cache":
        env, expected = {"DIET_CACHE": "/proc/x"}, "the diet cache ($DIET_CACHE)='/proc/x' is not a writable folder"
    elif case == "missing_model":
        missing = tmp_path / "no" / "such" / "model"
        args, expected = ["model=custom", f"model.name_or_path={missing}"], f"'{missing}': no such folder"
    elif case == "no_config":
        folder = model_folder(tmp_path, None)
        args, expected = ["model=custom", f"model.name_or_path={folder}"], f"'{folder}' is not a model folder"
    elif case == "bad_config":  # passes the preflight, fails inside transformers: wrapped by the loader
        folder = model_folder(tmp_path, "{}")
        args, expected = ["model=custom", f"model.name_or_path={folder}"], f"could not load model '{folder}'"
    else:  # a hub id, offline, with an empty Hugging Face cache
        (tmp_path / "hf").mkdir()
        args, env = ["model=gemma2_2b"], {"HF_HOME": str(tmp_path / "hf")}
        expected = "model.name_or_path='google/gemma-2-2b' is not in the local Hugging Face cache"
    result, seconds = run_cli(*args, tmp_path=tmp_path, **env)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    errors = [line for line in output.splitlines() if "configuration error:" in line]
    assert len(errors) == 1 and expected in errors[0], output
    assert "Traceback" not in result.stderr
    assert seconds < 60, seconds  # imports take most of it (~7 s on a busy 2-core machine)
    assert not (tmp_path / "records").exists() or not list((tmp_path / "records").iterdir())
    if case == "hub_offline":  # says what to do
        for advice in ("HF_TOKEN", "https://huggingface.co/google/gemma-2-2b", "hf download google/gemma-2-2b",
                       "model.name_or_path="):
            assert advice in errors[0], advice


def test_preflight_probes_and_creates_folders(tmp_path, monkeypatch):
    from diet.run.preflight import preflight

    monkeypatch.setenv("DIET_CACHE", str(tmp_path / "cache"))
    cfg = compose_config(["model=tiny_gemma2", f"results_dir={tmp_path / 'a' / 'records'}", "wandb.mode=offline",
                          f"wandb.dir={tmp_path / 'wandb'}"])
    preflight(cfg)
    for folder in ("a/records", "cache", "wandb"):
        assert (tmp_path / folder).is_dir() and not list((tmp_path / folder).iterdir())  # probe removed
    (tmp_path / "file").write_text("")
    with pytest.raises(DietConfigError, match=r"^results_dir='.*file' is a file, not a folder$"):
        preflight({**cfg, "results_dir": str(tmp_path / "file")})
    with pytest.raises(DietConfigError, match=r"^wandb\.dir='/proc/wandb' is not a writable folder: "):
        preflight({**cfg, "wandb": {**cfg["wandb"], "dir": "/proc/wandb"}})
    preflight({**cfg, "wandb": {"mode": "disabled", "dir": "/proc/wandb"}})  # not written when disabled


def test_preflight_accepts_a_cached_hub_model(tmp_path, monkeypatch):
    """A hub id whose config.json is in the Hugging Face cache loads offline: no error, no network."""
    from diet.models.availability import check_model, looks_local

    snapshot = tmp_path / "hub" / "models--google--gemma-2-2b" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "hub" / "models--google--gemma-2-2b" / "refs").mkdir()
    (tmp_path / "hub" / "models--google--gemma-2-2b" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    model = compose_config(["model=gemma2_2b"])["model"]
    check_model(model)
    with pytest.raises(DietConfigError, match=r"'google/gemma-2-9b' is not in the local Hugging Face cache"):
        check_model({**model, "name_or_path": "google/gemma-2-9b"})
    assert not looks_local("google/gemma-2-2b") and not looks_local("gpt2")
    assert all(looks_local(p) for p in ("/abs/model", "./model", "../model", "~/model", "a/b/c"))
