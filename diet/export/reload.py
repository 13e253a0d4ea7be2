"""A saved pruned model back in memory, by the loader its record names (record["saved_model"]["load_with"]).

Stock checkpoints load with plain transformers (no diet code, as any user's tool would); diet's spec format
with diet.export.checkpoint.load_pruned, which rebuilds the per-layer shapes from pruning_spec.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from diet.export.checkpoint import load_pruned


def _stock(path: Path, attn_implementation: str | None) -> tuple[nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype="auto", attn_implementation=attn_implementation)
    return model.eval(), AutoTokenizer.from_pretrained(str(path))


def _spec(path: Path, attn_implementation: str | None) -> tuple[nn.Module, Any]:
    model, tokenizer, _ = load_pruned(path, attn_implementation=attn_implementation)  # None: the spec's own
    return model.eval(), tokenizer


LOADERS: dict[str, Callable[[Path, str | None], tuple[nn.Module, Any]]] = {
    "transformers.AutoModelForCausalLM.from_pretrained": _stock,
    "diet.export.checkpoint.load_pruned": _spec,
    "diet.prune.checkpoint.load_pruned": _spec,  # the same loader, as records written before it moved name it
}


def load_saved(saved: Mapping[str, Any], attn_implementation: str | None = None,
               device: str | torch.device = "cpu") -> tuple[nn.Module, Any]:
    """(model, tokenizer) of a saved model, loaded the way `saved["load_with"]` says."""
    loader = LOADERS.get(saved["load_with"])
    if loader is None:
        raise ValueError(f"saved model {saved['path']!r} names loader {saved['load_with']!r}; known: {sorted(LOADERS)}")
    model, tokenizer = loader(Path(saved["path"]), attn_implementation)
    return model.to(device), tokenizer
