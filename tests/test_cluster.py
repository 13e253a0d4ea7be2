"""Sweeps on a cluster: a running cell is claimed, records are created exclusively, threads follow the job's
CPU limits, locks survive filesystems without flock, jobs refuse a checkout that moved since submission."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading

import pytest

from conftest import DATA_DIR, REPO_ROOT, compose_config
from diet.errors import DietConfigError
from diet.run.cell import resolve
from diet.run.claims import CellInProgress, claim_cell, claim_path, live_claim
from diet.run.records import write_record

CELL = ["model=tiny_gemma2", "method=dense", "tasks=[arc_easy]", "eval.limit=2", "wandb.mode=disabled"]


def plant_claim(results_dir, stem: str, **holder) -> "os.PathLike":
    """A claim file as another job would have left it."""
    path = claim_path(results_dir, stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"slurm_job": None, "since": 0, **holder}))
    return path


def cell_stem(cfg) -> str:
    return resolve(cfg).stem


def test_a_claimed_cell_is_not_run_again_and_a_dead_claim_is_taken_over(tmp_path, isolated_cache):
    from diet.run.pipeline import run_cell

    cfg = compose_config([*CELL, f"results_dir={tmp_path / 'records'}"])
    stem = cell_stem(cfg)
    held = plant_claim(tmp_path / "records", stem, host=os.uname().nodename, pid=os.getppid())
    assert live_claim(tmp_path / "records", stem)["pid"] == os.getppid()  # a live job (the parent process)
    with pytest.raises(CellInProgress, match="in progress elsewhere"):
        run_cell(cfg)
    assert held.exists() and not list((tmp_path / "records").glob("*.json"))  # nothing written, claim kept
    held.unlink()
    with claim_cell(tmp_path / "records", stem) as mine:
        assert mine.exists()
    assert not mine.exists() and not mine.parent.exists()  # released, and no empty claims folder is left
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    plant_claim(tmp_path / "records", stem, host=os.uname().nodename, pid=int(dead.stdout))
    record, path = run_cell(cfg)  # the claim's process is gone: taken over
    assert record is not None and path.exists() and not claim_path(tmp_path / "records", stem).exists()


def test_two_processes_on_one_cell_one_runs_the_other_says_in_progress(tmp_path, isolated_cache):
    """The second process meets the first one's claim (held here by a live process) and leaves without writing."""
    cfg = compose_config([*CELL, f"results_dir={tmp_path / 'records'}"])
    stem = cell_stem(cfg)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        plant_claim(tmp_path / "records", stem, host=os.uname().nodename, pid=holder.pid)
        env = {**os.environ, "DIET_DATA_DIR": str(DATA_DIR), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "DIET_CACHE": str(isolated_cache)}
        result = subprocess.run([sys.executable, "-m", "experiments.run", *CELL, f"results_dir={tmp_path / 'records'}",
                                 f"hydra.run.dir={tmp_path / 'hydra'}"], cwd=REPO_ROOT, env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "in progress: cell" in result.stdout and f"pid {holder.pid}" in result.stdout
        assert not list((tmp_path / "records").glob("*.json"))
    finally:
        holder.communicate(b"")
    from diet.run.plan import plan_cells

    plan = plan_cells([([], cfg)], tmp_path / "records", "cpu")  # the holder is gone: to run again, not running
    assert plan.cells[0].running is None and plan.cells[0].done is None


def test_a_requeued_slurm_job_takes_its_own_claim_back(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    path = plant_claim(tmp_path, "cell", host="another-node", pid=1, slurm_job="4242", since=1e12)
    with claim_cell(tmp_path, "cell"):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    plant_claim(tmp_path, "cell", host="another-node", pid=1, slurm_job="999", since=1e12)
    with pytest.raises(CellInProgress, match="Slurm job 999"):  # another job on another node: trusted
        with claim_cell(tmp_path, "cell"):
            pass


def test_two_writers_of_one_record_never_overwrite_each_other(tmp_path):
    records = [{"method": "dense", "model": {"name": "m"}, "config_hash": "abc", "writer": i} for i in range(12)]
    paths: list = []
    threads = [threading.Thread(target=lambda r=r: paths.append(write_record(r, tmp_path))) for r in records]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(paths)) == 12 and len(list(tmp_path.glob("*.json"))) == 12
    assert sorted(json.loads(p.read_text())["writer"] for p in paths) == list(range(12))
    assert not list(tmp_path.glob(".*.tmp"))


def test_threads_follow_slurm_and_the_cgroup_quota(tmp_path, monkeypatch):
    from diet.run import threads

    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("250000 100000\n")
    assert threads.cgroup_cpu_quota(str(v2)) == 2
    (v2 / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpu_quota(str(v2)) is None
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_cpu_quota(str(tmp_path / "v1")) == 1  # half a core: at least one thread
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: 3)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    assert threads.usable_cores() == 3
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: None)
    assert threads.usable_cores() == 8
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert threads.usable_cores() == 16


def test_the_lock_falls_back_to_a_lock_file_where_flock_is_refused(tmp_path, monkeypatch):
    import filelock

    from diet.locks import file_lock

    def refuse(self, *args, **kwargs):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(filelock.FileLock, "acquire", refuse)
    path = str(tmp_path / "x.lock")
    with file_lock(path):
        assert os.path.exists(path + ".soft")  # held as an exclusive lock file
    assert not os.path.exists(path + ".soft")
    with file_lock(path):  # and again: released properly
        pass

    def broken(self, *args, **kwargs):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(filelock.FileLock, "acquire", broken)
    with pytest.raises(OSError, match="Permission denied"):  # other errors are not hidden
        with file_lock(path):
            pass


def test_a_job_whose_checkout_moved_since_submission_stops(monkeypatch):
    from diet.run import records

    monkeypatch.setenv(records.SUBMITTED_CODE, json.dumps({**records.code_version(), "commit": "0000000feed"}))
    with pytest.raises(DietConfigError, match="checkout changed since this sweep was submitted"):
        records.check_submitted_code()
    monkeypatch.setenv(records.SUBMITTED_CODE, json.dumps(records.code_version(), sort_keys=True))
    records.check_submitted_code()  # the same code: runs
    monkeypatch.setenv(records.SUBMITTED_CODE, "")
    records.check_submitted_code()


def test_the_slurm_launcher_carries_the_environment_requeues_and_resumes(monkeypatch):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    monkeypatch.setenv("DIET_DATA_DIR", "/shared/data")
    monkeypatch.setenv("DIET_CACHE", "/shared/cache")
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hydra/launcher=slurm", "target=gpu", "model=gemma2_2b"],
                      return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    setup = [OmegaConf.create({"x": line}).x for line in launcher["setup"]]  # resolved as sbatch gets them
    assert 'export DIET_DATA_DIR="/shared/data"' in setup and 'export DIET_CACHE="/shared/cache"' in setup
    assert launcher["max_num_timeout"] >= 1 and "chdir" in launcher["additional_parameters"]
    assert cfg.eval.by_task is True and cfg.model.device == "cuda"
