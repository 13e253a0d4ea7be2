"""Physical MLP-channel pruning and a self-describing checkpoint format for pruned models.

A mask is `list[torch.BoolTensor]`, one per decoder layer, True = keep that MLP channel (row i of
gate_proj/up_proj, column i of down_proj). After pruning, layers may have different widths; transformers'
config keeps its single `intermediate_size`, so `save_pruned` writes the per-layer widths (and checksums
of the weight files) into `pruning_spec.json`, and `load_pruned` rebuilds the shapes from it. The same
holds for per-layer query-head counts (diet.prune_attention) and the hidden width plus Gemma's embedding
scale (diet.prune_hidden).
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

from diet.errors import DietConfigError
from diet.io import default_mode, atomic_write_json, sha256_file
from diet.models.adapters import ModelAdapter, adapter_for

FORMAT_VERSION = 1
SPEC_FILE = "pruning_spec.json"


class PrunedCheckpointError(RuntimeError):
    """A pruned checkpoint folder is missing, corrupted or inconsistent with its pruning spec."""


# --------------------------------------------------------------------------------------------- masks


def check_mask(model: nn.Module, keep: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Validate `keep` against the model's current MLP widths; return the masks as flat bool tensors."""
    widths = adapter_for(model).mlp_widths()
    if len(keep) != len(widths):
        raise DietConfigError(f"mask has {len(keep)} layers but the model has {len(widths)} decoder layers")
    masks = []
    for index, (mask, width) in enumerate(zip(keep, widths)):
        mask = torch.as_tensor(mask)
        if mask.dtype != torch.bool or mask.dim() != 1:
            raise DietConfigError(
                f"mask of layer {index} must be a 1-D bool tensor (True = keep), got dtype {mask.dtype}, "
                f"shape {tuple(mask.shape)}"
            )
        if mask.numel() != width:
            raise DietConfigError(
                f"mask of layer {index} has length {mask.numel()}, but the layer has {width} MLP channels: "
                f"the length must equal the current width"
            )
        if not bool(mask.any()):
            raise DietConfigError(f"mask of layer {index} keeps no MLP channel: each layer must keep at least 1")
        masks.append(mask)
    return masks


def _module_names(model: nn.Module) -> dict[int, list[str]]:
    names: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), []).append(name)
    return names


def _replace(model: nn.Module, names: Mapping[int, list[str]], old: nn.Module, new: nn.Module) -> None:
    for name in names[id(old)]:
        model.set_submodule(name, new)


def _linear_from(weight: torch.Tensor, bias: torch.Tensor | None, like: nn.Linear) -> nn.Linear:
    """A new nn.Linear holding `weight`/`bias` (no extra allocation: built on meta, then assigned)."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    linear.weight = nn.Parameter(weight, requires_grad=like.weight.requires_grad)
    if bias is not None:
        linear.bias = nn.Parameter(bias, requires_grad=like.bias.requires_grad if like.bias is not None else True)
    return linear.train(like.training)


def _empty_linear(in_features: int, out_features: int, like: nn.Linear) -> nn.Linear:
    """An uninitialised nn.Linear with `like`'s dtype, device and bias presence (its values get loaded)."""
    linear = nn.Linear(
        in_features, out_features, bias=like.bias is not None, device="meta", dtype=like.weight.dtype
    )
    return linear.to_empty(device=like.weight.device).train(like.training)


def _slice_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """Keep rows (dim=0, output channels) or columns (dim=1, input channels) `index` of a Linear."""
    with torch.no_grad():
        index = index.to(linear.weight.device)
        weight = linear.weight.index_select(dim, index)
        bias = None
        if linear.bias is not None:
            bias = linear.bias.index_select(0, index) if dim == 0 else linear.bias.detach().clone()
    return _linear_from(weight, bias, linear)


def embedding_scale(model: nn.Module) -> float | None:
    """Gemma's input-embedding multiplier (sqrt of the ORIGINAL hidden size), None for models without one."""
    scale = getattr(model.get_input_embeddings(), "embed_scale", None)
    if isinstance(scale, torch.Tensor) and scale.is_meta:  # a shapes-only (meta) model: the value Gemma computes
        return float(model.config.hidden_size) ** 0.5
    return None if scale is None else float(scale)


def _record(model: nn.Module, adapter: ModelAdapter) -> None:
    model.config.diet_pruning = {
        "mlp_widths": adapter.mlp_widths(),
        "intermediate_size": int(model.config.intermediate_size),
        "num_heads": adapter.head_counts(),
        "num_attention_heads": int(model.config.num_attention_heads),
        "hidden_size": adapter.hidden_width(),
    }
    scale = embedding_scale(model)
    if scale is not None:
        model.config.diet_pruning["embed_scale"] = scale


def prune_mlp_channels(model: nn.Module, keep: Sequence[torch.Tensor]) -> nn.Module:
    """Physically remove the MLP channels `keep` marks False, in place; returns `model`.

    gate/up lose output rows and down loses input columns (new nn.Linear modules, same dtype/device; a
    down_proj bias is kept as is). `model.config.diet_pruning` records the per-layer widths.
    """
    masks = check_mask(model, keep)
    adapter = adapter_for(model)
    names = _module_names(model)
    for layer, mask in enumerate(masks):
        mlp = adapter.mlp(layer)
        index = mask.nonzero().squeeze(1)
        _replace(model, names, mlp.gate, _slice_linear(mlp.gate, index, dim=0))
        _replace(model, names, mlp.up, _slice_linear(mlp.up, index, dim=0))
        _replace(model, names, mlp.down, _slice_linear(mlp.down, index, dim=1))
    _record(model, adapter)
    return model


def zero_mlp_channels(model: nn.Module, keep: Sequence[torch.Tensor]) -> nn.Module:
    """The masked equivalent of `prune_mlp_channels`: zero pruned gate/up rows and down columns, in place."""
    masks = check_mask(model, keep)
    adapter = adapter_for(model)
    with torch.no_grad():
        for layer, mask in enumerate(masks):
            mlp = adapter.mlp(layer)
            drop = ~mask.to(mlp.gate.weight.device)
            for linear in (mlp.gate, mlp.up):
                linear.weight[drop] = 0
                if linear.bias is not None:
                    linear.bias[drop] = 0
            mlp.down.weight[:, drop] = 0
    return model


# ---------------------------------------------------------------------------------------- checkpoint


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
    lists, if `spec` has them), per-layer num_heads (query heads, diet.prune_attention), hidden_size and
    embed_scale (diet.prune_hidden), the attention implementation, format_version and sha256 checksums
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
    try:
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
                "intermediate_size": int(model.config.intermediate_size),
                "mlp_widths": widths,
                "num_attention_heads": int(model.config.num_attention_heads),
                "num_heads": adapter.head_counts(),
                "hidden_size": adapter.hidden_width(),
                "embed_scale": embedding_scale(model),
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
    widths = [int(w) for w in spec["mlp_widths"]]
    if len(widths) != config.num_hidden_layers:
        raise PrunedCheckpointError(
            f"{SPEC_FILE} has {len(widths)} mlp_widths, config.json has {config.num_hidden_layers} layers"
        )
    dtype = dtype or config.dtype or torch.float32
    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype) if isinstance(dtype, str) else dtype}
    attn = attn_implementation or spec.get("attn_implementation")
    if attn:
        kwargs["attn_implementation"] = attn

    # Checkpoints written before head pruning existed have no num_heads: every layer has the config's count.
    heads = [int(h) for h in spec.get("num_heads") or [config.num_attention_heads] * len(widths)]
    if len(heads) != config.num_hidden_layers:
        raise PrunedCheckpointError(
            f"{SPEC_FILE} has {len(heads)} num_heads, config.json has {config.num_hidden_layers} layers"
        )
    if spec.get("hidden_size") is not None and int(spec["hidden_size"]) != int(config.hidden_size):
        raise PrunedCheckpointError(
            f"{SPEC_FILE} has hidden_size {spec['hidden_size']}, config.json has {config.hidden_size}"
        )
    stock_shapes = all(width == config.intermediate_size for width in widths) and all(
        h == config.num_attention_heads for h in heads
    )
    if stock_shapes and _stock_keys(config, kwargs, files):
        model, info = AutoModelForCausalLM.from_pretrained(str(directory), output_loading_info=True, **kwargs)
        problems = {k: sorted(map(str, v))[:8] for k, v in info.items() if k.endswith("_keys") and v}
        if problems:
            raise PrunedCheckpointError(f"state dict does not match the model: {problems}")
        _restore_embedding_scale(model, spec)
        return model.to(device).eval(), _tokenizer(directory), spec

    model = AutoModelForCausalLM.from_config(config, **kwargs)
    adapter = adapter_for(model)
    names = _module_names(model)
    for layer, width in enumerate(widths):
        mlp = adapter.mlp(layer)
        if width != mlp.down.in_features:
            hidden = mlp.down.out_features
            _replace(model, names, mlp.gate, _empty_linear(hidden, width, mlp.gate))
            _replace(model, names, mlp.up, _empty_linear(hidden, width, mlp.up))
            _replace(model, names, mlp.down, _empty_linear(width, hidden, mlp.down))
    if any(h != config.num_attention_heads for h in heads):
        from diet.prune_attention import resize_attention_heads

        resize_attention_heads(model, heads)
    state: dict[str, torch.Tensor] = {}
    for path in files:
        state.update(load_file(str(path)))
    _add_missing_biases(model, state)
    _load_strict(model, state)
    del state
    if (directory / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(str(directory))
    _restore_embedding_scale(model, spec)
    _record(model, adapter)
    return model.to(device).eval(), _tokenizer(directory), spec


def set_down_bias(model: nn.Module, biases: Sequence[torch.Tensor | None]) -> nn.Module:
    """Add a per-layer bias to down_proj (FLAP's compensation for removed channels), in place.

    Gemma and Llama have no MLP biases; the pruned model then carries one, and save/load keeps it.
    """
    adapter = adapter_for(model)
    if len(biases) != adapter.num_layers():
        raise DietConfigError(f"{len(biases)} biases for {adapter.num_layers()} decoder layers")
    for layer, bias in enumerate(biases):
        if bias is None:
            continue
        down = adapter.mlp(layer).down
        value = bias.to(device=down.weight.device, dtype=down.weight.dtype)
        if down.bias is None:
            down.bias = nn.Parameter(value.clone(), requires_grad=down.weight.requires_grad)
        else:
            with torch.no_grad():
                down.bias.add_(value)
    return model


def drop_decoder_layers(model: nn.Module, drop: Sequence[int]) -> nn.Module:
    """Remove whole decoder layers (ShortGPT), in place; the config is updated so the result saves
    and reloads through the stock from_pretrained path."""
    adapter = adapter_for(model)
    total = adapter.num_layers()
    drop_set = sorted(set(int(i) for i in drop))
    if any(i < 0 or i >= total for i in drop_set) or len(drop_set) >= total:
        raise DietConfigError(f"cannot drop layers {drop_set} of a {total}-layer model: keep at least one, indices in [0, {total})")
    keep = [i for i in range(total) if i not in drop_set]
    layers = adapter.backbone().layers
    adapter.backbone().layers = nn.ModuleList([layers[i] for i in keep])
    for new_index, layer in enumerate(adapter.backbone().layers):
        # the KV cache is indexed by layer_idx: renumber so generation still works
        if hasattr(layer.self_attn, "layer_idx"):
            layer.self_attn.layer_idx = new_index
        if hasattr(layer, "layer_idx"):
            layer.layer_idx = new_index
    config = model.config
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    _record(model, adapter)
    model.config.diet_pruning["dropped_layers"] = drop_set
    return model
