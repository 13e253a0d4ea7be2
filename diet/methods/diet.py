"""DIET: task-specific activation masks merged by vote into one global mask."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diet import masks
from diet.methods.base import METHODS, MaskSelection, Method, PruningContext
from diet.methods.calibrated import task_profiles
from diet.profile import ActivationProfile


@dataclass
class TaskMasks:
    """Per task: its profile, its normalised channel scores and its single-task keep-mask."""

    profiles: dict[str, ActivationProfile]
    scores: dict[str, list[torch.Tensor]]
    masks: dict[str, list[torch.Tensor]]


def mask_options(cfg: dict) -> dict:
    return dict(scope=cfg["mask"]["scope"], min_keep_fraction=cfg["mask"]["min_keep_fraction"])


def diet_task_masks(ctx: PruningContext) -> TaskMasks:
    """DIET's per-task step (shared by `diet` and `diet_oracle`): profile each task, score its MLP
    channels by `profile.stat` (normalised per layer) and keep the top ones under `mask.scope`."""
    cfg = ctx.cfg
    with ctx.timer("profile"):
        profiles = task_profiles(ctx)
    with ctx.timer("mask"):
        scores = {
            task: masks.normalize_layer_scores(profile.scores("mlp", cfg["profile"]["stat"]))
            for task, profile in profiles.items()
        }
        task_masks = {
            task: masks.task_mask(task_scores, cfg["sparsity"], **mask_options(cfg))
            for task, task_scores in scores.items()
        }
    return TaskMasks(profiles, scores, task_masks)


@METHODS.register("diet")
class Diet(Method):
    name = "diet"
    uses = ("sparsity", "dims", "calib", "profile", "mask", "merge", "vote")

    def select(self, ctx: PruningContext) -> MaskSelection:
        cfg = ctx.cfg
        per_task = diet_task_masks(ctx)
        with ctx.timer("mask"):
            final = masks.merge_masks(
                per_task.masks,
                per_task.scores,
                rule=cfg["merge"],
                threshold=cfg["vote"]["threshold"],
                exact=cfg["vote"]["exact"],
                sparsity=cfg["sparsity"],
                **mask_options(cfg),
            )
        stats = masks.mask_stats(per_task.masks, final)
        stats["tokens_per_task"] = {task: profile.n_tokens for task, profile in per_task.profiles.items()}
        return MaskSelection(mlp_keep=final, stats=stats)
