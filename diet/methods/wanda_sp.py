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

Heads (`dims=heads` / `mlp+heads`), as FLAP's Wanda-sp head scoring: with o_proj input activations z
(profile site "attn", num_heads * head_dim dims) and ||Z_c|| = sqrt(sum_t z_tc^2),

    score_h = sum_{c in head h} sum_i |W_o[i, c]| * ||Z_c||

and each KV group keeps its keep_count(heads per group, sparsity) best heads (diet/prune_attention.py).
"""

from __future__ import annotations

import torch

from diet import dims as dims_mod
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


@torch.no_grad()
def wanda_sp_head_scores(model: torch.nn.Module, profile: ActivationProfile) -> list[torch.Tensor]:
    """Per layer, per query head, the Wanda-sp head score above (float64)."""
    adapter = adapter_for(model)
    head_dim = adapter.head_dim()
    scores = []
    for layer, z_norm in enumerate(profile.scores("attn", "l2")):
        o = adapter.attention(layer).o.weight.detach().to("cpu", torch.float64).abs()
        scores.append((o.sum(0) * z_norm.to(torch.float64)).view(-1, head_dim).sum(dim=1))
    return scores


@METHODS.register("wanda_sp")
class WandaSP(Method):
    name = "wanda_sp"
    uses = ("sparsity", "dims", "calib")
    calib_source = True
    dims = ("mlp", "heads", "mlp+heads")

    def select(self, ctx: PruningContext) -> MaskSelection:
        parts = dims_mod.dim_parts(dims_mod.cfg_dims(ctx.cfg))
        model, sparsity = ctx.loaded.model, ctx.cfg["sparsity"]
        with ctx.timer("profile"):
            profile = calibration_profile(ctx)
        finals = {}
        with ctx.timer("mask"):
            if "mlp" in parts:
                finals["mlp"] = masks.select_top(wanda_sp_scores(model, profile), sparsity, scope="layer")
            if "heads" in parts:
                scores = wanda_sp_head_scores(model, profile)
                finals["heads"] = dims_mod.select_heads(scores, sparsity, dims_mod.HeadLayout.of(model))
        stats = dims_mod.selection_stats({}, finals)
        stats["calib_tokens"] = profile.n_tokens
        return MaskSelection(**dims_mod.selection_fields(finals), stats=stats)
