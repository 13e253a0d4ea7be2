"""Pruned models leave the framework: a plain transformers checkpoint whenever a stock config describes it.

Uniform shapes (every layer keeps the same MLP width and the same query heads; ShortGPT's dropped
layers with the config's layer count and types) are saved with `intermediate_size` /
`num_attention_heads` set to the new sizes and nothing custom, so `AutoModelForCausalLM.from_pretrained(DIR)`
(and every tool that reads Hugging Face checkpoints) loads it. FLAP's down_proj bias is stock where the
family has MLP biases (Llama's `mlp_bias`), and non-uniform widths become stock with `export.pad=true`
(zero-padded to the widest layer, diet/export/stock_layout.py). The export is verified before it is kept: the
folder is reloaded with plain transformers and its logits on a probe batch must equal the in-memory
model's exactly; otherwise (e.g. Gemma's hidden-dim pruning, whose embedding scale a stock config
recomputes), and for what no stock config describes, the model is saved in diet's self-describing
format (diet.export.checkpoint.save_pruned, reloaded by diet.export.checkpoint.load_pruned). The saved tokenizer prepends BOS
by default exactly when the run evaluated with it, and the folder gets a model card (README.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from diet.bind import bind
from diet.errors import DietConfigError
from diet.io import atomic_write_text, default_mode
from diet.models.adapters import adapter_for
from diet.models.stock_config import PRIVATE, config_values
from diet.export.checkpoint import move_into_place, save_pruned
from diet.rounding import fp32_bound
from diet.export.room import check_room, is_io_failure, model_bytes, state_bytes
from diet.export.stock_layout import stock_layout

STANDARD, SPEC = "transformers", "diet-spec"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportOptions:
    """The `export` section (conf/config.yaml)."""

    pad: bool = False             # zero-pad non-uniform layers to the widest: a stock checkpoint
    wandb_artifact: bool = False  # log the saved folder as a W&B model artifact


def export_options(cfg: Mapping[str, Any]) -> ExportOptions:
    return bind(ExportOptions, cfg.get("export") or {}, "export")


def stock_config(model: nn.Module, overrides: Mapping[str, Any]) -> contextlib.AbstractContextManager:
    """The model's config as a stock one for the duration of a save_pretrained (restored afterwards)."""
    return config_values(model.config, overrides, drop=PRIVATE)


@contextlib.contextmanager
def waiting_on_the_host(model: nn.Module) -> Iterator[None]:
    """On a GPU: the model waits in host memory (and the GPU cache is emptied) while the block runs, then goes
    back, so a reload of a 9B export never holds two copies of the weights on the GPU. On the CPU: nothing."""
    device = next(model.parameters()).device
    if device.type != "cuda":
        yield
        return
    model.to("cpu")
    torch.cuda.empty_cache()
    try:
        yield
    finally:
        torch.cuda.empty_cache()
        model.to(device)


def probe_batch(model: nn.Module) -> torch.Tensor:
    vocab = model.get_input_embeddings().weight.shape[0]
    generator = torch.Generator().manual_seed(0)
    return torch.randint(min(4, vocab - 1), vocab, (2, 12), generator=generator)


@torch.no_grad()
def reload_agreement(model: nn.Module, directory: Path, padded_width: int | None = None) -> dict[str, Any]:
    """Reload `directory` with plain `AutoModelForCausalLM.from_pretrained` and compare its logits on a probe
    batch with the in-memory model's. Unpadded: they must be equal. Padded: the zero columns change the
    matmul's summation blocking, so the sums may differ in rounding only; allowed is diet.rounding's bound,
    eps(dtype) * max|logit| * sqrt(padded width) * layers, and the same argmax everywhere
    (a wrongly padded channel moves logits by O(0.1), far above it)."""
    from transformers import AutoModelForCausalLM

    parameter = next(model.parameters())
    ids = probe_batch(model).to(parameter.device)
    expected = model(input_ids=ids).logits
    with waiting_on_the_host(model):  # one copy of the weights on a GPU at a time, compared on the same device
        placement = {"device_map": str(parameter.device)} if parameter.device.type == "cuda" else {}
        reloaded = AutoModelForCausalLM.from_pretrained(
            str(directory), dtype=parameter.dtype, attn_implementation=model.config._attn_implementation, **placement
        ).eval()
        got = reloaded(input_ids=ids).logits
        del reloaded
    difference = float((expected - got).abs().max())
    if padded_width is None:
        return {"identical": bool(torch.equal(expected, got)), "max_logit_difference": difference}
    bound = fp32_bound(expected, depth=adapter_for(model).num_layers(), length=padded_width,
                       eps=torch.finfo(expected.dtype).eps)
    same_argmax = bool(torch.equal(expected.argmax(-1), got.argmax(-1)))
    return {"identical": difference <= bound and same_argmax, "max_logit_difference": difference,
            "rounding_bound": bound, "same_argmax": same_argmax}


def weights_sha256(directory: Path) -> str:
    """One digest over the folder's weight files (name and content), in name order."""
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.safetensors")):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _bos_matches(tokenizer: Any, directory: Path, prepend: bool | None) -> bool:
    """The saved tokenizer prepends BOS by default exactly when the run evaluated with one."""
    if tokenizer is None or prepend is None:
        return True
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(str(directory))
    starts = reloaded.bos_token_id is not None and reloaded("a").input_ids[:1] == [reloaded.bos_token_id]
    return starts == prepend


def _save_tokenizer(tokenizer: Any, directory: Path, prepend: bool | None) -> None:
    """Save the tokenizer so that, loaded by itself, it prepends BOS the way the run evaluated
    (lm-eval's HF backend decides Gemma's BOS by model_type, its vLLM backend and other tools by the
    tokenizer's own default)."""
    if tokenizer is None:
        return
    tokenizer.save_pretrained(directory)
    if _bos_matches(tokenizer, directory, prepend):
        return
    previous = getattr(tokenizer, "add_bos_token", None)
    try:
        tokenizer.add_bos_token = prepend  # Llama/Gemma fast tokenizers rebuild their post-processor
        tokenizer.save_pretrained(directory)
    finally:
        tokenizer.add_bos_token = previous
    if not _bos_matches(tokenizer, directory, prepend):
        raise RuntimeError(f"the saved tokenizer does not {'prepend' if prepend else 'omit'} BOS by default as the "
                           f"run evaluated; pass add_bos_token={prepend} when loading {directory}")


def _save_stock(model: nn.Module, layout: Any, staging: Path, padded_width: int | None) -> dict[str, Any]:
    """save_pretrained with the stock config, then the reload check; a transformers release that refuses the
    shape on saving or reloading gives {"identical": False, "refused": why} (the export falls back to the spec
    format) instead of a traceback."""
    try:
        with stock_config(model, layout.overrides):
            model.save_pretrained(staging, safe_serialization=True, state_dict=layout.state)
        return reload_agreement(model, staging, padded_width)
    except Exception as error:  # noqa: BLE001 - its validators raise ValueError, StrictDataclass*Error, ...
        if is_io_failure(error):  # a full or failing disk is not a refusal: no fallback to another format
            raise
        return {"identical": False, "refused": " ".join(str(error).split())[:500]}


def export_model(model: nn.Module, tokenizer: Any, directory: str | Path, card: str,
                 spec: Mapping[str, Any] | None = None, *, pad: bool = False,
                 bos_prepended: bool | None = None) -> dict[str, Any]:
    """Save the pruned model, tokenizer and card into `directory` (atomically: a staging folder renamed
    into place); a non-empty existing folder is refused. `pad`: zero-pad non-uniform layers to a stock
    checkpoint (diet.export.stock_layout). `bos_prepended`: how the run evaluated, which the saved tokenizer
    reproduces by default. Returns what the record stores."""
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise FileExistsError(f"save_model={str(directory)!r} exists and is not empty: choose another folder")
    layout, reason = stock_layout(model, pad)
    check_room(directory, state_bytes(layout.state.values()) if layout is not None and layout.state is not None
               else model_bytes(model))
    saved_format = SPEC
    if layout is not None:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
        os.chmod(staging, default_mode(directory=True))
        try:
            agreement = _save_stock(model, layout, staging, layout.padded and layout.padded["intermediate_size"])
            if not agreement.get("refused"):
                _save_tokenizer(tokenizer, staging, bos_prepended)
            if layout.padded is not None:
                layout.padded.update(agreement)
            if agreement.get("refused"):
                reason = f"transformers could not save or reload the stock checkpoint: {agreement['refused']}"
            elif agreement["identical"]:
                atomic_write_text(staging / "README.md", card)
                move_into_place(staging, directory)
                saved_format = STANDARD
            else:
                reason = (f"a stock reload did not reproduce the logits (max difference "
                          f"{agreement['max_logit_difference']:.3g})")
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    if saved_format == SPEC:
        log.warning("saving in diet's spec format (load with diet.export.checkpoint.load_pruned): %s", reason)
        save_pruned(model, tokenizer, directory, spec)
        atomic_write_text(directory / "README.md", card)
    padded = layout is not None and saved_format == STANDARD and layout.padded is not None
    return {"path": str(directory), "format": saved_format, "why": reason, "weights_sha256": weights_sha256(directory),
            "load_with": "transformers.AutoModelForCausalLM.from_pretrained" if saved_format == STANDARD
            else "diet.export.checkpoint.load_pruned",
            "padded": layout.padded if padded else None,
            "notes": layout.notes if layout is not None and saved_format == STANDARD else []}


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
    if path is not None and path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise DietConfigError(f"save_model={str(path)!r} exists and is not empty: a saved model is never "
                              f"overwritten; choose another folder or remove it")


def model_card(facts: Mapping[str, Any], metrics: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """README.md of a saved model: base model, method, sparsity, calibration, parameters, how it was
    evaluated (and, once evaluated, the run's scores), the command, the base weights' licence."""
    lines = [f"# {facts['model']} pruned with {facts['method']} (diet)", "",
             f"- base model: {facts['model']} ({facts['model_type']}, source {facts['source']})",
             f"- method: {facts['method']}, target sparsity {facts['sparsity']} of the {facts['dims']} dimension; "
             f"actual {facts['actual']:.4f} of it, {facts['removed_non_embedding']:.4f} of the non-embedding and "
             f"{facts['removed_total']:.4f} of all parameters"
             + (" (negative: it added more parameters than it removed, e.g. SliceGPT's shortcut matrices and untied "
                "head)" if min(facts["removed_non_embedding"], facts["removed_total"]) < 0 else ""),
             f"- calibration: {facts['calibration']}",
             *([f"- recovery fine-tuning (merged into the weights): {facts['recovery']}"] if facts.get("recovery") else []),
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
