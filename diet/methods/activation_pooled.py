"""Activation (pooled): DIET's statistic on all calibration tokens pooled, one mask, no vote.

The ablation that isolates DIET's per-task vote: the same channel statistic (`profile.stat` of the
down_proj input), the same scope and floor (`mask.*`), but computed once on the pooled tokens
(`calib.source`: by default the per-task samples together, i.e. exactly DIET's tokens). Heads and
hidden dims (`dims`) use DIET's head and hidden scores (diet/methods/diet.py) on the pooled profile.
"""

from __future__ import annotations

from diet import dims as dims_mod
from diet import masks
from diet.methods.base import METHODS, MaskSelection, Method, PruningContext
from diet.methods.calibrated import calibration_profile
from diet.models.adapters import adapter_for


@METHODS.register("activation_pooled")
class ActivationPooled(Method):
    name = "activation_pooled"
    uses = ("sparsity", "dims", "calib", "profile", "mask")
    calib_source = True
    # no published protocol: FLAP's generic budget (1024 x 128 tokens)
    reference_calib = (1024, 128)
    dims = ("mlp", "heads", "mlp+heads", "hidden")

    def select(self, ctx: PruningContext) -> MaskSelection:
        cfg = ctx.cfg
        parts = dims_mod.dim_parts(dims_mod.cfg_dims(cfg))
        stat, sparsity = cfg["profile"]["stat"], cfg["sparsity"]
        with ctx.timer("profile"):
            profile = calibration_profile(ctx, self.reference_calib)
        finals = {}
        with ctx.timer("mask"):
            if "mlp" in parts:
                finals["mlp"] = masks.task_mask(
                    profile.scores("mlp", stat),
                    sparsity,
                    scope=cfg["mask"]["scope"],
                    min_keep_fraction=cfg["mask"]["min_keep_fraction"],
                )
            if "heads" in parts:
                model = ctx.loaded.model
                scores = profile.head_scores(stat, adapter_for(model).head_dim())
                finals["heads"] = dims_mod.select_heads(scores, sparsity, dims_mod.HeadLayout.of(model))
            if "hidden" in parts:
                finals["hidden"] = masks.select_top([dims_mod.hidden_scores(profile, stat)], sparsity)
        stats = dims_mod.selection_stats({}, finals)
        stats["calib_tokens"] = profile.n_tokens
        return MaskSelection(**dims_mod.selection_fields(finals), stats=stats)
