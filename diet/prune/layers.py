"""Whole decoder layers removed (ShortGPT)."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from diet.errors import DietConfigError
from diet.models.adapters import adapter_for


def drop_decoder_layers(model: nn.Module, drop: Sequence[int]) -> nn.Module:
    """Remove whole decoder layers (ShortGPT), in place; the config is updated so the result saves
    and reloads through the stock from_pretrained path."""
    adapter = adapter_for(model)
    total = adapter.num_layers()
    drop_set = sorted(set(int(i) for i in drop))
    if any(i < 0 or i >= total for i in drop_set) or len(drop_set) >= total:
        raise DietConfigError(f"cannot drop layers {drop_set} of a {total}-layer model: keep at least one, indices in [0, {total})")
    keep = [i for i in range(total) if i not in drop_set]
    layers = adapter.backbone().layers
    adapter.backbone().layers = nn.ModuleList([layers[i] for i in keep])
    for new_index, layer in enumerate(adapter.backbone().layers):
        # the KV cache is indexed by layer_idx: renumber so generation still works
        if hasattr(layer.self_attn, "layer_idx"):
            layer.self_attn.layer_idx = new_index
        if hasattr(layer, "layer_idx"):
            layer.layer_idx = new_index
    config = model.config
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    # the layers dimension's own note; the other shapes are recorded one level up (diet.dims.shapes)
    model.config.diet_pruning = {**getattr(model.config, "diet_pruning", {}), "dropped_layers": drop_set}
    return model
