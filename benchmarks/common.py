"""What every benchmark script shares: the machine description, model/task look-up, peak memory, output."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

from diet.run.memory import peak_rss_bytes, reset_peak_rss  # noqa: F401  (re-exported for the benchmarks)

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "results" / "benchmarks"
MIB = 1024 ** 2


def resolve_tasks(spec: str) -> list[str]:
    """A task set of conf/config.yaml, one task, or a comma-separated list."""
    from omegaconf import OmegaConf

    from diet.eval.tasks import resolve_task_names

    task_sets = OmegaConf.to_container(OmegaConf.load(REPO_ROOT / "conf" / "config.yaml").task_sets)
    return resolve_task_names(spec.split(",") if "," in spec else spec, task_sets)


def model_config(name: str, device: str) -> dict[str, Any]:
    """The conf/model/<name>.yaml entry, resolved, on `device`."""
    from omegaconf import OmegaConf

    path = REPO_ROOT / "conf" / "model" / f"{name}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise SystemExit(f"unknown model {name!r}: available {', '.join(available)}")
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    cfg["device"] = device
    return cfg


def local_data_dir() -> Path | None:
    """$DIET_DATA_DIR, else ../shared/data as the Makefile sets it; None when neither exists (online)."""
    from diet.paths import data_dir

    local = data_dir() or (REPO_ROOT.parent / "shared" / "data")
    return local if local.is_dir() else None


def machine() -> dict[str, Any]:
    """Hardware and library versions, and the load average: other processes may share the CPUs."""
    import lm_eval
    import torch
    import transformers

    cpu_model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "lm_eval": getattr(lm_eval, "__version__", None),
        "load_average_at_start": list(os.getloadavg()),
    }
    try:
        import psutil

        info["memory_total_bytes"] = psutil.virtual_memory().total
    except ImportError:
        pass
    return info


def machine_line(m: dict[str, Any]) -> str:
    return (
        f"Machine: {m['platform']}, {m['cpu']}, {m['cpu_count']} CPUs ({m['cpus_usable']} usable), "
        f"torch {m['torch']} ({m['torch_threads']} threads), transformers {m['transformers']}, "
        f"lm-eval {m['lm_eval']}; load average at start {', '.join(f'{x:.2f}' for x in m['load_average_at_start'])}."
    )


def run_worker_process(script: str, name: str, options: list[str], threads: int | None, out_dir: str | Path,
                       quiet: bool = False) -> dict[str, Any]:
    """Run `script --worker name` in its own process (so its peak memory is its own), offline, and
    return the JSON it writes."""
    import json
    import subprocess

    out = Path(out_dir) / f"{name}.json"
    command = [sys.executable, str(Path(script).resolve()), "--worker", name, "--worker-out", str(out), *options]
    if threads:
        command += ["--threads", str(threads)]
    print(f"[{name}] running ...", flush=True)
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **os.environ}
    subprocess.run(command, check=True, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL if quiet else None)
    return json.loads(out.read_text())


def command_line(script: str, argv: list[str] | None) -> str:
    import shlex

    return f"python benchmarks/{script} " + shlex.join(argv if argv is not None else sys.argv[1:])


def write_report(name: str, report: dict[str, Any], text: str, out_dir: str | Path) -> None:
    """results/benchmarks/<name>.json and .md, written atomically."""
    from diet.io import atomic_write_json, atomic_write_text

    out = Path(out_dir)
    atomic_write_json(out / f"{name}.json", report)
    atomic_write_text(out / f"{name}.md", text)
    print(f"wrote {out / (name + '.json')} and {out / (name + '.md')}")
