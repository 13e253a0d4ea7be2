"""Physical removal of whole query heads, respecting grouped-query attention (GQA).

A head mask is `list[torch.BoolTensor]`, one per decoder layer, one entry per query head, True = keep.
Query head h of a layer reads q_proj output rows [h * head_dim, (h + 1) * head_dim) and writes o_proj
input columns of the same range; both are sliced.

GQA rule (the one this module enforces): with G = num_key_value_heads KV heads, query heads form G
consecutive groups of n = num_heads / G heads, group g sharing KV head g (transformers' repeat_kv repeats
each KV head n times, in order). A valid mask keeps the SAME number k >= 1 of query heads in every
group of a layer, so after slicing the kept heads are again G consecutive groups of k and repeat_kv
still pairs them with the right KV head once the attention module's `num_key_value_groups` is set to k.
KV heads (k_proj / v_proj rows) are therefore never removed, and the KV cache keeps its shape. Layers
may keep different k. `config.num_attention_heads` keeps its original value (like intermediate_size
for MLP pruning); the per-layer counts are the adapter's `head_counts()`, recorded in `config.diet_pruning["num_heads"]`
by diet.dims.apply and in the checkpoint spec, from which `diet.export.checkpoint.load_pruned` rebuilds the shapes.

Heads sparsity s therefore removes n - keep_count(n, s) heads per group (diet.dims.heads.select_heads):
the fraction removed is a multiple of 1/n (Gemma-3 270M: 4 heads, 1 KV head, s = 0.25 -> 3 kept; a
4-head / 2-KV-head layer at 0.25 removes 1 of 2 per group, i.e. 50%); records carry the actual value.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from diet.errors import DietConfigError
from diet.models.adapters import adapter_for
from diet.prune.modules import empty_linear, module_names, replace_module, slice_linear


def check_head_mask(model: nn.Module, keep: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Validate a per-layer query-head mask against the model and the GQA rule; return bool tensors."""
    adapter = adapter_for(model)
    counts, kv = adapter.head_counts(), adapter.num_kv_heads()
    if len(keep) != len(counts):
        raise DietConfigError(f"head mask has {len(keep)} layers but the model has {len(counts)} decoder layers")
    masks = []
    for index, (mask, heads) in enumerate(zip(keep, counts)):
        mask = torch.as_tensor(mask).detach().to("cpu")
        if mask.dtype != torch.bool or mask.dim() != 1 or mask.numel() != heads:
            raise DietConfigError(
                f"head mask of layer {index} must be a 1-D bool tensor of length {heads} (the layer's query "
                f"heads, True = keep), got dtype {mask.dtype}, shape {tuple(mask.shape)}"
            )
        per_group = mask.view(kv, heads // kv).sum(dim=1)
        if bool((per_group != per_group[0]).any()) or int(per_group[0]) == 0:
            raise DietConfigError(
                f"head mask of layer {index} keeps {per_group.tolist()} query heads in its {kv} KV groups: "
                f"grouped-query attention needs the same number (>= 1) in every group"
            )
        masks.append(mask)
    return masks


def _channels(mask: torch.Tensor, head_dim: int) -> torch.Tensor:
    """q_proj rows / o_proj columns of the kept heads, ascending."""
    heads = mask.nonzero().squeeze(1)
    return (heads[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)


def _set_head_count(attn: nn.Module, heads: int, kv: int) -> None:
    attn.num_key_value_groups = heads // kv  # what repeat_kv (eager, sdpa) reads
    for name in ("num_heads", "num_attention_heads"):  # not used by Gemma/Llama in transformers 5; kept consistent
        if isinstance(getattr(attn, name, None), int):
            setattr(attn, name, heads)


def prune_attention_heads(model: nn.Module, keep: Sequence[torch.Tensor]) -> nn.Module:
    """Physically remove the query heads `keep` marks False, in place; returns `model`.

    q_proj loses the heads' output rows (and bias entries), o_proj the matching input columns (its bias
    stays); k/v_proj are untouched. Each attention module's num_key_value_groups becomes the new heads
    per KV group; The adapter's `head_counts()` gives the per-layer counts.
    """
    masks = check_head_mask(model, keep)
    adapter = adapter_for(model)
    head_dim, kv = adapter.head_dim(), adapter.num_kv_heads()
    names = module_names(model)
    for layer, mask in enumerate(masks):
        if bool(mask.all()):
            continue
        attn = adapter.attention(layer)
        index = _channels(mask, head_dim)
        replace_module(model, names, attn.q, slice_linear(attn.q, index, dim=0))
        replace_module(model, names, attn.o, slice_linear(attn.o, index, dim=1))
        _set_head_count(adapter.layers()[layer].self_attn, int(mask.sum()), kv)
    return model


def zero_attention_heads(model: nn.Module, keep: Sequence[torch.Tensor]) -> nn.Module:
    """The masked equivalent of `prune_attention_heads`: zero the removed heads' q_proj rows and o_proj
    columns, in place (the o_proj columns alone already silence a head; zeroing q too keeps it inert)."""
    masks = check_head_mask(model, keep)
    adapter = adapter_for(model)
    head_dim = adapter.head_dim()
    with torch.no_grad():
        for layer, mask in enumerate(masks):
            attn = adapter.attention(layer)
            drop = ~mask.repeat_interleave(head_dim).to(attn.q.weight.device)
            attn.q.weight[drop] = 0
            if attn.q.bias is not None:
                attn.q.bias[drop] = 0
            attn.o.weight[:, drop] = 0
    return model


def resize_attention_heads(model: nn.Module, heads: Sequence[int]) -> nn.Module:
    """Give each layer uninitialised q_proj / o_proj for `heads[i]` query heads (values loaded next):
    used by diet.export.checkpoint.load_pruned to rebuild a head-pruned checkpoint's shapes."""
    adapter = adapter_for(model)
    head_dim, kv = adapter.head_dim(), adapter.num_kv_heads()
    names = module_names(model)
    for layer, count in enumerate(heads):
        attn = adapter.attention(layer)
        if count % kv or count < kv:
            raise DietConfigError(f"layer {layer} has {count} query heads, not a positive multiple of {kv} KV heads")
        if count * head_dim == attn.o.in_features:
            continue
        replace_module(model, names, attn.q, empty_linear(attn.q.in_features, count * head_dim, attn.q))
        replace_module(model, names, attn.o, empty_linear(count * head_dim, attn.o.out_features, attn.o))
        _set_head_count(adapter.layers()[layer].self_attn, count, kv)
    return model
