"""FLAP (An et al. 2024, "Fluctuation-based Adaptive Structured Pruning"), MLP channels only.

1. Fluctuation metric of MLP channel j (down_proj input a_j over the calibration tokens):
       s_j = Var_t(a_tj) * ||W_down[:, j]||^2             (population variance, profile.variance("mlp"))
2. Standardised per layer:  z_j = (s_j - mean(s)) / std(s)   (std with Bessel's correction, as
   torch.std in FLAP's code; a constant layer gets z = 0). This puts every layer on one scale.
3. Adaptive allocation (`method.allocation: global`): rank the z of all channels of all layers together
   and keep the global top sum_l keep_count(width_l, sparsity) channels, i.e. exactly the count the
   other methods keep, with a per-layer floor of max(1, ceil(method.min_keep_fraction * width)) so no
   layer is emptied (masks.py's "global" scope, applied through masks.select_top to the z as they are:
   masks.task_mask would first divide each layer by its mean |score|, which rescales the layers'
   standardised scores differently and so changes the cross-layer ranking). `allocation: layer` keeps
   each layer's top keep_count instead (FLAP's uniform variant).
4. Bias compensation (`method.bias: true`): for each layer the removed channels' mean contribution is
   folded into a down_proj bias,  b = W_down[:, removed] @ mean_t(a_t)[removed],  so the pruned MLP
   outputs exactly what the dense MLP outputs when the removed channels are replaced by their mean.
Calibration tokens: `calib.source` (pooled task samples by default; `c4` for generic text).

Reference: FLAP's `lib/prune.py:prune_flap` with metric WIFV (`fluc_inp * sum(W^2, dim=0)`) and bias
compensation (`compress`), calibrated on the dense model (all metrics first, pruning at the end), the
metric standardised per layer (`standarlization`, torch.std). Named deviations:
- MLP channels only, ranked across layers ("AL-MM" with no heads removed); FLAP's default AL-AM ranks
  heads and channels together, weighted by their parameter counts.
- the channel count kept is the other methods' (sparsity = fraction of MLP channels), not FLAP's
  parameter ratio over attention + MLP; a per-layer floor method.min_keep_fraction (5%) that FLAP lacks.
- variance: the population variance over all calibration tokens; FLAP's running estimate
  (lib/layerwrapper.py:BiasGPT) normalises by samples, not tokens, and drops the first sample's term,
  a constant factor (cancelled by the standardisation) up to that first sample.
- bias in float64 (FLAP stores the mean input in float16).
- calibration text: FLAP uses WikiText-2 train (1024 x 128 tokens, scripts/llama_7b.sh), not available
  offline; `calib.source=c4` gives 1024 windows of 128 tokens of C4 instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diet.select import masks
from diet.errors import DietConfigError
from diet.methods.base import METHODS, MaskSelection, Method, PruningContext
from diet.methods.calibrated import calibration_profile
from diet.methods.inputs import Calibration, LayerFloor, Target
from diet.models.adapters import adapter_for
from diet.calib.profiler import ActivationProfile

ALLOCATIONS = ("global", "layer")


@dataclass(frozen=True)
class FlapOptions:
    allocation: str = "global"  # global: adaptive across layers (FLAP) | layer: top-k per layer (uniform)
    bias: bool = True           # bias compensation: down_proj bias = W_down[:, removed] @ mean(a[removed])

    def __post_init__(self) -> None:
        if self.allocation not in ALLOCATIONS:
            raise DietConfigError(f"method.allocation={self.allocation!r} is not allowed: use one of "
                                  f"{', '.join(ALLOCATIONS)}")


@dataclass(frozen=True)
class FlapInputs:
    target: Target
    calibration: Calibration
    floor: LayerFloor
    options: FlapOptions


def _down_weight(model: torch.nn.Module, layer: int) -> torch.Tensor:
    """One layer's down_proj weight in float64 on its own device: one layer at a time (all of Gemma-2 9B's in
    float64 would be 16 GiB), and only per-channel or per-hidden vectors go to the host."""
    return adapter_for(model).mlp(layer).down.weight.detach().to(torch.float64)


@torch.no_grad()
def fluctuation_scores(model: torch.nn.Module, profile: ActivationProfile) -> list[torch.Tensor]:
    """Per layer, per MLP channel: Var(a_j) * ||W_down[:, j]||^2 (float64, on the host)."""
    scores = []
    for layer, var in enumerate(profile.variance("mlp")):
        down = _down_weight(model, layer)
        scores.append((var.to(down.device, torch.float64) * down.square().sum(0)).cpu())
    return scores


def standardise(scores: list[torch.Tensor]) -> list[torch.Tensor]:
    """(s - mean) / std per layer (unbiased std); zeros where the std is 0 or undefined."""
    out = []
    for layer in scores:
        layer = layer.to(torch.float64)
        std = layer.std() if layer.numel() > 1 else torch.zeros((), dtype=torch.float64)
        out.append((layer - layer.mean()) / std if std > 0 else torch.zeros_like(layer))
    return out


@torch.no_grad()
def compensation_bias(
    model: torch.nn.Module, profile: ActivationProfile, keep: list[torch.Tensor]
) -> list[torch.Tensor | None]:
    """Per layer W_down[:, removed] @ mean(a)[removed] (float64); None where nothing is removed."""
    biases: list[torch.Tensor | None] = []
    for layer, (mean, mask) in enumerate(zip(profile.mean("mlp"), keep)):
        removed = ~mask.cpu()
        if not bool(removed.any()):
            biases.append(None)
            continue
        down = _down_weight(model, layer)
        removed = removed.to(down.device)
        biases.append((down[:, removed] @ mean.to(down.device, torch.float64)[removed]).cpu())
    return biases


@METHODS.register("flap")
class Flap(Method):
    name = "flap"
    table_rank = 5
    calib_source = True
    # FLAP scripts/llama_7b.sh: --nsamples 1024 windows of model.seqlen = 128 tokens (main.py get_llm)
    reference_calib = (1024, 128)
    Options = FlapOptions
    Inputs = FlapInputs

    def select(self, ctx: PruningContext, inputs: FlapInputs) -> MaskSelection:
        options = inputs.options
        allocation = options.allocation
        with ctx.timer("profile"):
            profile = calibration_profile(ctx, inputs.calibration, self.reference_calib)
        with ctx.timer("mask"):
            standardised = standardise(fluctuation_scores(ctx.loaded.model, profile))
            final = masks.select_top(standardised, inputs.target.sparsity, scope=allocation,
                                     min_keep_fraction=inputs.floor.min_keep_fraction)
            bias = compensation_bias(ctx.loaded.model, profile, final) if options.bias else None
        stats = masks.mask_stats({}, final)
        stats.update(
            allocation=allocation,
            bias=bias is not None,
            bias_norm_per_layer=None if bias is None else [0.0 if b is None else float(b.norm()) for b in bias],
            calib_tokens=profile.n_tokens,
        )
        return MaskSelection(keep={"mlp": final}, bias={} if bias is None else {"mlp": bias}, stats=stats)
