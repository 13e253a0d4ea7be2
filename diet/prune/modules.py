"""Module surgery shared by every pruner: find a module's names, swap it, slice a Linear."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn



def module_names(model: nn.Module) -> dict[int, list[str]]:
    names: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), []).append(name)
    return names


def replace_module(model: nn.Module, names: Mapping[int, list[str]], old: nn.Module, new: nn.Module) -> None:
    for name in names[id(old)]:
        model.set_submodule(name, new)


def linear_from(weight: torch.Tensor, bias: torch.Tensor | None, like: nn.Linear) -> nn.Linear:
    """A new nn.Linear holding `weight`/`bias` (no extra allocation: built on meta, then assigned)."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    linear.weight = nn.Parameter(weight, requires_grad=like.weight.requires_grad)
    if bias is not None:
        linear.bias = nn.Parameter(bias, requires_grad=like.bias.requires_grad if like.bias is not None else True)
    return linear.train(like.training)


def empty_linear(in_features: int, out_features: int, like: nn.Linear) -> nn.Linear:
    """An uninitialised nn.Linear with `like`'s dtype, device and bias presence (its values get loaded)."""
    linear = nn.Linear(
        in_features, out_features, bias=like.bias is not None, device="meta", dtype=like.weight.dtype
    )
    return linear.to_empty(device=like.weight.device).train(like.training)


def slice_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """Keep rows (dim=0, output channels) or columns (dim=1, input channels) `index` of a Linear."""
    with torch.no_grad():
        index = index.to(linear.weight.device)
        weight = linear.weight.index_select(dim, index)
        bias = None
        if linear.bias is not None:
            bias = linear.bias.index_select(0, index) if dim == 0 else linear.bias.detach().clone()
    return linear_from(weight, bias, linear)
