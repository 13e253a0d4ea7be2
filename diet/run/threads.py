"""torch's intra-op threads per run: the cores this process may use, shared by the cells run at once.

Two processes each with torch's default thread count on the same cores thrash (two long cells side by
side ran 5-10x slower than alone; benchmarks/parallel_threads.py on two short cells: 0.88x the throughput
of running them one after the other, against 1.32x with one thread each), so a launcher that runs
`parallel_jobs` cells at once gives each cores // parallel_jobs threads, and an explicit `threads`
that would oversubscribe the cores is refused before any model is loaded.
"""

from __future__ import annotations

import os
from typing import Any

from diet.errors import DietConfigError


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> int | None:
    """Whole cores the cgroup's CPU quota allows (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` /
    `cpu.cfs_period_us`), at least 1; None without a quota. A container or Slurm job may see every core in its
    affinity mask and still be throttled to a few: threads beyond the quota only oversubscribe."""
    import math
    from pathlib import Path

    base = Path(root)
    try:
        fields = (base / "cpu.max").read_text().split()
        if fields and fields[0] != "max":
            return max(1, math.floor(int(fields[0]) / int(fields[1])))
        if fields:
            return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int((base / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((base / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return max(1, math.floor(quota / period)) if quota > 0 and period > 0 else None


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity (taskset, cpusets), capped by Slurm's
    SLURM_CPUS_PER_TASK and by the cgroup's CPU quota where they are set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    limits = [cores, int(slurm) if slurm.isdigit() and int(slurm) > 0 else None, cgroup_cpu_quota()]
    return min(limit for limit in limits if limit is not None)


def resolve_threads(threads: Any, parallel_jobs: int = 1, cores: int | None = None) -> int:
    """`threads` (null = cores // parallel_jobs, at least 1), checked against the cores."""
    cores = usable_cores() if cores is None else cores
    jobs = max(1, int(parallel_jobs))
    if threads is None:
        return max(1, cores // jobs)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise DietConfigError(f"threads={threads!r} is not allowed: use an integer >= 1 or null (= cores / parallel jobs)")
    if threads * jobs > cores:
        raise DietConfigError(
            f"threads={threads} x {jobs} parallel job(s) = {threads * jobs} threads on {cores} usable core(s): "
            f"oversubscribed runs are several times slower; use threads <= {max(1, cores // jobs)} or null"
        )
    return threads


def apply_threads(threads: Any, parallel_jobs: int = 1) -> dict[str, int]:
    """Set torch's intra-op threads; returns what the record stores."""
    import torch

    chosen = resolve_threads(threads, parallel_jobs)
    torch.set_num_threads(chosen)
    return {"threads": torch.get_num_threads(), "usable_cores": usable_cores(), "parallel_jobs": max(1, int(parallel_jobs))}
