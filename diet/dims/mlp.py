"""MLP channels: gate/up rows and down columns of every layer, ranked per layer or globally (method.mask.scope)."""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor, nn

from diet.dims.base import register_dimension, Dimension, has_bias, SPEC_FILE
from diet.errors import PrunedCheckpointError
from diet.models.adapters import adapter_for
from diet.prune.mlp import prune_mlp_channels, set_down_bias, zero_mlp_channels
from diet.prune.modules import empty_linear, module_names, replace_module


@register_dimension
class MLPChannels(Dimension):
    name = "mlp"
    order = 0
    scopes = ("layer", "global")

    def widths(self, model: nn.Module) -> list[int]:
        return adapter_for(model).mlp_widths()

    def entry_costs(self, model: nn.Module) -> list[int]:
        adapter = adapter_for(model)
        costs = []
        for layer in range(adapter.num_layers()):
            m = adapter.mlp(layer)
            costs.append(m.gate.in_features + has_bias(m.gate) + m.up.in_features + has_bias(m.up) + m.down.out_features)
        return costs

    def prune(self, model: nn.Module, keep: list[Tensor]) -> None:
        prune_mlp_channels(model, keep)

    def zero(self, model: nn.Module, keep: list[Tensor]) -> None:
        zero_mlp_channels(model, keep)

    def shape_spec(self, model: nn.Module) -> dict[str, Any]:
        return {"mlp_widths": self.widths(model), "intermediate_size": int(model.config.intermediate_size)}

    def config_expresses(self, spec: Mapping[str, Any], config: Any) -> bool:
        widths = [int(w) for w in spec["mlp_widths"]]
        if len(widths) != config.num_hidden_layers:
            raise PrunedCheckpointError(
                f"{SPEC_FILE} has {len(widths)} mlp_widths, config.json has {config.num_hidden_layers} layers")
        return all(width == config.intermediate_size for width in widths)

    def rebuild(self, model: nn.Module, spec: Mapping[str, Any]) -> None:
        adapter, names = adapter_for(model), module_names(model)
        for layer, width in enumerate(int(w) for w in spec["mlp_widths"]):
            mlp = adapter.mlp(layer)
            if width != mlp.down.in_features:
                hidden = mlp.down.out_features
                replace_module(model, names, mlp.gate, empty_linear(hidden, width, mlp.gate))
                replace_module(model, names, mlp.up, empty_linear(hidden, width, mlp.up))
                replace_module(model, names, mlp.down, empty_linear(width, hidden, mlp.down))

    def compensate(self, model: nn.Module, bias: list[Tensor | None]) -> None:
        set_down_bias(model, bias)
