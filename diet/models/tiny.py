"""Tiny random Gemma-2, Gemma-3 (text) and Llama models and a byte-level tokenizer, built in-process (no download)."""

from __future__ import annotations

from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from torch import nn
from transformers import (Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig,
                          LlamaForCausalLM, PreTrainedTokenizerFast)

from diet.registry import Registry

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>"]  # ids 0..3, as in Gemma


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: 4 special tokens + 256 byte symbols; prepends <bos> like Gemma's."""
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):  # alphabet() order is random
        vocab.setdefault(symbol, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


# The published Gemma-2 layouts, for random-weight models of the real shape (speed and memory
# benchmarks without the gated hub checkpoints): tiny_gemma2(**GEMMA2_SHAPES["2b"]).
GEMMA2_SHAPES: dict[str, dict[str, Any]] = {
    "2b": dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
               num_attention_heads=8, num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256,
               sliding_window=4096, max_position_embeddings=8192),
    "9b": dict(vocab_size=256000, hidden_size=3584, intermediate_size=14336, num_hidden_layers=42,
               num_attention_heads=16, num_key_value_heads=8, head_dim=256, query_pre_attn_scalar=256,
               sliding_window=4096, max_position_embeddings=8192),
}


TINY_ARCHITECTURES: Registry[Any] = Registry("tiny architecture")


def _seeded(build: Any, seed: int, norm_centre: float) -> nn.Module:
    """`build()` under `seed` (the global RNG restored afterwards), norm weights drawn around `norm_centre`."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = build()
        # Random init leaves norm weights at a constant (0 in Gemma's 1+w parametrisation, 1 in Llama);
        # give them spread so tests exercise the norms.
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "norm" in name:
                    param.normal_(norm_centre, 0.1)
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval()


COMMON: dict[str, Any] = dict(vocab_size=len(SPECIAL_TOKENS) + 256, hidden_size=64, intermediate_size=128,
                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                              max_position_embeddings=512, pad_token_id=0, eos_token_id=1, bos_token_id=2,
                              attn_implementation="eager")


@TINY_ARCHITECTURES.register("gemma2")
def tiny_gemma2(seed: int = 0, **overrides: Any) -> Gemma2ForCausalLM:
    """Random-weight Gemma2ForCausalLM with the exact Gemma-2 layout (GQA, 4 norms/block, soft-capping)."""
    config = Gemma2Config(**{**COMMON, "sliding_window": 64, **overrides})
    return _seeded(lambda: Gemma2ForCausalLM(config), seed, norm_centre=0.0)


@TINY_ARCHITECTURES.register("gemma3")
def tiny_gemma3(seed: int = 0, **overrides: Any) -> Gemma3ForCausalLM:
    """Random-weight Gemma3ForCausalLM (text only: the Gemma-3 270M architecture, q/k norms, sliding and full
    attention layers)."""
    config = Gemma3TextConfig(**{**COMMON, "sliding_window": 64, **overrides})
    return _seeded(lambda: Gemma3ForCausalLM(config), seed, norm_centre=0.0)


@TINY_ARCHITECTURES.register("llama")
def tiny_llama(seed: int = 0, **overrides: Any) -> LlamaForCausalLM:
    """Random-weight LlamaForCausalLM (the SmolLM2 family: GQA, 2 norms/block, untied head by default)."""
    config = LlamaConfig(**{**COMMON, **overrides})
    return _seeded(lambda: LlamaForCausalLM(config), seed, norm_centre=1.0)
