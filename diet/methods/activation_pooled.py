"""Activation (pooled): DIET's statistic on all calibration tokens pooled, one mask, no vote.

The ablation that isolates DIET's per-task vote: the same channel statistic (`method.profile.stat` of the
down_proj input), the same scope and floor (`method.mask.*`), but computed once on the pooled tokens
(`calib.source`: by default the per-task samples together, i.e. exactly DIET's tokens). Heads and
hidden dims (`dims`) use DIET's head and hidden scores (diet.methods.activation_scoring) on the pooled profile.
"""

from __future__ import annotations

from dataclasses import dataclass

from diet.dims.choice import parts_of, scored_dims
from diet.methods.activation_scoring import SCORING
from diet.methods.base import METHODS, MaskSelection, Method, PruningContext
from diet.methods.by_dimension import selection_stats
from diet.methods.calibrated import calibration_profile
from diet.methods.inputs import Calibration, MaskRule, ProfileStatistic, Target


@dataclass(frozen=True)
class PooledInputs:
    target: Target
    calibration: Calibration
    profile: ProfileStatistic
    mask: MaskRule


@METHODS.register("activation_pooled")
class ActivationPooled(Method):
    name = "activation_pooled"
    table_rank = 3
    calib_source = True
    # no published protocol: FLAP's generic budget (1024 x 128 tokens)
    reference_calib = (1024, 128)
    dims = scored_dims()
    Inputs = PooledInputs

    def select(self, ctx: PruningContext, inputs: PooledInputs) -> MaskSelection:
        model, sparsity, mask = ctx.loaded.model, inputs.target.sparsity, inputs.mask
        with ctx.timer("profile"):
            profile = calibration_profile(ctx, inputs.calibration, self.reference_calib)
        finals = {}
        with ctx.timer("mask"):
            for dimension in parts_of(inputs.target.dims):
                layout, scoring = dimension.layout(model), SCORING.get(dimension.name)
                entry_scores = layout.split(scoring.statistic(profile, inputs.profile.stat, model))
                finals[dimension.name] = layout.join(scoring.task_mask(dimension, entry_scores, sparsity, mask))
        stats = selection_stats({}, finals)
        stats["calib_tokens"] = profile.n_tokens
        return MaskSelection(keep=finals, stats=stats)
