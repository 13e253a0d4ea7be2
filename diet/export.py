"""Pruned models leave the framework: a plain transformers checkpoint whenever a stock config describes it.

Uniform shapes (every layer keeps the same MLP width and the same query heads; no added biases, no
dropped layers) are saved with `intermediate_size` / `num_attention_heads` set to the new sizes and
nothing custom, so `AutoModelForCausalLM.from_pretrained(DIR)` (and every tool that reads Hugging Face
checkpoints) loads it. The export is verified before it is kept: the folder is reloaded with plain
transformers and its logits on a probe batch must equal the in-memory model's exactly; otherwise, and
for non-uniform shapes (FLAP's global allocation and bias, mask.scope=global, ShortGPT's dropped
layers, Gemma's hidden-dim pruning whose embedding scale a stock config recomputes), the model is saved
in diet's self-describing format (diet.prune.save_pruned, reloaded by diet.prune.load_pruned). The
folder also gets a model card (README.md) saying how the model was made and evaluated.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from diet.io import atomic_write_text, default_mode
from diet.models.adapters import adapter_for
from diet.prune import move_into_place, save_pruned

STANDARD, SPEC = "transformers", "diet-spec"


def standard_overrides(model: nn.Module) -> tuple[dict[str, int] | None, str]:
    """The stock config values that describe the pruned shapes, or (None, why not)."""
    adapter = adapter_for(model)
    widths, heads = adapter.mlp_widths(), adapter.head_counts()
    pruning = getattr(model.config, "diet_pruning", None) or {}
    if len(set(widths)) > 1:
        return None, f"MLP widths differ between layers ({min(widths)}..{max(widths)})"
    if len(set(heads)) > 1:
        return None, f"query heads differ between layers ({min(heads)}..{max(heads)})"
    if any(adapter.mlp(i).down.bias is not None for i in range(adapter.num_layers())):
        return None, "down_proj biases were added (FLAP's compensation), which the stock MLP does not have"
    if pruning.get("dropped_layers"):
        return None, "whole layers were dropped"
    return {"intermediate_size": widths[0], "num_attention_heads": heads[0]}, "uniform shapes"


@contextlib.contextmanager
def stock_config(model: nn.Module, overrides: Mapping[str, int]) -> Iterator[None]:
    """The model's config as a stock one for the duration of a save_pretrained (restored afterwards)."""
    config = model.config
    saved = {key: getattr(config, key) for key in overrides}
    pruning = getattr(config, "diet_pruning", None)
    if pruning is not None:
        delattr(config, "diet_pruning")
    try:
        for key, value in overrides.items():
            setattr(config, key, value)
        yield
    finally:
        for key, value in saved.items():
            setattr(config, key, value)
        if pruning is not None:
            config.diet_pruning = pruning


def probe_batch(model: nn.Module) -> torch.Tensor:
    vocab = model.get_input_embeddings().weight.shape[0]
    generator = torch.Generator().manual_seed(0)
    return torch.randint(min(4, vocab - 1), vocab, (2, 12), generator=generator)


@torch.no_grad()
def reloads_identically(model: nn.Module, directory: Path) -> bool:
    """Plain `AutoModelForCausalLM.from_pretrained(directory)` gives exactly the in-memory model's logits."""
    from transformers import AutoModelForCausalLM

    parameter = next(model.parameters())
    reloaded = AutoModelForCausalLM.from_pretrained(
        str(directory), dtype=parameter.dtype, attn_implementation=model.config._attn_implementation
    ).to(parameter.device).eval()
    ids = probe_batch(model).to(parameter.device)
    return bool(torch.equal(reloaded(input_ids=ids).logits, model(input_ids=ids).logits))


def weights_sha256(directory: Path) -> str:
    """One digest over the folder's weight files (name and content), in name order."""
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.safetensors")):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def export_model(model: nn.Module, tokenizer: Any, directory: str | Path, card: str,
                 spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Save the pruned model, tokenizer and card into `directory` (atomically: a staging folder renamed
    into place); a non-empty existing folder is refused. Returns what the record stores."""
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise FileExistsError(f"save_model={str(directory)!r} exists and is not empty: choose another folder")
    overrides, reason = standard_overrides(model)
    saved_format = SPEC
    if overrides is not None:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
        os.chmod(staging, default_mode(directory=True))
        try:
            with stock_config(model, overrides):
                model.save_pretrained(staging, safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(staging)
            if reloads_identically(model, staging):
                atomic_write_text(staging / "README.md", card)
                move_into_place(staging, directory)
                saved_format = STANDARD
            else:
                reason = "a stock reload did not reproduce the logits exactly"
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    if saved_format == SPEC:
        save_pruned(model, tokenizer, directory, spec)
        atomic_write_text(directory / "README.md", card)
    return {"path": str(directory), "format": saved_format, "why": reason, "weights_sha256": weights_sha256(directory),
            "load_with": "transformers.AutoModelForCausalLM.from_pretrained" if saved_format == STANDARD
            else "diet.prune.load_pruned"}


# --------------------------------------------------------------------------- where, and the model card

LICENCES = {"gemma": "Gemma Terms of Use (https://ai.google.dev/gemma/terms): the base weights' licence applies",
            "gemma2": "Gemma Terms of Use (https://ai.google.dev/gemma/terms): the base weights' licence applies",
            "gemma3_text": "Gemma Terms of Use (https://ai.google.dev/gemma/terms): the base weights' licence applies"}


def save_path(cfg: Mapping[str, Any], stem: str) -> Path | None:
    """`save_model`: null/false = do not save; true = saved_models/<record stem>; a string = that folder."""
    value = cfg.get("save_model")
    if value in (None, False):
        return None
    return Path("saved_models") / stem if value is True else Path(str(value)).expanduser()


def check_save_path(path: Path | None) -> None:
    """Before any model is loaded: never overwrite a saved model."""
    from diet.errors import DietConfigError

    if path is not None and path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise DietConfigError(f"save_model={str(path)!r} exists and is not empty: a saved model is never "
                              f"overwritten; choose another folder or remove it")


def model_card(facts: Mapping[str, Any], metrics: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """README.md of a saved model: base model, method, sparsity, calibration, parameters, how it was
    evaluated (and, once evaluated, the run's scores), the command, the base weights' licence."""
    lines = [f"# {facts['model']} pruned with {facts['method']} (diet)", "",
             f"- base model: {facts['model']} ({facts['model_type']}, source {facts['source']})",
             f"- method: {facts['method']}, target sparsity {facts['sparsity']} of the {facts['dims']} dimension, "
             f"actual {facts['actual']:.4f}",
             f"- calibration: {facts['calibration']}",
             f"- parameters: {facts['params_before']:,} -> {facts['params_after']:,}",
             f"- evaluation: lm-eval 0-shot, BOS prepended: {facts['bos_prepended']} "
             "(lm-eval's HF backend prepends Gemma's BOS by model_type; pass add_bos_token=True elsewhere)",
             f"- made by: `{facts['command']}` (diet {facts['code']}, config hash {facts['config_hash']})",
             f"- licence: {LICENCES.get(facts['model_type'], 'that of the base model')}", ""]
    if metrics:
        lines += ["| task | metric | score | n |", "|---|---|---:|---:|",
                  *[f"| {task} | {m['metric']} | {100 * m['score']:.1f} ± {100 * (m.get('score_stderr') or 0):.1f} "
                    f"| {m['n']} |" for task, m in metrics.items()], ""]
    else:
        lines += ["Not evaluated yet (saved after pruning, before evaluation).", ""]
    return "\n".join(lines)
