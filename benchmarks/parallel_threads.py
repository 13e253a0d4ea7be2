"""Two cells one after the other vs two at once: does running cells in parallel pay on these cores?

Three schedules of the same two cells (`python -m experiments.run ...`, each in its own process, records
in a temporary folder, force=true so nothing is skipped), measured side by side in one run:

  sequential      A then B, each with the default threads (all usable cores)
  parallel        A and B at once, each with cores // 2 threads (what `threads: null` gives a
                  two-job launcher such as hydra/launcher=local_parallel)
  oversubscribed  A and B at once, each with all cores (what two plain runs side by side did before
                  the `threads` option: torch's default thread count in both)

It prints the throughput of each schedule relative to sequential (cells per second, whole processes
including model loading). With the fix, `parallel` must not be slower than `sequential`.

    python benchmarks/parallel_threads.py --model gemma3_270m --tasks arc_easy --limit 100
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO_ROOT, RESULTS_DIR, command_line, machine, machine_line, write_report  # noqa: E402
from diet.run.threads import usable_cores  # noqa: E402


def cell_command(args: argparse.Namespace, cell: int, threads: int, results_dir: Path) -> list[str]:
    # two distinct cells: the same evaluation at two document seeds (same cost, different documents)
    return [sys.executable, "-m", "experiments.run", f"model={args.model}", "method=dense", f"tasks={args.tasks}",
            f"eval.limit={args.limit}", f"eval.docs_seed={cell}", f"threads={threads}", f"results_dir={results_dir}",
            "force=true", "wandb.mode=disabled", "hydra.run.dir=" + str(results_dir / f"hydra{cell}")]


def run_schedule(args: argparse.Namespace, at_once: bool, threads: int, work: Path) -> float:
    """Wall seconds to finish both cells."""
    start = time.perf_counter()
    commands = [cell_command(args, cell, threads, work) for cell in (0, 1)]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if at_once:
        processes = [subprocess.Popen(command, cwd=REPO_ROOT, **quiet) for command in commands]
        codes = [process.wait() for process in processes]
    else:
        codes = [subprocess.run(command, cwd=REPO_ROOT, **quiet).returncode for command in commands]
    if any(codes):
        raise SystemExit(f"a cell failed (exit codes {codes}): rerun one by hand to see why: {' '.join(commands[0])}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma3_270m")
    parser.add_argument("--tasks", default="arc_easy")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--cores", type=int, default=None, help="cores to plan for (default: the usable ones)")
    parser.add_argument("--out", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)
    cores = args.cores or usable_cores()
    schedules = {  # name: (at once, threads per cell)
        "sequential": (False, cores),
        "parallel": (True, max(1, cores // 2)),
        "oversubscribed": (True, cores),
    }
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        run_schedule(args, False, cores, Path(tmp) / "warmup")  # converted model and data files cached
        for name, (at_once, threads) in schedules.items():
            print(f"[{name}] 2 cells, {'at once' if at_once else 'one after the other'}, {threads} thread(s) each",
                  flush=True)
            seconds[name] = run_schedule(args, at_once, threads, Path(tmp) / name)
            print(f"[{name}] {seconds[name]:.1f} s", flush=True)
    ratios = {name: seconds["sequential"] / value for name, value in seconds.items()}
    report = {"command": command_line("parallel_threads.py", argv), "machine": machine(), "cores": cores,
              "cells": {"model": args.model, "tasks": args.tasks, "limit": args.limit},
              "seconds": seconds, "throughput_vs_sequential": ratios}
    lines = [
        "# Two cells: one after the other vs at once",
        "",
        f"Command: `{report['command']}`",
        "",
        machine_line(report["machine"]),
        "",
        f"Two dense cells ({args.model}, {args.tasks}, {args.limit} documents each), whole processes.",
        "",
        "| schedule | threads per cell | wall seconds | throughput vs sequential |",
        "|---|---:|---:|---:|",
        *[f"| {name} | {schedules[name][1]} | {seconds[name]:.1f} | {ratios[name]:.2f}x |" for name in schedules],
    ]
    write_report("parallel_threads", report, "\n".join(lines) + "\n", args.out)
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
