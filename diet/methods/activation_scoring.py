"""How the activation-statistic methods (DIET, its oracle, activation_pooled) score and mask each pruned
dimension (diet.dims): the statistic read from an activation profile, the per-layer normalisation DIET votes on,
one task's keep-mask under the mask rule, and the repair a merged mask needs before its dimension's pruner can
apply it. A dimension itself only says what a unit is (diet.dims.base: shape, layout, costs, surgery); a new
dimension these methods should score adds an entry to `SCORING` (tests/test_dims.py holds the two registries
to the same names).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from diet.dims.base import Dimension
from diet.dims.heads import HeadLayout
from diet.methods.inputs import MaskRule
from diet.models.adapters import adapter_for
from diet.registry import Registry
from diet.select import masks


class ActivationScoring:
    """One dimension's scoring; the defaults rank within the dimension's entries (diet.dims.base.Dimension.select)."""

    def statistic(self, profile: Any, stat: str, model: nn.Module) -> list[Tensor]:
        """Per-layer scores of the units from an activation profile (diet.calib.profiler), as given."""
        raise NotImplementedError

    def normalized_scores(self, dimension: Dimension, profile: Any, stat: str, model: nn.Module) -> list[Tensor]:
        """DIET's per-task scores in entry layout: the statistic, normalised to mean 1 per layer."""
        return dimension.layout(model).split(masks.normalize_layer_scores(self.statistic(profile, stat, model)))

    def task_mask(self, dimension: Dimension, entry_scores: list[Tensor], sparsity: float, mask: MaskRule) -> list[Tensor]:
        """One task's keep-mask (entry layout) from its scores."""
        return dimension.select(entry_scores, sparsity, mask.scope, mask.min_keep_fraction)

    def after_merge(self, merged: list[Tensor], votes: list[Tensor], summed: list[Tensor], model: nn.Module) -> list[Tensor]:
        """Repair a merged mask (entry layout) the dimension's pruner could not apply; default: as is."""
        return merged


SCORING: Registry[ActivationScoring] = Registry("activation-scored dimension")


class MLPScoring(ActivationScoring):
    def statistic(self, profile: Any, stat: str, model: nn.Module) -> list[Tensor]:
        return profile.scores("mlp", stat)  # the down_proj input

    def task_mask(self, dimension: Dimension, entry_scores: list[Tensor], sparsity: float, mask: MaskRule) -> list[Tensor]:
        # normalised per layer before ranking, so that a global ranking compares layers on one scale
        return masks.task_mask(entry_scores, sparsity, scope=dimension.scope(mask.scope),
                               min_keep_fraction=mask.min_keep_fraction)


def equalize_groups(segment_masks: list[Tensor], keys: list[list[Tensor]], layout: HeadLayout) -> list[Tensor]:
    """Where the KV groups of a layer keep different numbers of heads (or none), make every group keep
    as many as its largest group (at least 1). Needed after merge rules whose kept count follows the
    votes (union, intersection, vote with exact=false). Within a group heads are ranked by `keys` (votes,
    then summed score), so every head the merge kept stays kept. Layers already equal are untouched."""
    out, start = [], 0
    for g in layout.groups:
        layer = list(segment_masks[start : start + g])
        counts = [int(m.sum()) for m in layer]
        if len(set(counts)) > 1 or counts[0] == 0:
            k = max(1, max(counts))
            layer = [masks.top_by_keys(keys[start + j], k) for j in range(g)]
        out.extend(layer)
        start += g
    return out


class HeadScoring(ActivationScoring):
    def statistic(self, profile: Any, stat: str, model: nn.Module) -> list[Tensor]:
        # the o_proj input statistic averaged over each head's head_dim inputs
        return profile.head_scores(stat, adapter_for(model).head_dim())

    def after_merge(self, merged: list[Tensor], votes: list[Tensor], summed: list[Tensor], model: nn.Module) -> list[Tensor]:
        return equalize_groups(merged, [[v.double(), s] for v, s in zip(votes, summed)], HeadLayout.of(model))


def hidden_scores(profile: Any, stat: str) -> Tensor:
    """One score per residual dimension: the sum over layers of each layer's output statistic, each
    layer normalised to mean 1 first (so no layer's scale dominates)."""
    per_layer = masks.normalize_layer_scores(profile.scores("hidden", stat))
    return torch.stack(per_layer).sum(dim=0)


class HiddenScoring(ActivationScoring):
    def statistic(self, profile: Any, stat: str, model: nn.Module) -> list[Tensor]:
        return [hidden_scores(profile, stat)]

    def normalized_scores(self, dimension: Dimension, profile: Any, stat: str, model: nn.Module) -> list[Tensor]:
        return self.statistic(profile, stat, model)  # every layer is normalised inside hidden_scores


SCORING.register("mlp")(MLPScoring())
SCORING.register("heads")(HeadScoring())
SCORING.register("hidden")(HiddenScoring())
