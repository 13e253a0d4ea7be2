"""DIET: task-specific activation masks merged by vote into one global mask.

`dims` (diet/dims.py) chooses what is scored, masked and voted on: MLP channels (the down_proj input
statistic, per layer), query heads (profile.head_scores: the statistic averaged over the head's o_proj
input dimensions, normalised per layer, ranked and voted within each KV group), or hidden dimensions
(the residual-stream statistic of every layer's output, each layer normalised to mean 1, summed over
layers: one global mask).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from diet import dims as dims_mod
from diet import masks
from diet.methods.base import METHODS, MaskSelection, Method, PruningContext
from diet.methods.calibrated import task_profiles
from diet.models.adapters import adapter_for
from diet.profile import ActivationProfile

DIET_DIMS = ("mlp", "heads", "mlp+heads", "hidden")


@dataclass
class PartMasks:
    """One pruned part's per-task scores and single-task masks, in its ranking layout (diet.dims)."""

    scores: dict[str, list[torch.Tensor]]
    masks: dict[str, list[torch.Tensor]]
    layout: dims_mod.HeadLayout | None = None

    def per_layer(self, part: str, task: str) -> list[torch.Tensor]:
        return dims_mod.per_layer(part, self.masks[task], self.layout)


@dataclass
class TaskMasks:
    """Per task: its profile, its normalised channel scores and its single-task keep-mask (MLP; None
    when `dims` has no MLP part), and every pruned part under `parts`."""

    profiles: dict[str, ActivationProfile]
    scores: dict[str, list[torch.Tensor]] | None
    masks: dict[str, list[torch.Tensor]] | None
    parts: dict[str, PartMasks] = field(default_factory=dict)


def mask_options(cfg: dict) -> dict:
    return dict(scope=cfg["mask"]["scope"], min_keep_fraction=cfg["mask"]["min_keep_fraction"])


def diet_task_masks(ctx: PruningContext) -> TaskMasks:
    """DIET's per-task step (shared by `diet` and `diet_oracle`): profile each task, score its MLP
    channels by `profile.stat` (normalised per layer) and keep the top ones under `mask.scope`; for
    heads and hidden dims (`dims`) the same with their own scores (module docstring)."""
    cfg = ctx.cfg
    parts = dims_mod.dim_parts(dims_mod.cfg_dims(cfg))
    stat, sparsity = cfg["profile"]["stat"], cfg["sparsity"]
    with ctx.timer("profile"):
        profiles = task_profiles(ctx)
    result: dict[str, PartMasks] = {}
    with ctx.timer("mask"):
        if "mlp" in parts:
            scores = {
                task: masks.normalize_layer_scores(profile.scores("mlp", stat)) for task, profile in profiles.items()
            }
            task_masks = {
                task: masks.task_mask(task_scores, sparsity, **mask_options(cfg)) for task, task_scores in scores.items()
            }
            result["mlp"] = PartMasks(scores, task_masks)
        if "heads" in parts:
            layout = dims_mod.HeadLayout.of(ctx.loaded.model)
            head_dim = adapter_for(ctx.loaded.model).head_dim()
            scores = {
                task: layout.split(masks.normalize_layer_scores(profile.head_scores(stat, head_dim)))
                for task, profile in profiles.items()
            }
            task_masks = {task: masks.select_top(s, sparsity, scope="layer") for task, s in scores.items()}
            result["heads"] = PartMasks(scores, task_masks, layout)
        if "hidden" in parts:
            scores = {task: [dims_mod.hidden_scores(profile, stat)] for task, profile in profiles.items()}
            task_masks = {task: masks.select_top(s, sparsity, scope="layer") for task, s in scores.items()}
            result["hidden"] = PartMasks(scores, task_masks)
    mlp = result.get("mlp")
    return TaskMasks(profiles, mlp.scores if mlp else None, mlp.masks if mlp else None, result)


@METHODS.register("diet")
class Diet(Method):
    name = "diet"
    uses = ("sparsity", "dims", "calib", "profile", "mask", "merge", "vote")
    dims = DIET_DIMS

    def select(self, ctx: PruningContext) -> MaskSelection:
        cfg = ctx.cfg
        per_task = diet_task_masks(ctx)
        finals, singles = {}, {}
        with ctx.timer("mask"):
            for part, part_masks in per_task.parts.items():
                merged = dims_mod.merge_part(part, part_masks.masks, part_masks.scores, cfg, part_masks.layout)
                finals[part] = dims_mod.per_layer(part, merged, part_masks.layout)
                singles[part] = {task: part_masks.per_layer(part, task) for task in part_masks.masks}
        stats = dims_mod.selection_stats(singles, finals)
        stats["tokens_per_task"] = {task: profile.n_tokens for task, profile in per_task.profiles.items()}
        return MaskSelection(**dims_mod.selection_fields(finals), stats=stats)
