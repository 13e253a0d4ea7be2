"""KV groups: a KV head with the query heads that read it (k_proj / v_proj rows, q_proj rows and o_proj columns),
removed whole per layer (diet.prune.attention.prune_kv_groups). LLM-Pruner's block-wise attention unit; it scores
them itself, the activation-scored methods do not (`scored = False`)."""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor, nn

from diet.dims.base import register_dimension, Dimension, has_bias, SPEC_FILE
from diet.errors import PrunedCheckpointError
from diet.models.adapters import adapter_for
from diet.prune.attention import prune_kv_groups, resize_kv_groups, zero_kv_groups


@register_dimension
class KVGroups(Dimension):
    name = "kv_groups"
    order = 1
    scored = False

    def widths(self, model: nn.Module) -> list[int]:
        return adapter_for(model).kv_head_counts()

    def entry_costs(self, model: nn.Module) -> list[int]:
        adapter = adapter_for(model)
        head_dim = adapter.head_dim()
        costs = []
        for layer in range(adapter.num_layers()):
            a = adapter.attention(layer)
            size = adapter.num_heads(layer) // adapter.num_kv_heads(layer)
            costs.append(head_dim * (size * (a.q.in_features + has_bias(a.q) + a.o.out_features)
                                     + a.k.in_features + has_bias(a.k) + a.v.in_features + has_bias(a.v)))
        return costs

    def prune(self, model: nn.Module, keep: list[Tensor]) -> None:
        prune_kv_groups(model, keep)

    def zero(self, model: nn.Module, keep: list[Tensor]) -> None:
        zero_kv_groups(model, keep)

    def shape_spec(self, model: nn.Module) -> dict[str, Any]:
        return {"num_kv_heads": self.widths(model), "num_key_value_heads": int(model.config.num_key_value_heads)}

    @staticmethod
    def _kv_heads(spec: Mapping[str, Any], config: Any) -> list[int]:
        # checkpoints written before KV-group pruning existed have no num_kv_heads: every layer has the config's
        return [int(h) for h in spec.get("num_kv_heads") or [config.num_key_value_heads] * config.num_hidden_layers]

    def config_expresses(self, spec: Mapping[str, Any], config: Any) -> bool:
        kv = self._kv_heads(spec, config)
        if len(kv) != config.num_hidden_layers:
            raise PrunedCheckpointError(
                f"{SPEC_FILE} has {len(kv)} num_kv_heads, config.json has {config.num_hidden_layers} layers")
        return all(h == config.num_key_value_heads for h in kv)

    def rebuild(self, model: nn.Module, spec: Mapping[str, Any]) -> None:
        kv = self._kv_heads(spec, model.config)
        if any(h != model.config.num_key_value_heads for h in kv):
            resize_kv_groups(model, kv)
