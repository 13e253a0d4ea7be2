"""Where a model runs and in which precision: `model.device` / `model.dtype` resolved from `auto`.

A leaf module: the loader resolves them to load, the identity resolves them to hash (so a CPU float32 cell
and a GPU bfloat16 cell of one `dtype: auto` config are two cells), preflight refuses a device that is not
there before any model is loaded.
"""

from __future__ import annotations

import os

import torch

from diet.errors import DietConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> str:
    """`auto` = cuda when torch sees a CUDA device, else cpu; anything else as written."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """`auto` = bfloat16 on a GPU, float32 on the CPU; else one of DTYPES."""
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise DietConfigError(f"model.dtype={dtype!r} is not allowed: use auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def resolved_precision(model: dict) -> tuple[str, str]:
    """(device, dtype name) a `model` config section resolves to on this machine."""
    device = resolve_device(str(model.get("device") or "auto"))
    return device, dtype_name(resolve_dtype(str(model.get("dtype") or "auto"), device))


def check_device(device: str) -> None:
    """A CUDA device asked for must be visible, or the run stops here, in seconds (a node whose GPU is hidden
    would otherwise run a 9B model on the CPU until its time limit)."""
    if not str(device).startswith("cuda"):
        return
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise DietConfigError(
            f"model.device={device!r} but torch {torch.__version__} sees no CUDA device "
            f"(CUDA_VISIBLE_DEVICES={visible!r}, torch CUDA build: {torch.version.cuda or 'none, a CPU build'}): "
            f"run on a GPU node, install a CUDA build (make install TORCH_INDEX=...), or set model.device=cpu")
    index = str(device).partition(":")[2]
    if index and int(index) >= torch.cuda.device_count():
        raise DietConfigError(f"model.device={device!r} but only {torch.cuda.device_count()} CUDA device(s) are visible")
