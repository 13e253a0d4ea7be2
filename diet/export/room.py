"""Room on disk for a saved model. Checked once the model is loaded (the dense weights bound any export:
pruning and padding never make a tensor larger) and again, exactly, before writing, so a full disk is a
one-line error naming the folder instead of a half-written folder or a silent fallback to another format."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from diet.errors import NoRoomError

# Beyond the weights: tokenizer files (Gemma's tokenizer.json alone is ~33 MB), config, card, filesystem slack.
MARGIN_BYTES = 256 << 20


def state_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes the tensors take on disk, a storage shared by several (a tied embedding and head) counted once,
    as safetensors writes it."""
    seen: dict[tuple[int, torch.device], int] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), tensor.device)
        seen[key] = max(seen.get(key, 0), tensor.numel() * tensor.element_size())
    return sum(seen.values())


def model_bytes(model: nn.Module) -> int:
    return state_bytes(model.state_dict().values())


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that `path` (or its nearest existing parent) is on."""
    folder = Path(path).absolute()
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def readable(size: int) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def check_room(path: Path, needed: int) -> None:
    """Raise NoRoomError when `path`'s filesystem has less than `needed` bytes plus the margin free."""
    free = free_bytes(path)
    if needed + MARGIN_BYTES > free:
        raise NoRoomError(f"save_model={str(path)!r}: the pruned model needs about {readable(needed)} "
                          f"(+{MARGIN_BYTES >> 20} MiB for tokenizer and card) and only {readable(free)} is "
                          f"free there: free some space or choose a folder on another disk")


def is_io_failure(error: BaseException) -> bool:
    """An error of the disk rather than of transformers' validation: safetensors reports a failed write as
    SafetensorError("... I/O error: ... (os error N)"), not as OSError."""
    return isinstance(error, OSError) or "os error" in str(error)
