"""One adapter per architecture family: everything the framework knows about a model's layout.

The contract: where the decoder layers live (`layers`, `backbone`), the MLP's kind and projections (`mlp_kind`,
`mlp`), the attention layout (`attention`, `num_kv_heads`, `head_dim`, `head_counts`), the norms that act on the
residual stream (`hidden_norms`), the input embedding's scale (`embedding_scale`), the unit counts of every
prunable dimension (`mlp_widths`, `head_counts`, `kv_head_counts`, `hidden_width`, `num_layers`) and the config
flag of the family's stock MLP biases (`stock_mlp_bias`). Pruning, profiling and export talk only to an adapter,
never to `if "llama" in name` branches; tests/test_adapters.py runs one contract suite against every registered
adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from torch import nn

from diet.errors import UnsupportedArchitectureError
from diet.registry import Registry, unknown_name_message

ADAPTERS: Registry[type["ModelAdapter"]] = Registry("architecture")


@dataclass(frozen=True)
class MLPProjections:
    gate: nn.Linear
    up: nn.Linear
    down: nn.Linear


@dataclass(frozen=True)
class AttentionProjections:
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear


class ModelAdapter:
    """Decoder-only transformer with `model.model.layers[i].{mlp,self_attn}` (HF Llama/Gemma layout)."""

    family: ClassVar[str] = "base"
    # the config flag that gives the family's stock MLP biases (gate/up/down), None if it has none
    stock_mlp_bias: ClassVar[str | None] = None
    # every pruner assumes a gated MLP (down(act(gate(x)) * up(x))): its channels are gate/up rows, down columns
    mlp_kind: ClassVar[str] = "gated"
    # a decoder layer's own norms over the residual stream (its attention's q_norm/k_norm act on head_dim)
    layer_norms: ClassVar[tuple[str, ...]] = ("input_layernorm", "post_attention_layernorm")
    # the norms whose output the attention and the MLP read (SliceGPT folds their scales into those readers), the
    # norms on the attention and MLP branch outputs before the residual add (Gemma; None: none), and what a norm
    # adds to its weight before scaling (Gemma multiplies by 1 + w)
    reading_norms: ClassVar[tuple[str, str]] = ("input_layernorm", "post_attention_layernorm")
    branch_norms: ClassVar[tuple[str | None, str | None]] = (None, None)
    norm_offset: ClassVar[float] = 0.0

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.config = model.config

    def backbone(self) -> nn.Module:
        """The decoder stack without the LM head (profiling needs no 262k-wide logits)."""
        return self.model.model

    def layers(self) -> list[nn.Module]:
        return list(self.model.model.layers)

    def num_layers(self) -> int:
        return len(self.layers())

    def mlp(self, layer_index: int) -> MLPProjections:
        mlp = self.layers()[layer_index].mlp
        return MLPProjections(gate=mlp.gate_proj, up=mlp.up_proj, down=mlp.down_proj)

    def attention(self, layer_index: int) -> AttentionProjections:
        attn = self.layers()[layer_index].self_attn
        return AttentionProjections(q=attn.q_proj, k=attn.k_proj, v=attn.v_proj, o=attn.o_proj)

    def mlp_widths(self) -> list[int]:
        """Current number of MLP channels per layer (layers may differ after pruning)."""
        return [self.mlp(i).down.in_features for i in range(self.num_layers())]

    def num_heads(self, layer_index: int) -> int:
        return self.attention(layer_index).o.in_features // self.head_dim()

    def num_kv_heads(self, layer_index: int) -> int:
        """KV heads of one layer now (KV-group pruning removes whole groups: layers may differ)."""
        return self.attention(layer_index).k.out_features // self.head_dim()

    def kv_head_counts(self) -> list[int]:
        return [self.num_kv_heads(i) for i in range(self.num_layers())]

    def head_counts(self) -> list[int]:
        """Current number of query heads per layer (layers may differ after head pruning)."""
        return [self.num_heads(i) for i in range(self.num_layers())]

    def hidden_width(self) -> int:
        """Current width of the residual stream (the input embedding's columns)."""
        return int(self.model.get_input_embeddings().weight.shape[1])

    def head_dim(self) -> int:
        # Gemma's head_dim (256) is not hidden_size / heads: always trust the config field first.
        head_dim = getattr(self.config, "head_dim", None)
        return int(head_dim or self.config.hidden_size // self.config.num_attention_heads)

    def hidden_norms(self) -> list[nn.Module]:
        """Every norm over the residual stream: each layer's `layer_norms`, then the final norm."""
        norms = [getattr(layer, name) for layer in self.layers() for name in self.layer_norms]
        final = getattr(self.backbone(), "norm", None)
        return norms + ([final] if final is not None else [])

    def embedding_scale(self) -> float | None:
        """The input-embedding multiplier (Gemma: sqrt of the hidden size the model was BUILT with, which
        hidden pruning must keep), None for families without one."""
        scale = getattr(self.model.get_input_embeddings(), "embed_scale", None)
        if isinstance(scale, torch.Tensor) and scale.is_meta:  # a shapes-only (meta) model: the value Gemma computes
            return float(self.config.hidden_size) ** 0.5
        return None if scale is None else float(scale)

    def embedding_parameters(self) -> int:
        """Parameters of the input embedding plus an untied LM head."""
        embed = self.model.get_input_embeddings().weight
        head = self.model.get_output_embeddings().weight
        total = embed.numel()
        if head.data_ptr() != embed.data_ptr():
            total += head.numel()
        return total


@ADAPTERS.register("gemma2")
class Gemma2Adapter(ModelAdapter):
    family = "gemma2"
    layer_norms = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                   "post_feedforward_layernorm")
    reading_norms = ("input_layernorm", "pre_feedforward_layernorm")
    branch_norms = ("post_attention_layernorm", "post_feedforward_layernorm")
    norm_offset = 1.0


@ADAPTERS.register("gemma3_text")
class Gemma3TextAdapter(ModelAdapter):
    family = "gemma3_text"
    layer_norms = Gemma2Adapter.layer_norms
    reading_norms = Gemma2Adapter.reading_norms
    branch_norms = Gemma2Adapter.branch_norms
    norm_offset = Gemma2Adapter.norm_offset


@ADAPTERS.register("llama")
class LlamaAdapter(ModelAdapter):
    family = "llama"
    stock_mlp_bias = "mlp_bias"


def adapter_for(model: nn.Module) -> ModelAdapter:
    """The adapter for `model.config.model_type`; an unsupported architecture lists the supported ones."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in ADAPTERS:
        raise UnsupportedArchitectureError(
            unknown_name_message("architecture (model_type)", model_type, ADAPTERS.names())
            + ". Add an adapter in diet/models/adapters.py to support it."
        )
    return ADAPTERS.get(model_type)(model)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Total and non-embedding parameter counts (tied weights counted once)."""
    total = sum(p.numel() for p in model.parameters())  # parameters() de-duplicates tied tensors
    embedding = adapter_for(model).embedding_parameters()
    return {"total": int(total), "embedding": int(embedding), "non_embedding": int(total - embedding)}
