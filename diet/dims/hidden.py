"""Hidden (residual-stream) dimensions: one global mask for the whole model (diet.prune.hidden)."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from diet.dims.base import register_dimension, Dimension, has_bias, SPEC_FILE
from diet.errors import PrunedCheckpointError
from diet.models.adapters import adapter_for
from diet.prune.hidden import prune_hidden
from diet.prune.rotation import is_rotated
from diet.select import masks


@register_dimension
class HiddenDims(Dimension):
    name = "hidden"
    order = 3
    random_stream = 2_000_003

    def widths(self, model: nn.Module) -> list[int]:
        return [adapter_for(model).hidden_width()]

    def entry_costs(self, model: nn.Module) -> list[int]:
        adapter, total = adapter_for(model), 0
        for layer in range(adapter.num_layers()):
            m, a = adapter.mlp(layer), adapter.attention(layer)
            total += a.q.out_features + a.k.out_features + a.v.out_features + a.o.in_features + has_bias(a.o)
            total += m.gate.out_features + m.up.out_features + m.down.in_features + has_bias(m.down)
        total += sum(1 + int(getattr(norm, "bias", None) is not None) for norm in adapter.hidden_norms())
        return [total]

    def select(self, entry_scores: list[Tensor], sparsity: float, scope: str, min_keep_fraction: float) -> list[Tensor]:
        return masks.select_top(entry_scores, sparsity, scope="layer")

    def shape_spec(self, model: nn.Module) -> dict[str, Any]:
        if is_rotated(model):  # a SliceGPT model's widths are its rotation spec's (diet.prune.rotation)
            return {}
        return {"hidden_size": adapter_for(model).hidden_width()}

    def config_expresses(self, spec: Mapping[str, Any], config: Any) -> bool:
        # hidden pruning rewrites config.hidden_size itself (diet.prune.hidden): the two agree, unless
        # save_pruned wrote a wider one that transformers accepts (config_hidden_size), sliced back by rebuild
        width = spec.get("hidden_size")
        if width is None or int(width) == int(config.hidden_size):
            return True
        if spec.get("config_hidden_size") is not None and int(spec["config_hidden_size"]) == int(config.hidden_size):
            return False
        raise PrunedCheckpointError(f"{SPEC_FILE} has hidden_size {width}, config.json has {config.hidden_size}")

    def rebuild(self, model: nn.Module, spec: Mapping[str, Any]) -> None:
        width = spec.get("hidden_size")
        if width is not None and int(width) < adapter_for(model).hidden_width():  # shapes only: weights load next
            prune_hidden(model, torch.arange(adapter_for(model).hidden_width()) < int(width))

    def prune(self, model: nn.Module, keep: list[Tensor]) -> None:
        prune_hidden(model, keep[0])
