"""DIET oracle: every task is evaluated with its own single-task DIET mask (no merge).

The task-specific upper bound of DIET's merge: T pruned models instead of one. The masks are DIET's
own per-task masks (diet.methods.diet.diet_task_masks: same statistic, scope and floor, same `dims`), so the gap
between `diet` and `diet_oracle` is what the vote costs.
"""

from __future__ import annotations

from diet.io import stable_hash
from diet.methods.base import METHODS, MaskSelection, Method, PruningContext
from diet.methods.diet import DIET_DIMS, TaskMaskInputs, diet_task_masks
from diet.methods.by_dimension import selection_stats

SINGLE_KEYS = ("kept_channels", "kept_per_layer", "actual_sparsity", "mask_hash")


@METHODS.register("diet_oracle")
class DietOracle(Method):
    name = "diet_oracle"
    table_rank = 2
    baseline = False
    dims = DIET_DIMS
    per_task_profiles = True
    Inputs = TaskMaskInputs

    def select(self, ctx: PruningContext, inputs: TaskMaskInputs) -> MaskSelection:
        per_task = diet_task_masks(ctx, inputs)
        parts = per_task.parts
        tasks = list(next(iter(parts.values())).masks)
        model = ctx.loaded.model
        task_finals = {task: {part: pm.per_layer(task, model) for part, pm in parts.items()} for task in tasks}
        extra = list(parts)[1:]  # parts nested under their own name in the stats (select.by_dimension)

        def pick(single: dict) -> dict:
            out = {key: single[key] for key in SINGLE_KEYS}
            out.update({part: {key: single[part][key] for key in SINGLE_KEYS} for part in extra})
            return out

        # Per task the stats DIET gives for its final mask; across tasks the vote histogram and overlaps.
        singles = {task: selection_stats({}, finals) for task, finals in task_finals.items()}
        # (selection_stats needs a final mask: any task's will do, its own fields are replaced below)
        all_masks = {part: {task: task_finals[task][part] for task in tasks} for part in parts}
        stats = selection_stats(all_masks, task_finals[tasks[0]])
        for target in [stats, *(stats[part] for part in extra)]:
            for key in SINGLE_KEYS:
                del target[key]
        stats["per_task"] = {task: pick(single) for task, single in singles.items()}
        stats["actual_sparsity"] = sum(s["actual_sparsity"] for s in singles.values()) / len(singles)
        stats["mask_hash"] = stable_hash({task: s["mask_hash"] for task, s in singles.items()}, length=64)
        stats["tokens_per_task"] = {task: profile.n_tokens for task, profile in per_task.profiles.items()}
        return MaskSelection(
            per_task={
                task: MaskSelection(keep=finals, stats=singles[task])
                for task, finals in task_finals.items()
            },
            stats=stats,
        )
