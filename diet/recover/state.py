"""A recovery's progress on disk: adapter weights, optimizer and schedule state, torch's random state and the
curves so far, written atomically every `recover.checkpoint_every` steps so a cut-off run resumes where it
stopped. A checkpoint is used only by the run it belongs to (`fingerprint`: the pruned weights and the plan);
any other is left alone and training starts over."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from diet.io import atomic_write

log = logging.getLogger(__name__)
FORMAT = 1


@dataclass
class TrainingState:
    fingerprint: str
    val_loss_before: float
    step: int = 0
    tokens_seen: int = 0
    seconds: float = 0.0
    train_curve: list[list[float]] = field(default_factory=list)
    val_curve: list[list[float]] = field(default_factory=list)
    saved: dict[str, Any] = field(default_factory=dict)  # what restore() puts back (adapter, optimizer, ...)

    def restore(self, model: torch.nn.Module, optimizer: Any, schedule: Any) -> None:
        """Put the saved adapter weights, optimizer, schedule and random state back."""
        trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
        missing = sorted(set(trainable) ^ set(self.saved["adapter"]))
        if missing:
            raise RuntimeError(f"the recovery checkpoint's adapters do not match this model's: {missing[:3]}")
        with torch.no_grad():
            for name, tensor in self.saved["adapter"].items():
                trainable[name].copy_(tensor)
        optimizer.load_state_dict(self.saved["optimizer"])
        schedule.load_state_dict(self.saved["schedule"])
        torch.set_rng_state(self.saved["rng"])
        if self.saved.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.saved["cuda_rng"])


def save_state(path: Path, state: TrainingState, model: torch.nn.Module, optimizer: Any, schedule: Any) -> None:
    payload = {
        "format": FORMAT,
        **{key: value for key, value in state.__dict__.items() if key != "saved"},
        "adapter": {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_state(path: Path, fingerprint: str) -> TrainingState | None:
    """The state a cut-off run of this recovery left at `path`, or None (no file, or another run's)."""
    if not path.is_file():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("format") != FORMAT or payload.get("fingerprint") != fingerprint:
        log.warning("recover: %s belongs to another run (other weights or options): starting over", path)
        return None
    fields = {key: payload[key] for key in ("fingerprint", "val_loss_before", "step", "tokens_seen", "seconds",
                                            "train_curve", "val_curve")}
    saved = {key: payload[key] for key in ("adapter", "optimizer", "schedule", "rng", "cuda_rng")}
    return TrainingState(**fields, saved=saved)
