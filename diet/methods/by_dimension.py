"""DIET's merge and the mask statistics, per pruned dimension (diet.dims)."""

from __future__ import annotations

from torch import Tensor, nn

from diet.dims.base import Dimension
from diet.io import stable_hash
from diet.methods.activation_scoring import SCORING
from diet.methods.inputs import MaskRule, MergeRule
from diet.select import masks


def merge_part(dimension: Dimension, task_masks: dict[str, list[Tensor]], task_scores: dict[str, list[Tensor]],
               merge: MergeRule, sparsity: float, mask: MaskRule, model: nn.Module) -> list[Tensor]:
    """DIET's merge of one dimension's task masks, on its entry layout (heads: per KV group; hidden: one
    entry). `method.mask.scope` applies where the dimension honours it (MLP); a dimension then repairs what its
    pruner cannot apply (heads: equal counts per KV group after a merge whose count follows the votes)."""
    merged = masks.merge_masks(
        task_masks,
        task_scores,
        rule=merge.rule,
        threshold=merge.threshold,
        exact=merge.exact,
        sparsity=sparsity,
        scope=dimension.scope(mask.scope),
        min_keep_fraction=mask.min_keep_fraction,
    )
    votes = masks.vote_counts(masks.checked_masks(task_masks))
    return SCORING.get(dimension.name).after_merge(merged, votes, masks.summed_scores(task_scores), model)


def selection_stats(task_masks: dict[str, dict[str, list[Tensor]]], finals: dict[str, list[Tensor]]) -> dict:
    """mask_stats of the first part at the top level (dims=mlp records look as before); every further
    part's stats under its name; with several parts, mask_hash covers all of them."""
    parts = list(finals)
    stats = masks.mask_stats(task_masks.get(parts[0], {}), finals[parts[0]])
    for part in parts[1:]:
        stats[part] = masks.mask_stats(task_masks.get(part, {}), finals[part])
    if len(parts) > 1:
        stats["mask_hash"] = stable_hash({part: masks.mask_hash(finals[part]) for part in parts}, length=64)
    if parts != ["mlp"]:
        stats["dims"] = "+".join(parts)
    return stats
