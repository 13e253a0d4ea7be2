"""Wanda-sp: structured Wanda (the "Wanda-sp" baseline of FLAP, An et al. 2024), top-k per layer.

For MLP channel j of a layer with down_proj input activations a (calibration tokens t) and MLP input
x (the gate/up_proj input, profile site "mlp_in"):

    ||X_down_j|| = sqrt(sum_t a_tj^2)                 (profile.scores("mlp", "l2"))
    ||X_in_i||   = sqrt(sum_t x_ti^2)                 (profile.scores("mlp_in", "l2"))

    score_j = sum_i |W_down[i, j]| * ||X_down_j||
            + sum_i (|W_gate[j, i]| + |W_up[j, i]|) * ||X_in_i||

i.e. Wanda's |weight| x input-norm summed over every weight that belongs to channel j (its down column,
its gate and up rows). Uniform sparsity: each layer keeps its own keep_count(width, sparsity) best.
Calibration tokens: `calib.source` (pooled task samples by default).
"""

from __future__ import annotations

import torch

from diet import masks
from diet.methods.base import METHODS, MaskSelection, Method, PruningContext
from diet.methods.calibrated import calibration_profile
from diet.models.adapters import adapter_for
from diet.profile import ActivationProfile


@torch.no_grad()
def wanda_sp_scores(model: torch.nn.Module, profile: ActivationProfile) -> list[torch.Tensor]:
    """Per layer, per MLP channel, the Wanda-sp score above (float64)."""
    adapter = adapter_for(model)
    down_norm, in_norm = profile.scores("mlp", "l2"), profile.scores("mlp_in", "l2")
    scores = []
    for layer in range(adapter.num_layers()):
        mlp = adapter.mlp(layer)
        gate, up, down = (w.weight.detach().to("cpu", torch.float64).abs() for w in (mlp.gate, mlp.up, mlp.down))
        x_down, x_in = down_norm[layer].to(torch.float64), in_norm[layer].to(torch.float64)
        scores.append(down.sum(0) * x_down + (gate + up) @ x_in)
    return scores


@METHODS.register("wanda_sp")
class WandaSP(Method):
    name = "wanda_sp"
    uses = ("sparsity", "dims", "calib")
    calib_source = True

    def select(self, ctx: PruningContext) -> MaskSelection:
        with ctx.timer("profile"):
            profile = calibration_profile(ctx)
        with ctx.timer("mask"):
            final = masks.select_top(wanda_sp_scores(ctx.loaded.model, profile), ctx.cfg["sparsity"], scope="layer")
        stats = masks.mask_stats({}, final)
        stats["calib_tokens"] = profile.n_tokens
        return MaskSelection(mlp_keep=final, stats=stats)
