"""Activation profiler: forward hooks accumulate per-dimension running sums in float64.

One pass collects, per decoder layer: the MLP intermediate activation (input of down_proj), the
attention output before o_proj (grouped by head later) and the residual stream (layer output).
Only non-padding tokens count; memory does not grow with the number of tokens.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from diet.errors import DietConfigError
from diet.models.adapters import adapter_for
from diet.registry import Registry

log = logging.getLogger(__name__)

SITES = ("mlp", "attn", "hidden")  # input of down_proj, input of o_proj, decoder layer output


@dataclass
class ActivationProfile:
    """Per-site, per-layer running sums over `n_tokens` non-padding tokens."""

    n_samples: int = 0
    n_tokens: int = 0
    sum_abs: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    sum_sq: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    def to_state(self) -> dict:
        return {
            "n_samples": self.n_samples,
            "n_tokens": self.n_tokens,
            "sum_abs": {k: [t.clone() for t in v] for k, v in self.sum_abs.items()},
            "sum_sq": {k: [t.clone() for t in v] for k, v in self.sum_sq.items()},
        }

    @classmethod
    def from_state(cls, state: dict) -> "ActivationProfile":
        return cls(state["n_samples"], state["n_tokens"], state["sum_abs"], state["sum_sq"])

    def scores(self, site: str, stat: str) -> list[torch.Tensor]:
        """Per-layer per-dimension statistic for a site (float64)."""
        return [STATS.get(stat)(a, s, self.n_tokens) for a, s in zip(self.sum_abs[site], self.sum_sq[site])]

    def head_scores(self, stat: str, head_dim: int) -> list[torch.Tensor]:
        """Per-layer per-query-head statistic: the mean of the head's o_proj input dimensions."""
        return [layer.view(-1, head_dim).mean(dim=1) for layer in self.scores("attn", stat)]


STATS: Registry[Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]] = Registry("statistic")
STATS.register("mean_abs")(lambda sum_abs, sum_sq, n: sum_abs / max(n, 1))
STATS.register("mean_sq")(lambda sum_abs, sum_sq, n: sum_sq / max(n, 1))
STATS.register("l2")(lambda sum_abs, sum_sq, n: sum_sq.sqrt())


class _Accumulator:
    """Owns the hooks; `token_mask` is set before each forward so hooks skip padding."""

    def __init__(self, model: nn.Module) -> None:
        self.adapter = adapter_for(model)
        self.profile = ActivationProfile()
        self.token_mask: torch.Tensor | None = None
        self.handles: list = []
        for site in SITES:
            self.profile.sum_abs[site] = [None] * self.adapter.num_layers()  # type: ignore[list-item]
            self.profile.sum_sq[site] = [None] * self.adapter.num_layers()  # type: ignore[list-item]

    def _add(self, site: str, layer: int, activation: torch.Tensor) -> None:
        keep = self.token_mask.to(activation.device).unsqueeze(-1)
        values = activation.detach().masked_fill(~keep, 0)  # where(), not *: NaN * 0 is NaN
        if not torch.isfinite(values).all():
            raise FloatingPointError(
                f"non-finite activation at layer {layer} ({site}) during profiling: "
                f"check model.dtype (bfloat16/float16 overflow?) and the inputs"
            )
        abs_sum = values.abs().sum(dim=(0, 1), dtype=torch.float64).cpu()
        sq_sum = values.float().square().sum(dim=(0, 1), dtype=torch.float64).cpu()
        store_abs, store_sq = self.profile.sum_abs[site], self.profile.sum_sq[site]
        store_abs[layer] = abs_sum if store_abs[layer] is None else store_abs[layer] + abs_sum
        store_sq[layer] = sq_sum if store_sq[layer] is None else store_sq[layer] + sq_sum

    def attach(self) -> None:
        for index, layer in enumerate(self.adapter.layers()):
            mlp, attn = self.adapter.mlp(index), self.adapter.attention(index)
            self.handles.append(mlp.down.register_forward_pre_hook(self._input_hook("mlp", index)))
            self.handles.append(attn.o.register_forward_pre_hook(self._input_hook("attn", index)))
            self.handles.append(layer.register_forward_hook(self._output_hook("hidden", index)))

    def _input_hook(self, site: str, layer: int):
        def hook(module, args):
            self._add(site, layer, args[0])

        return hook

    def _output_hook(self, site: str, layer: int):
        def hook(module, args, output):
            self._add(site, layer, output[0] if isinstance(output, tuple) else output)

        return hook

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def _batches(sequences: Sequence[Sequence[int]], batch_size: int) -> Iterator[list[int]]:
    # Longest first: less padding, and an out-of-memory error shows up on the first batch.
    order = sorted(range(len(sequences)), key=lambda i: (-len(sequences[i]), i))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, side: str = "right") -> tuple[torch.Tensor, ...]:
    """input_ids, attention_mask and position_ids (positions count real tokens only)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, span] = torch.tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids, mask, positions


@torch.no_grad()
def profile_activations(
    model: nn.Module,
    sequences: Sequence[Sequence[int]],
    batch_size: int = 8,
    pad_id: int = 0,
    padding_side: str = "right",
    desc: str = "profile",
) -> ActivationProfile:
    """Run the model over token sequences and return the per-dimension running sums."""
    if not sequences:
        raise DietConfigError("no calibration sequences to profile")
    device = next(model.parameters()).device
    accumulator = _Accumulator(model)
    backbone = accumulator.adapter.backbone()
    accumulator.attach()
    try:
        for batch in tqdm(list(_batches(sequences, batch_size)), desc=desc, leave=False):
            ids, mask, positions = pad_batch([sequences[i] for i in batch], pad_id, padding_side)
            accumulator.token_mask = mask.bool()
            backbone(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                use_cache=False,
            )
            accumulator.profile.n_tokens += int(mask.sum())
            accumulator.profile.n_samples += len(batch)
    finally:
        accumulator.detach()
    return accumulator.profile
