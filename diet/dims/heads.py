"""Query heads: whole heads per layer, ranked and kept in equal numbers within each KV group (GQA rule,
diet.prune.attention). Ranking "per layer" on the (layer, KV group) entries keeps the same number of
heads in every group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from diet.dims.base import register_dimension, Dimension, Layout, has_bias, SPEC_FILE
from diet.errors import PrunedCheckpointError
from diet.errors import DietConfigError
from diet.models.adapters import adapter_for
from diet.prune.attention import prune_attention_heads, resize_attention_heads, zero_attention_heads
from diet.select import masks


@dataclass(frozen=True)
class HeadLayout(Layout):
    """Per layer: number of KV groups and query heads per group."""

    groups: tuple[int, ...]
    group_size: tuple[int, ...]

    @classmethod
    def of(cls, model: nn.Module) -> "HeadLayout":
        adapter = adapter_for(model)
        kv = adapter.kv_head_counts()
        return cls(tuple(kv), tuple(count // groups for count, groups in zip(adapter.head_counts(), kv)))

    def split(self, per_layer: list[Tensor]) -> list[Tensor]:
        """Per-layer per-head tensors -> one tensor per (layer, KV group), layer-major."""
        if len(per_layer) != len(self.groups):
            raise DietConfigError(f"got head tensors for {len(per_layer)} layers, the model has {len(self.groups)}")
        return [segment for layer, g in zip(per_layer, self.groups) for segment in torch.as_tensor(layer).chunk(g)]

    def join(self, segments: list[Tensor]) -> list[Tensor]:
        out, start = [], 0
        for g in self.groups:
            out.append(torch.cat(list(segments[start : start + g])))
            start += g
        return out


def select_heads(scores: list[Tensor], sparsity: float, layout: HeadLayout) -> list[Tensor]:
    """Per layer, per KV group, keep the top keep_count(heads_per_group, sparsity) heads by score."""
    return layout.join(masks.select_top(layout.split(scores), sparsity, scope="layer"))


@register_dimension
class QueryHeads(Dimension):
    name = "heads"
    order = 2
    random_stream = 1_000_003

    def widths(self, model: nn.Module) -> list[int]:
        return adapter_for(model).head_counts()

    def layout(self, model: nn.Module) -> HeadLayout:
        return HeadLayout.of(model)

    def entry_widths(self, model: nn.Module) -> list[int]:
        layout = HeadLayout.of(model)
        return [n for g, n in zip(layout.groups, layout.group_size) for _ in range(g)]

    def entry_costs(self, model: nn.Module) -> list[int]:
        adapter = adapter_for(model)
        head_dim, layout = adapter.head_dim(), HeadLayout.of(model)
        costs = []
        for layer, g in enumerate(layout.groups):
            a = adapter.attention(layer)
            costs += [head_dim * (a.q.in_features + has_bias(a.q) + a.o.out_features)] * g
        return costs

    def select(self, entry_scores: list[Tensor], sparsity: float, scope: str, min_keep_fraction: float) -> list[Tensor]:
        return masks.select_top(entry_scores, sparsity, scope="layer")  # a global ranking would unequalise groups

    def prune(self, model: nn.Module, keep: list[Tensor]) -> None:
        prune_attention_heads(model, keep)

    def shape_spec(self, model: nn.Module) -> dict[str, Any]:
        return {"num_heads": self.widths(model), "num_attention_heads": int(model.config.num_attention_heads)}

    @staticmethod
    def _heads(spec: Mapping[str, Any], config: Any) -> list[int]:
        # checkpoints written before head pruning existed have no num_heads: every layer has the config's count
        return [int(h) for h in spec.get("num_heads") or [config.num_attention_heads] * config.num_hidden_layers]

    def config_expresses(self, spec: Mapping[str, Any], config: Any) -> bool:
        heads = self._heads(spec, config)
        if len(heads) != config.num_hidden_layers:
            raise PrunedCheckpointError(
                f"{SPEC_FILE} has {len(heads)} num_heads, config.json has {config.num_hidden_layers} layers")
        return all(h == config.num_attention_heads for h in heads)

    def rebuild(self, model: nn.Module, spec: Mapping[str, Any]) -> None:
        heads = self._heads(spec, model.config)
        if any(h != model.config.num_attention_heads for h in heads):
            resize_attention_heads(model, heads)

    def zero(self, model: nn.Module, keep: list[Tensor]) -> None:
        zero_attention_heads(model, keep)
