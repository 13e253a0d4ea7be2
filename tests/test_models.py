"""Model loading: adapters per architecture family, clear errors for what is not supported."""

from __future__ import annotations

import pytest
from transformers import GPT2Config, GPT2LMHeadModel

from diet.errors import UnsupportedArchitectureError
from diet.models import adapter_for, load_model
from diet.models.adapters import parameter_counts
from diet.models.tiny import tiny_gemma2


def test_tiny_gemma2_adapter_names_layers_and_heads():
    model = tiny_gemma2(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=32)
    adapter = adapter_for(model)
    assert adapter.family == "gemma2" and adapter.num_layers() == 3
    assert adapter.mlp_widths() == [128, 128, 128]
    assert adapter.head_dim() == 32 and adapter.num_heads(0) == 4 and adapter.num_kv_heads(0) == 2
    counts = parameter_counts(model)
    assert counts["total"] == counts["embedding"] + counts["non_embedding"]
    assert counts["embedding"] == 260 * 64  # tied LM head counted once


def test_unsupported_architecture_fails_at_load_listing_supported_ones(tmp_path):
    folder = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=32)).save_pretrained(folder)
    with pytest.raises(UnsupportedArchitectureError, match=r"'gpt2'.*available: gemma2, gemma3_text, llama"):
        load_model({"name": "custom", "source": "pretrained", "name_or_path": str(folder), "dtype": "float32",
                    "device": "cpu", "attn_implementation": "eager"})
