"""Wanda-sp: structured Wanda, the baseline of FLAP (An et al. 2024), as FLAP's `lib/prune.py:prune_wanda_sp`.

Reference (CASIA-IVA-Lab/FLAP): layers are pruned one after the other; layer l is calibrated on the
outputs of layers 0..l-1 *already pruned*, and within a layer the attention and MLP statistics come from
one forward pass before either is pruned. With X the input of a projection over the calibration
tokens and WrappedGPT's scaler_row_c = sum_t x_tc^2 / n_samples (lib/layerwrapper.py),

    MLP channel j:  score_j = mean_i |W_down[i, j]| * sqrt(scaler_row_j)          (X = down_proj input)
    query head h:   score_h = sum_{c in h} mean_i |W_o[i, c]| * sqrt(scaler_row_c)   (X = o_proj input)

i.e. W_metric = |W| * sqrt(scaler_row) averaged over output rows, from the down (o) projection only:
no gate/up term. Each layer keeps its top channels (uniform sparsity); heads per KV group.

Calibration: `calib.source` — `c4` is the reference protocol (get_loaders("c4", nsamples=128,
seqlen=model.seqlen=128)); `tasks` feeds DIET's own task samples (same-tokens comparison).

Named deviations (tests/test_baselines.py checks each):
- removed count: every method removes the same count per layer, diet.select.masks.keep_count (round half up:
  410 of 2048 at 20%); the reference removes floor(0.2 * 2048) = 409 (`sort(W_metric)[int(numel * ratio)]`).
- heads: only with dims=heads / mlp+heads (the reference always prunes both, at one ratio); grouped-query
  attention keeps every KV head and the same number of query heads per group (the reference assumes
  multi-head attention with head_dim 128).
- a pruned layer is zeroed on the fly (its removed channels' down_proj inputs and heads' o_proj inputs
  are multiplied by 0 in the calibration passes), which is exactly what slicing them out computes; the
  shared pruner slices afterwards. The passes replay buffered layer inputs (diet/calib/sequential.py) as the
  reference's inps/outs buffers do.
- BOS: generic windows start with the BOS the model is evaluated with (diet/calib/generic_text.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from diet.calib.profiler import ActivationProfile
from diet.calib.sequential import sequential_profiles
from diet.dims.choice import dim_parts
from diet.dims.heads import HeadLayout, select_heads
from diet.methods.base import METHODS, MaskSelection, Method, PruningContext
from diet.methods.by_dimension import selection_stats
from diet.methods.calibrated import calibration_sequences
from diet.methods.inputs import Calibration, Target
from diet.models.adapters import adapter_for
from diet.select import masks


def _wanda_metric(weight: torch.Tensor, sum_sq: torch.Tensor, n_samples: int) -> torch.Tensor:
    """FLAP's W_metric.mean(axis=0): mean over output rows of |W| * sqrt(scaler_row), per input column."""
    scaler_row = sum_sq.to(torch.float64) / max(n_samples, 1)
    # on the weight's device (one layer at a time); only the per-channel vector goes to the host
    weight = weight.detach().to(torch.float64)
    return (weight.abs() * scaler_row.to(weight.device).sqrt()).mean(dim=0).cpu()


@torch.no_grad()
def layer_channel_scores(model: torch.nn.Module, profile: ActivationProfile, layer: int) -> torch.Tensor:
    """Wanda-sp score of every MLP channel of one layer (float64)."""
    down = adapter_for(model).mlp(layer).down.weight
    return _wanda_metric(down, profile.sum_sq["mlp"][layer], profile.n_samples)


@torch.no_grad()
def layer_head_scores(model: torch.nn.Module, profile: ActivationProfile, layer: int) -> torch.Tensor:
    """Wanda-sp score of every query head of one layer (float64): its o_proj columns' metrics summed."""
    adapter = adapter_for(model)
    metric = _wanda_metric(adapter.attention(layer).o.weight, profile.sum_sq["attn"][layer], profile.n_samples)
    return metric.view(-1, adapter.head_dim()).sum(dim=1)


@contextmanager
def zeroed_while_calibrating(model: torch.nn.Module) -> Iterator[Callable[[str, int, torch.Tensor], None]]:
    """Yields `prune(kind, layer, keep)`, which installs a pre-hook zeroing the removed channels' down_proj
    inputs (kind "mlp") or removed heads' o_proj inputs ("heads") of that layer; all removed on exit."""
    adapter = adapter_for(model)
    handles = []

    def scale(keep: torch.Tensor):
        def hook(module, args):
            return (args[0] * keep.to(args[0].device, args[0].dtype),) + tuple(args[1:])
        return hook

    def add(kind: str, layer: int, keep: torch.Tensor) -> None:
        if kind == "mlp":
            handles.append(adapter.mlp(layer).down.register_forward_pre_hook(scale(keep)))
        else:  # one flag per head -> one per o_proj input column
            columns = keep.repeat_interleave(adapter.head_dim())
            handles.append(adapter.attention(layer).o.register_forward_pre_hook(scale(columns)))

    try:
        yield add
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def sequential_wanda_sp(model: torch.nn.Module, sequences: list[list[int]], sparsity: float, parts: tuple[str, ...],
                        batch_size: int = 8, pad_id: int = 0,
                        exclude_first: bool = False) -> tuple[dict[str, list[torch.Tensor]], int]:
    """Layer by layer as prune_wanda_sp: profile layer l with layers < l pruned, score, prune l.
    Returns ({"mlp": keep per layer, "heads": keep per layer}, calibration tokens per pass)."""
    layout = HeadLayout.of(model) if "heads" in parts else None
    finals: dict[str, list[torch.Tensor]] = {part: [] for part in parts}
    with zeroed_while_calibrating(model) as prune:
        def prune_layer(layer: int, profile: ActivationProfile) -> None:
            if "heads" in parts:  # both from the same pass, before this layer is pruned (as the reference)
                one_layer = HeadLayout((layout.groups[layer],), (layout.group_size[layer],))
                finals["heads"].append(
                    select_heads([layer_head_scores(model, profile, layer)], sparsity, one_layer)[0])
            if "mlp" in parts:
                finals["mlp"].append(
                    masks.select_top([layer_channel_scores(model, profile, layer)], sparsity, scope="layer")[0])
            for part in parts:
                prune(part, layer, finals[part][layer])

        tokens = sequential_profiles(model, sequences, prune_layer, batch_size, pad_id, desc="wanda-sp",
                                     exclude_first=exclude_first)
    return finals, tokens


@dataclass(frozen=True)
class WandaSPInputs:
    target: Target
    calibration: Calibration


@METHODS.register("wanda_sp")
class WandaSP(Method):
    name = "wanda_sp"
    table_rank = 4
    calib_source = True
    dims = ("mlp", "heads", "mlp+heads")
    reference_calib = (128, 128)  # prune_wanda_sp: get_loaders("c4", nsamples=128, seqlen=model.seqlen=128)
    version = 2  # 2: the reference scoring (down_proj only, sequential); 1 added a gate/up weight term

    Inputs = WandaSPInputs

    def select(self, ctx: PruningContext, inputs: WandaSPInputs) -> MaskSelection:
        parts, calibration = dim_parts(inputs.target.dims), inputs.calibration
        model = ctx.loaded.model
        with ctx.timer("profile"):
            sequences = calibration_sequences(ctx, calibration, self.reference_calib)
            finals, tokens = sequential_wanda_sp(model, sequences, inputs.target.sparsity, parts,
                                                 ctx.batch_size, ctx.loaded.tokenizer.pad_token_id or 0,
                                                 calibration.exclude_bos)
        stats = selection_stats({}, finals)
        stats.update(calib_tokens=tokens, sequential=True)
        return MaskSelection(keep=finals, stats=stats)
