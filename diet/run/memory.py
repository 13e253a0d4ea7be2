"""Peak memory of a stretch of work: CUDA's max allocated on a GPU, the process's peak resident set on CPU."""

from __future__ import annotations

import resource
from pathlib import Path


def reset_peak_rss() -> bool:
    """Reset this process's peak resident set (Linux: VmHWM); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def proc_kib_field(path: str, key: str) -> int | None:
    """A `Key:   <n> kB` line of a /proc file, in bytes; None where the file or the line is missing."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """Peak resident set since the last reset_peak_rss (VmHWM), else since the process started."""
    peak = proc_kib_field("/proc/self/status", "VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def available_bytes(device: str) -> int | None:
    """Free memory where the work would go: CUDA's free bytes on a GPU, MemAvailable on the CPU (None: unknown)."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    return proc_kib_field("/proc/meminfo", "MemAvailable")


def _on_cuda(device: str) -> bool:
    import torch

    return (device.startswith("cuda") or device == "auto") and torch.cuda.is_available()


def reset_peak(device: str) -> None:
    """Start measuring: `device` as in model.device (cuda*, cpu, or auto = cuda when there is one)."""
    if _on_cuda(device):
        import torch

        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak_rss()


def peak_bytes(device: str) -> int:
    if _on_cuda(device):
        import torch

        return int(torch.cuda.max_memory_allocated())
    return peak_rss_bytes()
