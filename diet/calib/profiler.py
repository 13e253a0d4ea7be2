"""Activation profiler: forward hooks accumulate per-dimension running sums in float64.

One pass collects, per decoder layer: the MLP intermediate activation (input of down_proj), the MLP
input (input of gate/up_proj), the attention output before o_proj (grouped by head later), the
residual stream (layer output) and the cosine between each layer's input and output (ShortGPT's
Block Influence). Per dimension it keeps signed sums, absolute sums and squared sums, so means,
variances (FLAP) and norms (Wanda) all derive from one cached pass. Only non-padding tokens count;
memory does not grow with the number of tokens.
"""

from __future__ import annotations

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

# input of down_proj, input of gate/up_proj, input of o_proj, decoder layer output
SITES = ("mlp", "mlp_in", "attn", "hidden")


@dataclass
class ActivationProfile:
    """Per-site, per-layer running sums over `n_tokens` non-padding tokens."""

    n_samples: int = 0
    n_tokens: int = 0
    sum_abs: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    sum_sq: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    sum: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    block_cos: list[float] = field(default_factory=list)  # per layer: sum over tokens of cos(in, out)

    def to_state(self) -> dict:
        def copy(sums: dict[str, list[torch.Tensor]]) -> dict[str, list[torch.Tensor]]:
            return {k: [t.clone() for t in v] for k, v in sums.items()}

        return {
            "n_samples": self.n_samples,
            "n_tokens": self.n_tokens,
            "sum_abs": copy(self.sum_abs),
            "sum_sq": copy(self.sum_sq),
            "sum": copy(self.sum),
            "block_cos": torch.tensor(self.block_cos, dtype=torch.float64),
        }

    @classmethod
    def from_state(cls, state: dict) -> "ActivationProfile":
        return cls(
            state["n_samples"], state["n_tokens"], state["sum_abs"], state["sum_sq"], state["sum"],
            [float(x) for x in state["block_cos"]],
        )

    @classmethod
    def pooled(cls, profiles: Sequence["ActivationProfile"]) -> "ActivationProfile":
        """The profile of all calibration tokens together (task-agnostic baselines)."""
        first = profiles[0]

        def add(field_name: str) -> dict[str, list[torch.Tensor]]:
            return {
                site: [sum(getattr(p, field_name)[site][i] for p in profiles) for i in range(len(layers))]
                for site, layers in getattr(first, field_name).items()
            }

        return cls(
            n_samples=sum(p.n_samples for p in profiles),
            n_tokens=sum(p.n_tokens for p in profiles),
            sum_abs=add("sum_abs"),
            sum_sq=add("sum_sq"),
            sum=add("sum"),
            block_cos=[sum(values) for values in zip(*(p.block_cos for p in profiles))],
        )

    def mean(self, site: str) -> list[torch.Tensor]:
        """Per-dimension signed mean over tokens."""
        return [total / max(self.n_tokens, 1) for total in self.sum[site]]

    def variance(self, site: str) -> list[torch.Tensor]:
        """Per-dimension variance over tokens (population), E[a^2] - E[a]^2, clamped at 0."""
        n = max(self.n_tokens, 1)
        return [(sq / n - (s / n) ** 2).clamp(min=0) for sq, s in zip(self.sum_sq[site], self.sum[site])]

    def block_influence(self) -> list[float]:
        """ShortGPT's Block Influence per layer: 1 - mean cosine(layer input, layer output)."""
        return [1.0 - total / max(self.n_tokens, 1) for total in self.block_cos]

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


class _StopForward(Exception):
    """Raised after the last profiled layer: the rest of the forward pass is not needed."""


class _Accumulator:
    """Owns the hooks; `token_mask` is set before each forward so hooks skip padding.

    `layers`: the decoder layers to profile (default all; the others' sums stay None)."""

    def __init__(self, model: nn.Module, layers: Sequence[int] | None = None) -> None:
        self.adapter = adapter_for(model)
        self.layers = list(range(self.adapter.num_layers())) if layers is None else list(layers)
        self.profile = ActivationProfile()
        self.token_mask: torch.Tensor | None = None  # on the model's device, set once per batch
        self.all_real = False  # no padding in the current batch: skip the token selection
        self.handles: list = []
        # the batch's finiteness checks, read back once per batch (end_batch): no host sync inside a hook
        self.checks: list[tuple[str, int, torch.Tensor]] = []
        layers = self.adapter.num_layers()
        for site in SITES:
            for sums in (self.profile.sum_abs, self.profile.sum_sq, self.profile.sum):
                sums[site] = [None] * layers  # type: ignore[list-item]
        # running sums live on the activations' device (float64) until finish(): cos sums too
        self.cosine: list[torch.Tensor | None] = [None] * layers

    def _add(self, site: str, layer: int, activation: torch.Tensor) -> None:
        rows = activation.detach().reshape(-1, activation.shape[-1])
        if not self.all_real:
            # select, not multiply by the mask: padding may hold NaN and NaN * 0 is NaN
            rows = rows[self.token_mask.to(rows.device).reshape(-1)]
        if rows.dtype not in (torch.float32, torch.float64):
            rows = rows.float()  # half-precision sums would lose the small channels
        # Reductions over the token axis of a contiguous (tokens, dims) block are vectorised row adds
        # (torch.linalg.vector_norm along dim 0 was 10x slower here); one batch is summed in the
        # activation's precision, batches accumulate in float64.
        batch_sums = (
            (self.profile.sum, rows.sum(dim=0)),
            (self.profile.sum_abs, rows.abs().sum(dim=0)),
            (self.profile.sum_sq, rows.square().sum(dim=0)),
        )
        # any NaN/inf activation makes its channel's sum of squares non-finite (checked in end_batch)
        self.checks.append((site, layer, torch.isfinite(batch_sums[2][1]).all()))
        for sums, batch_sum in batch_sums:
            total = batch_sum.to(torch.float64)
            sums[site][layer] = total if sums[site][layer] is None else sums[site][layer] + total

    def _add_cosine(self, layer: int, before: torch.Tensor, after: torch.Tensor) -> None:
        cosine = torch.nn.functional.cosine_similarity(before.float(), after.float(), dim=-1)
        keep = self.token_mask.to(cosine.device)
        total = cosine.masked_fill(~keep, 0).sum(dtype=torch.float64)
        self.cosine[layer] = total if self.cosine[layer] is None else self.cosine[layer] + total

    def end_batch(self) -> None:
        """One host read per batch: every finiteness flag of the batch at once; the first failing one is named."""
        if not self.checks:
            return
        flags = torch.stack([flag.to("cpu") for *_, flag in self.checks]).tolist()
        failed = [(site, layer) for (site, layer, _), ok in zip(self.checks, flags) if not ok]
        self.checks.clear()
        if failed:
            site, layer = failed[0]
            raise FloatingPointError(
                f"non-finite activation at layer {layer} ({site}) during profiling: "
                f"check model.dtype (bfloat16/float16 overflow?) and the inputs"
            )

    def finish(self) -> ActivationProfile:
        """The profile with its sums moved to the host (float64), once, at the end."""
        for sums in (self.profile.sum_abs, self.profile.sum_sq, self.profile.sum):
            for site in sums:
                sums[site] = [None if t is None else t.to("cpu") for t in sums[site]]  # type: ignore[misc]
        self.profile.block_cos = [0.0 if t is None else float(t) for t in self.cosine]
        return self.profile

    def attach(self, stop_after: int | None = None) -> None:
        for index in self.layers:
            layer, mlp, attn = self.adapter.layers()[index], self.adapter.mlp(index), self.adapter.attention(index)
            self.handles.append(mlp.down.register_forward_pre_hook(self._input_hook("mlp", index)))
            self.handles.append(mlp.gate.register_forward_pre_hook(self._input_hook("mlp_in", index)))
            self.handles.append(attn.o.register_forward_pre_hook(self._input_hook("attn", index)))
            self.handles.append(layer.register_forward_hook(self._layer_hook(index), with_kwargs=True))
        if stop_after is not None:  # registered last, so it runs after that layer's profiling hook
            self.handles.append(self.adapter.layers()[stop_after].register_forward_hook(self._stop_hook))

    @staticmethod
    def _stop_hook(module, args, output):
        raise _StopForward

    def _input_hook(self, site: str, layer: int):
        def hook(module, args):
            self._add(site, layer, args[0])

        return hook

    def _layer_hook(self, layer: int):
        def hook(module, args, kwargs, output):
            after = output[0] if isinstance(output, tuple) else output
            before = args[0] if args else kwargs["hidden_states"]
            self._add("hidden", layer, after)
            self._add_cosine(layer, before, after)

        return hook

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def length_sorted_batches(sequences: Sequence[Sequence[int]], batch_size: int) -> Iterator[list[int]]:
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
    layers: Sequence[int] | None = None,
    exclude_first: bool = False,
) -> ActivationProfile:
    """Run the model over token sequences and return the per-dimension running sums.

    `layers`: profile only these decoder layers; the forward pass stops after the last of them.
    `exclude_first`: leave each sequence's position 0 (the BOS, where one is prepended) out of every
    statistic; it still runs through the model, so later positions see it as usual."""
    if not sequences:
        raise DietConfigError("no calibration sequences to profile")
    device = next(model.parameters()).device
    accumulator = _Accumulator(model, layers)
    backbone = accumulator.adapter.backbone()
    accumulator.attach(stop_after=None if layers is None else max(layers))
    try:
        for batch in tqdm(list(length_sorted_batches(sequences, batch_size)), desc=desc, leave=False):
            ids, mask, positions = pad_batch([sequences[i] for i in batch], pad_id, padding_side)
            counted = mask.bool() & (positions != 0) if exclude_first else mask.bool()
            accumulator.token_mask = counted.to(device)  # once per batch, not once per hook
            accumulator.all_real = bool(counted.all())
            try:
                backbone(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    position_ids=positions.to(device),
                    use_cache=False,
                )
            except _StopForward:
                pass
            accumulator.end_batch()
            accumulator.profile.n_tokens += int(counted.sum())
            accumulator.profile.n_samples += len(batch)
    finally:
        accumulator.detach()
    return accumulator.finish()
