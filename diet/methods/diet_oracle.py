"""DIET oracle: every task is evaluated with its own single-task DIET mask (no merge).

The task-specific upper bound of DIET's merge: T pruned models instead of one. The masks are DIET's
own per-task masks (diet.diet_task_masks: same statistic, scope and floor), so the gap between `diet`
and `diet_oracle` is what the vote costs.
"""

from __future__ import annotations

from diet import masks
from diet.io import stable_hash
from diet.methods.base import METHODS, MaskSelection, Method, PruningContext
from diet.methods.diet import diet_task_masks


@METHODS.register("diet_oracle")
class DietOracle(Method):
    name = "diet_oracle"
    uses = ("sparsity", "dims", "calib", "profile", "mask")

    def select(self, ctx: PruningContext) -> MaskSelection:
        per_task = diet_task_masks(ctx)
        task_masks = per_task.masks
        # Per task the stats DIET gives for its final mask; across tasks the vote histogram and overlaps.
        singles = {task: masks.mask_stats({}, mask) for task, mask in task_masks.items()}
        # (mask_stats needs a final mask: any task's will do, its own fields are replaced below)
        stats = masks.mask_stats(task_masks, next(iter(task_masks.values())))
        for key in ("kept_channels", "kept_per_layer", "actual_sparsity", "mask_hash"):
            del stats[key]
        stats["per_task"] = {
            task: {key: single[key] for key in ("kept_channels", "kept_per_layer", "actual_sparsity", "mask_hash")}
            for task, single in singles.items()
        }
        stats["actual_sparsity"] = sum(s["actual_sparsity"] for s in singles.values()) / len(singles)
        stats["mask_hash"] = stable_hash({task: s["mask_hash"] for task, s in singles.items()}, length=64)
        stats["tokens_per_task"] = {task: profile.n_tokens for task, profile in per_task.profiles.items()}
        return MaskSelection(
            per_task={task: MaskSelection(mlp_keep=mask, stats=singles[task]) for task, mask in task_masks.items()},
            stats=stats,
        )
