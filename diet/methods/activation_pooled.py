"""Activation (pooled): DIET's statistic on all calibration tokens pooled, one mask, no vote.

The ablation that isolates DIET's per-task vote: the same channel statistic (`profile.stat` of the
down_proj input), the same scope and floor (`mask.*`), but computed once on the pooled tokens
(`calib.source`: by default the per-task samples together, i.e. exactly DIET's tokens).
"""

from __future__ import annotations

from diet import masks
from diet.methods.base import METHODS, MaskSelection, Method, PruningContext
from diet.methods.calibrated import calibration_profile


@METHODS.register("activation_pooled")
class ActivationPooled(Method):
    name = "activation_pooled"
    uses = ("sparsity", "dims", "calib", "profile", "mask")
    calib_source = True

    def select(self, ctx: PruningContext) -> MaskSelection:
        cfg = ctx.cfg
        with ctx.timer("profile"):
            profile = calibration_profile(ctx)
        with ctx.timer("mask"):
            final = masks.task_mask(
                profile.scores("mlp", cfg["profile"]["stat"]),
                cfg["sparsity"],
                scope=cfg["mask"]["scope"],
                min_keep_fraction=cfg["mask"]["min_keep_fraction"],
            )
        stats = masks.mask_stats({}, final)
        stats["calib_tokens"] = profile.n_tokens
        return MaskSelection(mlp_keep=final, stats=stats)
