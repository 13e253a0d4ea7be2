"""The per-layer shapes a pruned model's config carries (config.diet_pruning): what every dimension's
`shape_spec` records, and the embedding scale. Kept one level above the surgery (diet/prune/), which knows
nothing of the dimension registry; diet.dims.apply and the checkpoint loader call it after a removal."""

from __future__ import annotations

from torch import nn

from diet.dims.choice import dimensions
from diet.models.adapters import adapter_for


def record_shapes(model: nn.Module) -> None:
    notes = {key: value for key, value in (getattr(model.config, "diet_pruning", None) or {}).items()
             if key == "dropped_layers"}  # the layers dimension's own note (diet.prune.layers)
    model.config.diet_pruning = {**notes, **{key: value for dimension in dimensions()
                                             for key, value in dimension.shape_spec(model).items()}}
    scale = adapter_for(model).embedding_scale()
    if scale is not None:
        model.config.diet_pruning["embed_scale"] = scale
