"""`recover=...`: what recovery fine-tuning a cell asks for, checked before any model loads, and its identity.

`recover=none` (the default) leaves a cell exactly as it was: no `recover` key enters its identity, so every
record made before recovery existed keeps its hash. `recover=lora` (conf/recover/lora.yaml: LLM-Pruner's
`post_training.py` defaults) and `recover=lora_slicegpt` (SliceGPT's `run_finetuning.py` / paper defaults) bind
`LoraRecovery`; every option that can change the recovered weights enters the identity, with the text file by
its content and the run's seed (the window draw, the batch order and dropout).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from diet.bind import bind, check_names
from diet.calib.generic_text import layout_of
from diet.calib.sources import text_file
from diet.checks import FLAG, in_range, number_in, positive
from diet.errors import DietConfigError
from diet.io import content_sha256
from diet.recover.data import check_text_holds

NONE = "none"
KINDS = (NONE, "lora")
# options that change how recovery is computed or reported, never the recovered weights: left out of the identity
COMPUTATION_ONLY = ("checkpoint_every", "val_every", "dense_control")


def _betas(name: str, value: Any) -> None:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise DietConfigError(f"{name}={value!r} is not allowed: use two numbers in [0, 1), e.g. [0.9, 0.999]")
    for beta in value:
        number_in(name, beta, 0.0, 1.0, low_open=False, high_open=True)


def _positive_or_none(name: str, value: Any) -> None:
    if value is not None:
        number_in(name, value, 0.0, math.inf, low_open=True, high_open=True)


POSITIVE = in_range(0.0, math.inf, True, True)
NON_NEGATIVE = in_range(0.0, math.inf, False, True)
FRACTION = in_range(0.0, 1.0, False, True)


@dataclass(frozen=True)
class LoraRecovery:
    """LoRA (peft) on every linear projection of the decoder layers, AdamW with a linear warm-up and decay,
    merged into the weights at the end. Defaults: LLM-Pruner's post_training.py (r 8, alpha 16, dropout 0.05,
    lr 1e-4 as its README runs it, AdamW betas/decay of the HF Trainer, gradient norm clipped at 1), on CPU-sized
    data (1024 windows of 128 tokens of the C4 excerpt, not Alpaca-cleaned, which is not available here)."""

    name: str = "lora"
    rank: int = field(default=8, metadata=positive())
    alpha: float = field(default=16.0, metadata=POSITIVE)
    dropout: float = field(default=0.05, metadata=FRACTION)
    lr: float = field(default=1e-4, metadata=POSITIVE)
    weight_decay: float = field(default=0.0, metadata=NON_NEGATIVE)
    betas: list = field(default_factory=lambda: [0.9, 0.999], metadata={"check": _betas})
    warmup_fraction: float = field(default=0.06, metadata=FRACTION)
    max_grad_norm: float | None = field(default=1.0, metadata={"check": _positive_or_none})
    source: str = "c4"
    windows: int = field(default=1024, metadata=positive())
    window_length: int = field(default=128, metadata=positive())
    val_windows: int = field(default=64, metadata=positive())
    batch_size: int = field(default=8, metadata=positive())
    epochs: int = field(default=1, metadata=positive())
    val_every: int = field(default=32, metadata=positive())
    checkpoint_every: int = field(default=16, metadata=positive())
    dense_control: bool = field(default=False, metadata=FLAG)

    def __post_init__(self) -> None:
        # recover.alpha=16 and recover.alpha=16.0 are one recipe: numbers stored as floats, so one identity
        for name in ("alpha", "dropout", "lr", "weight_decay", "warmup_fraction", "max_grad_norm"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, float(value))
        object.__setattr__(self, "betas", [float(beta) for beta in self.betas])
        if self.name != "lora":
            raise DietConfigError(f"recover.name={self.name!r} is not allowed here: use recover=lora")
        if self.window_length < 2:
            raise DietConfigError(f"recover.window_length={self.window_length} is too short: use >= 2 (a BOS and "
                                  f"one text token)")

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.windows / self.batch_size)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


@dataclass(frozen=True)
class RecoveryPlan:
    """A cell's recovery: its options, the text (by content), the seed and whether windows start with BOS."""

    options: LoraRecovery
    file: Path
    sha256: str
    seed: int
    add_bos_token: bool

    def identity(self) -> dict[str, Any]:
        kept = {key: value for key, value in asdict(self.options).items()
                if key not in COMPUTATION_ONLY and key != "source"}
        return {**kept, "file_sha256": self.sha256, "layout": layout_of(self.file), "seed": self.seed,
                "add_bos_token": self.add_bos_token}

    def describe(self) -> str:
        o = self.options
        return (f"LoRA r={o.rank} alpha={o.alpha:g} dropout={o.dropout:g} lr={o.lr:g} on {o.windows} x "
                f"{o.window_length} tokens of {o.source}, {o.epochs} epoch(s), seed {self.seed}")


def recovery_plan(cfg: Mapping[str, Any], prunes: bool) -> RecoveryPlan | None:
    """The recovery a run config asks for (None: recover=none, or a stored config from before recovery); every
    bad value fails here, before any model loads. `prunes`: whether the cell's method prunes (dense does not:
    recovering it is a control, said with recover.dense_control=true)."""
    section = dict(cfg.get("recover") or {"name": NONE})
    name = section.get("name", NONE)
    if name not in KINDS:
        raise DietConfigError(f"recover={name!r} is not a recovery: use {' | '.join(KINDS)} (conf/recover/)")
    if name == NONE:
        check_names(_NoRecovery, section, "recover")
        return None
    options = bind(LoraRecovery, section, "recover")
    if not prunes and not options.dense_control:
        raise DietConfigError("recover=lora with method=dense tunes the unpruned model: that is the control of a "
                              "recovery study; say so with recover.dense_control=true")
    path = text_file(options.source, cfg, "recover.source")
    check_text_holds(path, options.windows, options.val_windows, options.window_length)
    return RecoveryPlan(options=options, file=path, sha256=content_sha256(path), seed=int(cfg["seed"]),
                        add_bos_token=bool(cfg["model"]["add_bos_token"]))


@dataclass(frozen=True)
class _NoRecovery:
    name: str = NONE
