"""Physical removal of whole query heads, respecting grouped-query attention (GQA).

A head mask is `list[torch.BoolTensor]`, one per decoder layer, one entry per query head, True = keep.
Query head h of a layer reads q_proj output rows [h * head_dim, (h + 1) * head_dim) and writes o_proj
input columns of the same range; both are sliced.

GQA rule (the one this module enforces): with G = num_key_value_heads KV heads, query heads form G
consecutive groups of n = num_heads / G heads, group g sharing KV head g (transformers' repeat_kv repeats
each KV head n times, in order). A valid mask keeps the SAME number k >= 1 of query heads in every
group of a layer, so after slicing the kept heads are again G consecutive groups of k and repeat_kv
still pairs them with the right KV head once the attention module's `num_key_value_groups` is set to k.
Head pruning never removes KV heads (k_proj / v_proj rows). Layers may keep different k.

KV-group pruning (`prune_kv_groups`, LLM-Pruner's block-wise attention unit) removes whole groups instead: KV
head g's k_proj / v_proj rows with the query heads of its group (q_proj rows, o_proj columns). The heads per
group stay as they were, so `num_key_value_groups` is unchanged; layers may keep different numbers of KV heads,
recorded per layer (`config.diet_pruning["num_kv_heads"]`, the adapter's `kv_head_counts()`).

`config.num_attention_heads` and `num_key_value_heads` keep their original values (like intermediate_size for MLP
pruning); the per-layer counts are the adapter's `head_counts()` / `kv_head_counts()`, recorded in
`config.diet_pruning` by diet.dims.apply and in the checkpoint spec, from which
`diet.export.checkpoint.load_pruned` rebuilds the shapes.

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


def _per_layer_masks(keep: Sequence[torch.Tensor], counts: Sequence[int], what: str, unit: str) -> list[torch.Tensor]:
    """The checks every per-layer mask shares: one mask per decoder layer, each a 1-D bool tensor of the layer's
    count of `unit`; returns them on the CPU. Each mask kind adds its own rule after this."""
    if len(keep) != len(counts):
        raise DietConfigError(f"{what} mask has {len(keep)} layers but the model has {len(counts)} decoder layers")
    masks = []
    for index, (mask, count) in enumerate(zip(keep, counts)):
        mask = torch.as_tensor(mask).detach().to("cpu")
        if mask.dtype != torch.bool or mask.dim() != 1 or mask.numel() != count:
            raise DietConfigError(
                f"{what} mask of layer {index} must be a 1-D bool tensor of length {count} (the layer's {unit}, "
                f"True = keep), got dtype {mask.dtype}, shape {tuple(mask.shape)}"
            )
        masks.append(mask)
    return masks


def check_head_mask(model: nn.Module, keep: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Validate a per-layer query-head mask against the model and the GQA rule; return bool tensors."""
    adapter = adapter_for(model)
    counts, kv_counts = adapter.head_counts(), adapter.kv_head_counts()
    masks = _per_layer_masks(keep, counts, "head", "query heads")
    for index, (mask, heads, kv) in enumerate(zip(masks, counts, kv_counts)):
        per_group = mask.view(kv, heads // kv).sum(dim=1)
        if bool((per_group != per_group[0]).any()) or int(per_group[0]) == 0:
            raise DietConfigError(
                f"head mask of layer {index} keeps {per_group.tolist()} query heads in its {kv} KV groups: "
                f"grouped-query attention needs the same number (>= 1) in every group"
            )
    return masks


def _channels(mask: torch.Tensor, head_dim: int) -> torch.Tensor:
    """q_proj rows / o_proj columns of the kept heads (k/v rows of the kept KV heads), ascending."""
    heads = mask.nonzero().squeeze(1)
    return (heads[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)


def _set_head_count(attn: nn.Module, heads: int, kv: int) -> None:
    attn.num_key_value_groups = heads // kv  # what repeat_kv (eager, sdpa) reads
    for name in ("num_heads", "num_attention_heads"):  # not used by Gemma/Llama in transformers 5; kept consistent
        if isinstance(getattr(attn, name, None), int):
            setattr(attn, name, heads)
    if isinstance(getattr(attn, "num_key_value_heads", None), int):
        attn.num_key_value_heads = kv


def prune_attention_heads(model: nn.Module, keep: Sequence[torch.Tensor]) -> nn.Module:
    """Physically remove the query heads `keep` marks False, in place; returns `model`.

    q_proj loses the heads' output rows (and bias entries), o_proj the matching input columns (its bias
    stays); k/v_proj are untouched. Each attention module's num_key_value_groups becomes the new heads
    per KV group; The adapter's `head_counts()` gives the per-layer counts.
    """
    masks = check_head_mask(model, keep)
    _slice_attention(model, {layer: (mask, None) for layer, mask in enumerate(masks) if not bool(mask.all())})
    return model


def _slice_attention(model: nn.Module, kept: dict[int, tuple[torch.Tensor, torch.Tensor | None]]) -> None:
    """Per layer: (the query heads kept, the KV heads kept or None for all) -> q rows and o columns of the kept
    heads, k/v rows of the kept KV heads; the attention module's head counts follow."""
    adapter = adapter_for(model)
    head_dim = adapter.head_dim()
    names = module_names(model)
    for layer, (heads, kv_heads) in kept.items():
        attn = adapter.attention(layer)
        index = _channels(heads, head_dim)
        replace_module(model, names, attn.q, slice_linear(attn.q, index, dim=0))
        replace_module(model, names, attn.o, slice_linear(attn.o, index, dim=1))
        if kv_heads is not None:
            groups = _channels(kv_heads, head_dim)
            replace_module(model, names, attn.k, slice_linear(attn.k, groups, dim=0))
            replace_module(model, names, attn.v, slice_linear(attn.v, groups, dim=0))
        _set_head_count(adapter.layers()[layer].self_attn, int(heads.sum()), adapter.num_kv_heads(layer))


def zero_attention_heads(model: nn.Module, keep: Sequence[torch.Tensor]) -> nn.Module:
    """The masked equivalent of `prune_attention_heads`: zero the removed heads' q_proj rows and o_proj
    columns, in place (the o_proj columns alone already silence a head; zeroing q too keeps it inert)."""
    _zero_attention(model, {layer: (mask, None) for layer, mask in enumerate(check_head_mask(model, keep))})
    return model


def _zero_attention(model: nn.Module, kept: dict[int, tuple[torch.Tensor, torch.Tensor | None]]) -> None:
    """`_slice_attention`'s masked twin: zero the q rows (and bias) and o columns of the heads not kept, and the
    k/v rows (and bias) of the KV heads not kept where given; shapes and head counts stay."""
    adapter = adapter_for(model)
    head_dim = adapter.head_dim()
    with torch.no_grad():
        for layer, (heads, kv_heads) in kept.items():
            attn = adapter.attention(layer)
            drop = ~heads.repeat_interleave(head_dim).to(attn.q.weight.device)
            rows = [(attn.q, drop)]
            if kv_heads is not None:
                groups = ~kv_heads.repeat_interleave(head_dim).to(attn.k.weight.device)
                rows += [(attn.k, groups), (attn.v, groups)]
            for linear, dropped in rows:
                linear.weight[dropped] = 0
                if linear.bias is not None:
                    linear.bias[dropped] = 0
            attn.o.weight[:, drop] = 0


def resize_attention_heads(model: nn.Module, heads: Sequence[int]) -> nn.Module:
    """Give each layer uninitialised q_proj / o_proj for `heads[i]` query heads (values loaded next):
    used by diet.export.checkpoint.load_pruned to rebuild a head-pruned checkpoint's shapes."""
    adapter = adapter_for(model)
    head_dim = adapter.head_dim()
    names = module_names(model)
    for layer, count in enumerate(heads):
        attn, kv = adapter.attention(layer), adapter.num_kv_heads(layer)
        if count % kv or count < kv:
            raise DietConfigError(f"layer {layer} has {count} query heads, not a positive multiple of {kv} KV heads")
        if count * head_dim == attn.o.in_features:
            continue
        replace_module(model, names, attn.q, empty_linear(attn.q.in_features, count * head_dim, attn.q))
        replace_module(model, names, attn.o, empty_linear(count * head_dim, attn.o.out_features, attn.o))
        _set_head_count(adapter.layers()[layer].self_attn, count, kv)
    return model


def check_kv_group_mask(model: nn.Module, keep: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Validate a per-layer KV-group mask (one entry per KV head, True = keep, at least one kept)."""
    counts = adapter_for(model).kv_head_counts()
    masks = _per_layer_masks(keep, counts, "KV-group", "KV heads")
    for index, (mask, kv) in enumerate(zip(masks, counts)):
        if not bool(mask.any()):
            raise DietConfigError(f"KV-group mask of layer {index} removes all {kv} KV groups: keep at least one")
    return masks


def _group_heads(mask: torch.Tensor, size: int) -> torch.Tensor:
    """A per-KV-head mask -> the per-query-head mask of its groups (group g: heads g*size .. g*size+size-1)."""
    return mask.repeat_interleave(size)


def _kv_group_heads(model: nn.Module, masks: list[torch.Tensor]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer: (the query heads of the kept groups, the kept KV heads), for the layers that lose a group."""
    adapter = adapter_for(model)
    return {layer: (_group_heads(mask, adapter.num_heads(layer) // int(mask.numel())), mask)
            for layer, mask in enumerate(masks) if not bool(mask.all())}


def prune_kv_groups(model: nn.Module, keep: Sequence[torch.Tensor]) -> nn.Module:
    """Physically remove the KV groups `keep` marks False, in place: k_proj / v_proj rows of the KV head, q_proj
    rows and o_proj columns of its query heads (q_norm / k_norm act on head_dim and stay); returns `model`."""
    _slice_attention(model, _kv_group_heads(model, check_kv_group_mask(model, keep)))
    return model


def zero_kv_groups(model: nn.Module, keep: Sequence[torch.Tensor]) -> nn.Module:
    """The masked equivalent of `prune_kv_groups`: zero the removed groups' query heads (q_proj rows, o_proj
    columns) and k_proj / v_proj rows, in place. A group whose o_proj columns are zero writes nothing, as if
    removed (its queries meet zero keys and zero values: its output is zero)."""
    _zero_attention(model, _kv_group_heads(model, check_kv_group_mask(model, keep)))
    return model


def resize_kv_groups(model: nn.Module, kv_counts: Sequence[int]) -> nn.Module:
    """Give each layer uninitialised q/k/v/o projections for `kv_counts[i]` KV groups of its current heads per
    group (values loaded next): diet.export.checkpoint.load_pruned rebuilds a KV-group-pruned checkpoint."""
    adapter = adapter_for(model)
    head_dim = adapter.head_dim()
    names = module_names(model)
    for layer, kv in enumerate(kv_counts):
        attn, now = adapter.attention(layer), adapter.num_kv_heads(layer)
        if not 1 <= kv <= now:
            raise DietConfigError(f"layer {layer} has {kv} KV heads recorded; 1..{now} are possible")
        if kv == now:
            continue
        size = adapter.num_heads(layer) // now
        hidden = attn.q.in_features
        replace_module(model, names, attn.q, empty_linear(hidden, kv * size * head_dim, attn.q))
        replace_module(model, names, attn.k, empty_linear(hidden, kv * head_dim, attn.k))
        replace_module(model, names, attn.v, empty_linear(hidden, kv * head_dim, attn.v))
        replace_module(model, names, attn.o, empty_linear(kv * size * head_dim, attn.o.out_features, attn.o))
        _set_head_count(adapter.layers()[layer].self_attn, kv * size, kv)
    return model
