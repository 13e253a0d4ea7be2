"""Shared test helpers: the real Hydra configs, the real offline data folder, an isolated cache."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT.parent / "shared" / "data"  # never copied into the repository


def compose_config(overrides: list[str]) -> dict[str, Any]:
    """The resolved run config exactly as `python -m experiments.run <overrides>` builds it."""
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def left_padded_batch() -> dict[str, torch.Tensor]:
    """3 rows of 16 random byte-tokenizer ids, two of them left-padded (fixed seed)."""
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(4, 260, (3, 16), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :5] = 0  # left padding
    attention_mask[2, :1] = 0
    input_ids[attention_mask == 0] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


EPS32 = torch.finfo(torch.float32).eps  # 1.19e-7: the spacing of float32 numbers at 1.0


def fp32_bound(reference: torch.Tensor | float, depth: int, length: int) -> float:
    """The largest difference float32 rounding alone explains between two computations of `reference`
    that agree in exact arithmetic but sum in another order or shape (sliced vs zeroed weights,
    packed vs padded batches): max|reference| * eps * sqrt(length) * depth.

    - sqrt(length) * eps: a sum of `length` float32 products, computed in another order, moves by
      `length` roundings of at most eps/2 of the running magnitude each. Round-to-nearest errors have
      random signs, so they grow like a random walk, sqrt(length) * eps relative to the terms' magnitude
      (Higham & Mary 2019, probabilistic error analysis); the worst case length * eps needs every rounding
      to go the same way and is never approached by real data.
    - depth: each of `depth` sequential stages (decoder layers) adds its own such error to the residual
      stream; they add at most linearly (no cancellation assumed), and later stages carry earlier errors
      along at the scale of the values themselves (RMSNorm keeps magnitudes), hence max|reference|: an
      output near 0 inherits the errors of the hidden state it is computed from, like any other.
    No fudge factor: measured differences stay 10x (tiny model logits, ~3 eps of the largest) to 16-35x
    (Gemma-3 270M logits, 23-50 eps on two machines) below it, while a single wrong channel, head, token
    or attention mask exceeds it by 90x to 10^4x (the tests named *_catches_* and *wrong*)."""
    scale = float(torch.as_tensor(reference).abs().max())
    return scale * EPS32 * math.sqrt(length) * depth


def depth_and_length(model: torch.nn.Module) -> tuple[int, int]:
    """A decoder's rounding stages (its layers) and its longest sum in a layer (MLP, hidden or heads width)."""
    config = model.config
    longest = max(config.intermediate_size, config.hidden_size, config.num_attention_heads * config.head_dim)
    return config.num_hidden_layers, longest


def logits_bound(model: torch.nn.Module, reference: torch.Tensor) -> float:
    """fp32_bound for logits of `model` (pass the unpruned model: pruning keeps the config's widths)."""
    depth, length = depth_and_length(model)
    return fp32_bound(reference, depth=depth, length=length)


def loglikelihood_bound(logit_scale: float, depth: int, length: int, tokens: int) -> float:
    """fp32_bound for a request's loglikelihood: log_softmax moves each log-prob by at most twice the
    largest logit change (|d log p_i| <= |dz_i| + max_j |dz_j|), and a loglikelihood sums `tokens` of them."""
    return 2 * tokens * fp32_bound(logit_scale, depth, length)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """A fresh $DIET_CACHE (profiles, converted models) for one test."""
    path = tmp_path / "cache"
    monkeypatch.setenv("DIET_CACHE", str(path))
    return path


@pytest.fixture(autouse=True)
def offline_data(monkeypatch) -> Path:
    monkeypatch.setenv("DIET_DATA_DIR", str(DATA_DIR))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return DATA_DIR
