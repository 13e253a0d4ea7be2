"""DIET: task-specific activation masks merged by vote into one global mask."""

from __future__ import annotations

from diet import masks
from diet.methods.base import METHODS, MaskSelection, Method, PruningContext
from diet.methods.calibrated import task_profiles


@METHODS.register("diet")
class Diet(Method):
    name = "diet"
    uses = ("sparsity", "dims", "calib", "profile", "mask", "merge", "vote")

    def select(self, ctx: PruningContext) -> MaskSelection:
        cfg = ctx.cfg
        with ctx.timer("profile"):
            profiles = task_profiles(ctx)
        with ctx.timer("mask"):
            scores = {
                task: masks.normalize_layer_scores(profile.scores("mlp", cfg["profile"]["stat"]))
                for task, profile in profiles.items()
            }
            mask_options = dict(scope=cfg["mask"]["scope"], min_keep_fraction=cfg["mask"]["min_keep_fraction"])
            task_masks = {
                task: masks.task_mask(task_scores, cfg["sparsity"], **mask_options)
                for task, task_scores in scores.items()
            }
            final = masks.merge_masks(
                task_masks,
                scores,
                rule=cfg["merge"],
                threshold=cfg["vote"]["threshold"],
                exact=cfg["vote"]["exact"],
                sparsity=cfg["sparsity"],
                **mask_options,
            )
        stats = masks.mask_stats(task_masks, final)
        stats["tokens_per_task"] = {task: profile.n_tokens for task, profile in profiles.items()}
        return MaskSelection(mlp_keep=final, stats=stats)
