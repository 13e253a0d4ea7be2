"""How far float rounding alone can move a result: the bounds every "same up to rounding" check uses
(the fast evaluation backend vs stock, sliced vs zeroed weights, a zero-padded export vs the pruned model)."""

from __future__ import annotations

import math
from typing import Any

import torch

EPS32 = torch.finfo(torch.float32).eps  # 1.19e-7: the spacing of float32 numbers at 1.0
EPS_BF16 = torch.finfo(torch.bfloat16).eps  # 7.8e-3: bfloat16 keeps 8 significand bits


def eps_of(dtype: torch.dtype) -> float:
    """The rounding unit of the dtype a model computes in: its matmuls and residual stream round there.
    (Log-softmax and loglikelihood sums are float32 at least, whatever the model: diet.eval.evaluate.scoring_dtype.)"""
    return float(torch.finfo(dtype).eps)


def fp32_bound(reference: torch.Tensor | float, depth: int, length: int, eps: float = EPS32) -> float:
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
    return scale * eps * math.sqrt(length) * depth


def depth_and_length(model: Any) -> tuple[int, int]:
    """A decoder's rounding stages (its layers) and its longest sum in a layer (MLP, hidden or heads width)."""
    config = model.config
    longest = max(config.intermediate_size, config.hidden_size, config.num_attention_heads * config.head_dim)
    return config.num_hidden_layers, longest


def logits_bound(model: Any, reference: torch.Tensor) -> float:
    """fp32_bound for logits of `model` (pass the unpruned model: pruning keeps the config's widths)."""
    depth, length = depth_and_length(model)
    return fp32_bound(reference, depth=depth, length=length)


def loglikelihood_bound(logit_scale: float, depth: int, length: int, tokens: int, eps: float = EPS32) -> float:
    """fp32_bound for a request's loglikelihood: log_softmax moves each log-prob by at most twice the
    largest logit change (|d log p_i| <= |dz_i| + max_j |dz_j|), and a loglikelihood sums `tokens` of them.
    `eps`: the model's compute dtype (eps_of); the same derivation holds for bfloat16, whose logits differ
    between two computation orders by up to eps_bf16 * max|logit| * sqrt(length) * depth, while the
    float32 log-softmax and sum add only float32 rounding on top (negligible beside it)."""
    return 2 * tokens * fp32_bound(logit_scale, depth, length, eps=eps)
