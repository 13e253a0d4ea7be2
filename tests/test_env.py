"""The environment is the locked one, and the install commands are what they say (make -n, no install)."""

from __future__ import annotations

import shlex
import subprocess

from conftest import REPO_ROOT
from diet.lockfile import compare, installed_versions, locked_pins
from experiments.check_env import main

LOCKS = [REPO_ROOT / "requirements" / "lock.txt", REPO_ROOT / "requirements" / "lock-nodeps.txt"]


def test_lock_pins_follow_markers_and_mismatches_are_named(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("# made by hand for this test\n"
                    "alpha==1.0 \\\n    --hash=sha256:00\n    # via diet\n"
                    "beta==2.0 ; python_full_version < '3.0' \\\n    --hash=sha256:11\n"
                    "beta==3.0 ; python_full_version >= '3.0' \\\n    --hash=sha256:22\n"
                    "Gamma_Pkg==0.1\n")
    pins = locked_pins(lock)
    assert pins == {"alpha": "1.0", "beta": "3.0", "gamma-pkg": "0.1"}
    problems, beside = compare(pins, {"alpha": "1.0", "beta": "2.0", "torch": "2.13.0+cpu", "extra": "9"})
    assert problems == ["beta: locked 3.0, installed 2.0", "gamma-pkg: locked 0.1, installed nothing"]
    assert beside == ["extra==9"]  # torch is installed on its own, outside the lock


def test_this_environment_is_the_committed_lock(capsys):
    """make install (and so CI) installs exactly requirements/lock*.txt: every locked version, nothing else
    but torch, diet and the installers."""
    assert main([arg for lock in LOCKS for arg in ("--lock", str(lock))]) == 0, capsys.readouterr().err
    pins = {name: version for lock in LOCKS for name, version in locked_pins(lock).items()}
    assert {"transformers", "lm-eval", "datasets", "pandas", "numpy", "uv"} <= set(pins)
    assert "torch" not in pins and installed_versions()["torch"].startswith("2.13.0")


def make_dry_run(*arguments: str) -> list[str]:
    result = subprocess.run(["make", "-n", "install", "VENV=/nonexistent-venv", *arguments], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True)
    return result.stdout.splitlines()


def torch_install(lines: list[str]) -> list[str]:
    [line] = [line for line in lines if "pip install" in line and "torch==" in line]
    words = shlex.split(line.split("&&")[0].strip().rstrip("\\").strip())
    return words[words.index("install"):]


def test_make_install_passes_the_torch_index_as_an_option_not_a_requirement():
    cuda = "https://download.pytorch.org/whl/cu126"
    assert torch_install(make_dry_run(f"TORCH_INDEX={cuda}")) == ["install", "-q", "--index-url", cuda, "torch==2.13.0"]
    assert torch_install(make_dry_run()) == ["install", "-q", "torch==2.13.0"]
    assert torch_install(make_dry_run("TORCH_VERSION=2.14.1")) == ["install", "-q", "torch==2.14.1"]
    lines = make_dry_run()
    assert any("--require-hashes -r requirements/lock.txt" in line for line in lines)
    assert any("experiments.check_env" in line for line in lines)


def test_make_gpu_check_never_installs():
    """A GPU machine keeps the CUDA build it was installed with: gpu-check checks for CUDA and runs the check."""
    result = subprocess.run(["make", "-n", "gpu-check", "VENV=/nonexistent-venv"], cwd=REPO_ROOT, capture_output=True,
                            text=True, check=True)
    assert "pip" not in result.stdout and "torch.cuda.is_available()" in result.stdout
    assert "benchmarks/gpu_check.py --device cuda" in result.stdout
