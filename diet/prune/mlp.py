"""Physical MLP-channel pruning.

A mask is `list[torch.BoolTensor]`, one per decoder layer, True = keep that MLP channel (row i of
gate_proj/up_proj, column i of down_proj). After pruning, layers may have different widths; the widths are
recorded in config.diet_pruning by whoever applies the masks (diet.dims.shapes.record_shapes, called by
diet.dims.apply) and in the checkpoint format (diet.export.checkpoint).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from diet.errors import DietConfigError
from diet.models.adapters import adapter_for
from diet.prune.modules import module_names, replace_module, slice_linear


def check_mask(model: nn.Module, keep: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Validate `keep` against the model's current MLP widths; return the masks as flat bool tensors."""
    widths = adapter_for(model).mlp_widths()
    if len(keep) != len(widths):
        raise DietConfigError(f"mask has {len(keep)} layers but the model has {len(widths)} decoder layers")
    masks = []
    for index, (mask, width) in enumerate(zip(keep, widths)):
        mask = torch.as_tensor(mask)
        if mask.dtype != torch.bool or mask.dim() != 1:
            raise DietConfigError(
                f"mask of layer {index} must be a 1-D bool tensor (True = keep), got dtype {mask.dtype}, "
                f"shape {tuple(mask.shape)}"
            )
        if mask.numel() != width:
            raise DietConfigError(
                f"mask of layer {index} has length {mask.numel()}, but the layer has {width} MLP channels: "
                f"the length must equal the current width"
            )
        if not bool(mask.any()):
            raise DietConfigError(f"mask of layer {index} keeps no MLP channel: each layer must keep at least 1")
        masks.append(mask)
    return masks


def prune_mlp_channels(model: nn.Module, keep: Sequence[torch.Tensor]) -> nn.Module:
    """Physically remove the MLP channels `keep` marks False, in place; returns `model`.

    gate/up lose output rows and down loses input columns (new nn.Linear modules, same dtype/device; a
    down_proj bias is kept as is). The adapter's `mlp_widths()` gives the per-layer widths.
    """
    masks = check_mask(model, keep)
    adapter = adapter_for(model)
    names = module_names(model)
    for layer, mask in enumerate(masks):
        mlp = adapter.mlp(layer)
        index = mask.nonzero().squeeze(1)
        replace_module(model, names, mlp.gate, slice_linear(mlp.gate, index, dim=0))
        replace_module(model, names, mlp.up, slice_linear(mlp.up, index, dim=0))
        replace_module(model, names, mlp.down, slice_linear(mlp.down, index, dim=1))
    return model


def zero_mlp_channels(model: nn.Module, keep: Sequence[torch.Tensor]) -> nn.Module:
    """The masked equivalent of `prune_mlp_channels`: zero pruned gate/up rows and down columns, in place."""
    masks = check_mask(model, keep)
    adapter = adapter_for(model)
    with torch.no_grad():
        for layer, mask in enumerate(masks):
            mlp = adapter.mlp(layer)
            drop = ~mask.to(mlp.gate.weight.device)
            for linear in (mlp.gate, mlp.up):
                linear.weight[drop] = 0
                if linear.bias is not None:
                    linear.bias[drop] = 0
            mlp.down.weight[:, drop] = 0
    return model


def set_down_bias(model: nn.Module, biases: Sequence[torch.Tensor | None]) -> nn.Module:
    """Add a per-layer bias to down_proj (FLAP's compensation for removed channels), in place.

    Gemma and Llama have no MLP biases; the pruned model then carries one, and save/load keeps it.
    """
    adapter = adapter_for(model)
    if len(biases) != adapter.num_layers():
        raise DietConfigError(f"{len(biases)} biases for {adapter.num_layers()} decoder layers")
    for layer, bias in enumerate(biases):
        if bias is None:
            continue
        down = adapter.mlp(layer).down
        value = bias.to(device=down.weight.device, dtype=down.weight.dtype)
        if down.bias is None:
            down.bias = nn.Parameter(value.clone(), requires_grad=down.weight.requires_grad)
        else:
            with torch.no_grad():
                down.bias.add_(value)
    return model
