"""A self-describing checkpoint format for pruned models whose shapes a stock config cannot express.

Transformers' config keeps one `intermediate_size`, so `save_pruned` writes the per-layer widths (and
checksums of the weight files) into `pruning_spec.json`, and `load_pruned` rebuilds the shapes from it. The
same holds for per-layer query-head counts (diet.prune.attention) and the hidden width plus Gemma's
embedding scale (diet.prune.hidden).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from diet.dims.base import SPEC_FILE
from diet.errors import DietConfigError, PrunedCheckpointError
from diet.io import default_mode, atomic_write_json, sha256_file
from diet.dims.choice import dimensions
from diet.dims.shapes import record_shapes
from diet.models.adapters import adapter_for
from diet.models.stock_config import accepted_hidden_size, config_values, stock_refusal
from diet.prune.rotation import SPEC_KEY as ROTATION_KEY, rebuild_rotated, rotation_spec


FORMAT_VERSION = 1


def _kept_indices(kept: Sequence[Any], widths: list[int], what: str = "kept_mlp_channels") -> list[list[int]]:
    """Normalise per-layer kept channels (bool masks or index lists) into index lists."""
    if len(kept) != len(widths):
        raise DietConfigError(f"spec {what} has {len(kept)} layers, the model has {len(widths)}")
    result = []
    for layer, (entry, width) in enumerate(zip(kept, widths)):
        entry = torch.as_tensor(entry)
        indices = entry.nonzero().squeeze(1) if entry.dtype == torch.bool else entry.reshape(-1)
        if indices.numel() != width:
            raise DietConfigError(
                f"spec {what} of layer {layer} lists {indices.numel()} entries, but the layer "
                f"has width {width}: they must agree"
            )
        result.append([int(i) for i in indices.tolist()])
    return result


def move_into_place(staging: Path, directory: Path) -> None:
    """Rename a finished staging folder onto `directory` (replacing an old one only after it is complete)."""
    if not directory.exists():
        os.replace(staging, directory)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
    os.replace(directory, trash / "old")
    os.replace(staging, directory)
    shutil.rmtree(trash, ignore_errors=True)


def save_pruned(
    model: nn.Module,
    tokenizer: Any,
    directory: str | Path,
    spec: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write model (safetensors, via save_pretrained), tokenizer and `pruning_spec.json`, atomically.

    The spec is `spec` plus mlp_widths, kept_mlp_channels / kept_heads / kept_hidden (normalised to index
    lists, if `spec` has them), per-layer num_heads (query heads, diet.prune.attention), hidden_size and
    embed_scale (diet.prune.hidden), the attention implementation, format_version and sha256 checksums
    of the weight files.
    """
    directory = Path(directory)
    if directory.exists() and not overwrite and (not directory.is_dir() or any(directory.iterdir())):
        raise FileExistsError(
            f"refusing to overwrite {directory}: it exists and is not empty (pass overwrite=True to replace it)"
        )
    adapter = adapter_for(model)
    widths = adapter.mlp_widths()
    full_spec = dict(spec or {})
    if full_spec.get("kept_mlp_channels") is not None:
        full_spec["kept_mlp_channels"] = _kept_indices(full_spec["kept_mlp_channels"], widths)
    if full_spec.get("kept_heads") is not None:
        full_spec["kept_heads"] = _kept_indices(full_spec["kept_heads"], adapter.head_counts(), "kept_heads")
    if full_spec.get("kept_hidden") is not None:
        [full_spec["kept_hidden"]] = _kept_indices([full_spec["kept_hidden"]], [adapter.hidden_width()], "kept_hidden")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    os.chmod(staging, default_mode(directory=True))
    # config.json keeps a hidden_size the installed transformers accepts (hidden pruning can leave one it
    # refuses); the spec holds the true width and load_pruned slices down to it (diet.dims.hidden)
    saved_hidden = accepted_hidden_size(model.config)
    if saved_hidden is None:
        raise PrunedCheckpointError(f"transformers refuses this config at any hidden_size: "
                                    f"{stock_refusal(model.config)}")
    if saved_hidden != int(model.config.hidden_size):
        full_spec["config_hidden_size"] = saved_hidden
    try:
        with config_values(model.config, {"hidden_size": saved_hidden}):
            model.save_pretrained(staging, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        weights = sorted(path.name for path in staging.glob("*.safetensors"))
        if not weights:
            raise PrunedCheckpointError(f"save_pretrained wrote no .safetensors file into {staging}")
        full_spec.update(
            {
                "format_version": FORMAT_VERSION,
                "model_type": model.config.model_type,
                **{key: value for dimension in dimensions() for key, value in dimension.shape_spec(model).items()},
                **rotation_spec(model),
                "embed_scale": adapter_for(model).embedding_scale(),
                "attn_implementation": getattr(model.config, "_attn_implementation", None),
                "checksums": {name: sha256_file(staging / name) for name in weights},
            }
        )
        atomic_write_json(staging / SPEC_FILE, full_spec)
        move_into_place(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def _read_spec(directory: Path) -> dict[str, Any]:
    path = directory / SPEC_FILE
    if not path.is_file():
        raise PrunedCheckpointError(f"{directory} has no {SPEC_FILE}: it was not written by save_pruned")
    spec = json.loads(path.read_text(encoding="utf-8"))
    if spec.get("format_version") != FORMAT_VERSION:
        raise PrunedCheckpointError(
            f"{path} has format_version {spec.get('format_version')!r}; this code reads version {FORMAT_VERSION}"
        )
    return spec


def _verify_checksums(directory: Path, checksums: Mapping[str, str]) -> list[Path]:
    if not checksums:
        raise PrunedCheckpointError(f"{directory / SPEC_FILE} lists no weight files (checksums)")
    files = []
    for name, expected in sorted(checksums.items()):
        path = directory / name
        if not path.is_file():
            raise PrunedCheckpointError(f"weight file {path} listed in {SPEC_FILE} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise PrunedCheckpointError(
                f"checksum mismatch for {path}: expected sha256 {expected}, found {actual} (file corrupted or "
                f"modified after save_pruned)"
            )
        files.append(path)
    return files


def _add_missing_biases(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Give a bias parameter to every Linear whose bias the state dict has but the module lacks."""
    modules = dict(model.named_modules())
    for key in state:
        owner, _, leaf = key.rpartition(".")
        module = modules.get(owner)
        if leaf == "bias" and isinstance(module, nn.Linear) and module.bias is None:
            weight = module.weight
            module.bias = nn.Parameter(torch.empty(module.out_features, dtype=weight.dtype, device=weight.device))


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """load_state_dict that tolerates only tied parameters missing from `state`, then re-ties them."""
    expected = set(model.state_dict())
    missing, unexpected = expected - state.keys(), state.keys() - expected
    tied_pairs = model.get_expanded_tied_weights_keys(all_submodels=True).items()
    tied_missing = {
        key for pair in tied_pairs for key, partner in (pair, pair[::-1]) if key in missing and partner in state
    }
    missing -= tied_missing
    if missing or unexpected:
        raise PrunedCheckpointError(
            f"state dict does not match the model: missing keys {sorted(missing)[:8]}, "
            f"unexpected keys {sorted(unexpected)[:8]}"
        )
    model.load_state_dict(state, strict=False)
    model.tie_weights(missing_keys=set(tied_missing))


def _stock_keys(config: Any, kwargs: Mapping[str, Any], files: list[Path]) -> bool:
    """Whether the checkpoint has exactly the keys of the stock architecture (checked on a meta skeleton)."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    keys: set[str] = set()
    for path in files:
        with safe_open(str(path), "pt") as handle:
            keys.update(handle.keys())
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(copy.deepcopy(config), **kwargs)
    expected = set(skeleton.state_dict())
    tied = set(skeleton.get_expanded_tied_weights_keys(all_submodels=True))
    return keys <= expected and expected - keys <= tied


def _tokenizer(directory: Path) -> Any:
    if not any((directory / name).exists() for name in ("tokenizer.json", "tokenizer_config.json")):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))


def _restore_embedding_scale(model: nn.Module, spec: Mapping[str, Any]) -> None:
    """Put back Gemma's embedding multiplier after hidden-dimension pruning.

    transformers computes it as sqrt(config.hidden_size) when the model is built, and it is a
    non-persistent buffer (not in the weight files); after hidden pruning config.hidden_size is the
    pruned width, so the value saved in the spec (the original sqrt(hidden_size)) is restored here.
    """
    value = spec.get("embed_scale")
    embed = model.get_input_embeddings()
    if value is None or getattr(embed, "embed_scale", None) is None or float(embed.embed_scale) == float(value):
        return
    with torch.no_grad():
        embed.embed_scale.fill_(float(value))
    if hasattr(embed, "scalar_embed_scale"):
        embed.scalar_embed_scale = float(value)


def load_pruned(
    directory: str | Path,
    dtype: torch.dtype | None = None,
    device: str = "cpu",
    attn_implementation: str | None = None,
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """Restore a `save_pruned` folder: (model, tokenizer or None, spec). Checksums are verified first."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    directory = Path(directory)
    spec = _read_spec(directory)
    files = _verify_checksums(directory, spec.get("checksums") or {})
    config = AutoConfig.from_pretrained(str(directory))
    dtype = dtype or config.dtype or torch.float32
    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype) if isinstance(dtype, str) else dtype}
    attn = attn_implementation or spec.get("attn_implementation")
    if attn:
        kwargs["attn_implementation"] = attn

    stock_shapes = all([dimension.config_expresses(spec, config) for dimension in dimensions()])  # all checked
    stock_shapes = stock_shapes and not spec.get(ROTATION_KEY)  # shortcut matrices: never a stock layout
    if stock_shapes and _stock_keys(config, kwargs, files):
        model, info = AutoModelForCausalLM.from_pretrained(str(directory), output_loading_info=True, **kwargs)
        problems = {k: sorted(map(str, v))[:8] for k, v in info.items() if k.endswith("_keys") and v}
        if problems:
            raise PrunedCheckpointError(f"state dict does not match the model: {problems}")
        _restore_embedding_scale(model, spec)
        return model.to(device).eval(), _tokenizer(directory), spec

    model = AutoModelForCausalLM.from_config(config, **kwargs)
    for dimension in dimensions():
        dimension.rebuild(model, spec)
    rebuild_rotated(model, spec)
    state: dict[str, torch.Tensor] = {}
    for path in files:
        state.update(load_file(str(path)))
    _add_missing_biases(model, state)
    _load_strict(model, state)
    del state
    if (directory / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(str(directory))
    _restore_embedding_scale(model, spec)
    record_shapes(model)
    return model.to(device).eval(), _tokenizer(directory), spec
