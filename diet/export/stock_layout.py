"""How a pruned model is described by a stock transformers config, padded with zeros where needed.

A stock config has one MLP width, one query-head count and one KV-head count for every layer, and a model
family either has MLP biases (Llama's `mlp_bias`) or not (Gemma). A pruned model fits that when its layers agree; when
they do not (FLAP's global allocation, `method.mask.scope=global`), `export.pad=true` zero-pads every layer to
the widest kept width: padded gate/up rows and down columns are zero, so a padded channel adds
act(0) * 0 * 0 = exact zeros; a padded query head has zero q rows and zero o_proj columns, so whatever
it attends to is multiplied by zero. The outputs are those of the pruned model up to float summation
order (a longer matmul is blocked differently: 2.5e-5 on logits up to 49 for Gemma-3 270M; the export
checks the reload against a rounding bound and records the difference), the size and speed are those
of the padded width (the record says how many zeros).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from diet.prune.rotation import is_rotated
from diet.models.adapters import adapter_for
from diet.models.stock_config import stock_refusal
from diet.prune.modules import module_names


@dataclass
class StockLayout:
    """Config values and (when they differ from the model's own) the weights of a stock checkpoint."""

    overrides: dict[str, Any]
    state: dict[str, torch.Tensor] | None = None  # None: save the model's own weights
    padded: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def _pad(tensor: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """`tensor` zero-padded at the end of `dim` to `size`."""
    missing = size - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor, tensor.new_zeros(shape)], dim=dim)


def _pad_groups(tensor: torch.Tensor, dim: int, groups: int, size: int) -> torch.Tensor:
    """Pad each of `groups` consecutive blocks along `dim` to `size` (query heads per KV group)."""
    blocks = torch.chunk(tensor, groups, dim=dim)
    return torch.cat([_pad(block, dim, size) for block in blocks], dim=dim)


def stock_head_count(config: Any, overrides: dict[str, Any], kept: int, kv_heads: int) -> int | None:
    """The fewest query heads >= `kept` (a multiple of the KV heads, at most the dense count) that the
    installed transformers accepts in a stock config; None when none is."""
    for count in range(kept, int(config.num_attention_heads) + 1):
        if count % kv_heads == 0 and stock_refusal(config, {**overrides, "num_attention_heads": count}) is None:
            return count
    return None


def stock_layout(model: nn.Module, pad: bool = False) -> tuple[StockLayout | None, str]:
    """The stock description of `model`, or (None, why there is none)."""
    if is_rotated(model):
        return None, "SliceGPT's shortcut matrices and weightless norms are not a stock architecture"
    adapter = adapter_for(model)
    widths, heads = adapter.mlp_widths(), adapter.head_counts()
    layers = range(adapter.num_layers())
    biased = [adapter.mlp(i).down.bias is not None for i in layers]
    if any(biased) and adapter.stock_mlp_bias is None:
        return None, (f"down_proj biases were added (FLAP's compensation), which the stock {model.config.model_type} "
                      f"MLP does not have")
    kv_counts = adapter.kv_head_counts()
    if len(set(kv_counts)) > 1:
        return None, (f"KV heads differ between layers ({min(kv_counts)}..{max(kv_counts)}), which no stock config "
                      f"holds (zero-padding whole KV groups is not offered)")
    kv = kv_counts[0]
    uneven = [f"MLP widths differ between layers ({min(widths)}..{max(widths)})"] if len(set(widths)) > 1 else []
    uneven += [f"query heads differ between layers ({min(heads)}..{max(heads)})"] if len(set(heads)) > 1 else []
    if uneven and not pad:
        return None, "; ".join(uneven) + " (export.pad=true saves a stock checkpoint zero-padded to the widest layer)"
    width, head_count = max(widths), max(heads)
    overrides = {"intermediate_size": width, "num_attention_heads": head_count}
    if kv != int(model.config.num_key_value_heads):  # every layer lost the same KV groups
        overrides["num_key_value_heads"] = kv
    refusal = stock_refusal(model.config, overrides)
    if refusal is not None:
        padded_heads = stock_head_count(model.config, overrides, head_count, kv)
        if padded_heads is None or not pad:
            hint = (f" (export.pad=true saves a stock checkpoint zero-padded to {padded_heads} query heads)"
                    if padded_heads is not None else "")
            return None, f"transformers refuses the stock config: {refusal}{hint}"
        uneven.append(f"transformers refuses {head_count} query heads ({refusal})")
        head_count = overrides["num_attention_heads"] = padded_heads
    layout = StockLayout(overrides)
    if not uneven and not any(biased):
        return layout, "uniform shapes"
    names = {key: found[0] for key, found in module_names(model).items()}
    head_dim = adapter.head_dim()
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}  # padded copies on the host
    added = 0
    for i in layers:
        mlp, attn = adapter.mlp(i), adapter.attention(i)
        gate, up, down = (names[id(m)] for m in (mlp.gate, mlp.up, mlp.down))
        for name, dim in ((gate, 0), (up, 0), (down, 1)):
            state[f"{name}.weight"] = _pad(state[f"{name}.weight"], dim, width)
        if any(biased):  # the family's flag gives every layer gate/up/down biases: zero where FLAP added none
            hidden = mlp.down.weight.shape[0]
            for name, size in ((gate, width), (up, width)):
                state[f"{name}.bias"] = mlp.gate.weight.new_zeros(size)
            state.setdefault(f"{down}.bias", mlp.down.weight.new_zeros(hidden))
            added += 2 * width + (0 if biased[i] else hidden)
        q, o = names[id(attn.q)], names[id(attn.o)]
        target = head_count * head_dim
        state[f"{q}.weight"] = _pad_groups(state[f"{q}.weight"], 0, kv, target // kv)
        state[f"{o}.weight"] = _pad_groups(state[f"{o}.weight"], 1, kv, target // kv)
        if attn.q.bias is not None:
            state[f"{q}.bias"] = _pad_groups(state[f"{q}.bias"], 0, kv, target // kv)
        added += (width - widths[i]) * 3 * mlp.down.weight.shape[0]
        added += (head_count - heads[i]) * head_dim * (attn.q.weight.shape[1] + attn.o.weight.shape[0]
                                                       + (attn.q.bias is not None))
    layout.state = state
    if any(biased):
        layout.overrides[adapter.stock_mlp_bias] = True
        layout.notes.append(f"{adapter.stock_mlp_bias}=true: zero gate/up biases hold FLAP's down_proj compensation")
    if uneven:
        layout.padded = {"intermediate_size": width, "num_attention_heads": head_count, "zero_parameters": int(added),
                         "kept_mlp_widths": widths, "kept_heads": heads}
        layout.notes.append(f"zero-padded to a stock shape: {added:,} zero parameters; size and speed are those "
                            f"of the padded shape")
    return layout, "; ".join(uneven) + " -> zero-padded" if uneven else "uniform shapes with stock biases"
