"""DIET: task-specific activation masks merged by vote into one global mask.

`dims` (diet/dims/) chooses what is scored, masked and voted on (scored as diet.methods.activation_scoring says): MLP channels (the down_proj input
statistic, per layer), query heads (profile.head_scores: the statistic averaged over the head's o_proj
input dimensions, normalised per layer, ranked and voted within each KV group), or hidden dimensions
(the residual-stream statistic of every layer's output, each layer normalised to mean 1, summed over
layers: one global mask).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from diet.calib.profiler import ActivationProfile
from diet.dims.base import Dimension
from diet.dims.choice import parts_of, scored_dims
from diet.methods.activation_scoring import SCORING
from diet.methods.base import METHODS, MaskSelection, Method, PruningContext
from diet.methods.by_dimension import merge_part, selection_stats
from diet.methods.calibrated import task_profiles
from diet.methods.inputs import MaskRule, MergeRule, ProfileStatistic, Target, TaskSamples

DIET_DIMS = scored_dims()


@dataclass
class PartMasks:
    """One pruned dimension's per-task scores and single-task masks, in its entry layout (diet.dims)."""

    dimension: Dimension
    scores: dict[str, list[torch.Tensor]]
    masks: dict[str, list[torch.Tensor]]

    def per_layer(self, task: str, model: torch.nn.Module) -> list[torch.Tensor]:
        return self.dimension.layout(model).join(self.masks[task])


@dataclass
class TaskMasks:
    """Per task: its profile, and per pruned dimension its scores and single-task keep-masks."""

    profiles: dict[str, ActivationProfile]
    parts: dict[str, PartMasks] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskMaskInputs:
    """DIET's per-task step: what to remove, the task samples, the statistic and the mask rule."""

    target: Target
    calibration: TaskSamples
    profile: ProfileStatistic
    mask: MaskRule


@dataclass(frozen=True)
class DietInputs(TaskMaskInputs):
    merge: MergeRule


def diet_task_masks(ctx: PruningContext, inputs: TaskMaskInputs) -> TaskMasks:
    """DIET's per-task step (shared by `diet` and `diet_oracle`): profile each task; per pruned dimension
    score its units by `method.profile.stat` (normalised per layer) and keep the top ones (MLP: under `method.mask.scope`)."""
    model, sparsity, mask = ctx.loaded.model, inputs.target.sparsity, inputs.mask
    with ctx.timer("profile"):
        profiles = task_profiles(ctx, inputs.calibration)
    result: dict[str, PartMasks] = {}
    with ctx.timer("mask"):
        for dimension in parts_of(inputs.target.dims):
            scoring = SCORING.get(dimension.name)
            scores = {task: scoring.normalized_scores(dimension, profile, inputs.profile.stat, model)
                      for task, profile in profiles.items()}
            task_masks = {task: scoring.task_mask(dimension, s, sparsity, mask) for task, s in scores.items()}
            result[dimension.name] = PartMasks(dimension, scores, task_masks)
    return TaskMasks(profiles, result)


@METHODS.register("diet")
class Diet(Method):
    name = "diet"
    table_rank = 1
    baseline = False
    dims = DIET_DIMS
    Inputs = DietInputs

    def select(self, ctx: PruningContext, inputs: DietInputs) -> MaskSelection:
        model = ctx.loaded.model
        per_task = diet_task_masks(ctx, inputs)
        finals, singles = {}, {}
        with ctx.timer("mask"):
            for part, pm in per_task.parts.items():
                merged = merge_part(pm.dimension, pm.masks, pm.scores, inputs.merge, inputs.target.sparsity,
                                    inputs.mask, model)
                finals[part] = pm.dimension.layout(model).join(merged)
                singles[part] = {task: pm.per_layer(task, model) for task in pm.masks}
        stats = selection_stats(singles, finals)
        stats["tokens_per_task"] = {task: profile.n_tokens for task, profile in per_task.profiles.items()}
        return MaskSelection(keep=finals, stats=stats)
