"""Whether a configured model can be loaded, told before anything is loaded, and one line when loading fails.

A local `model.name_or_path` must be a folder with config.json; a hub id must be in the Hugging Face cache
or the hub reachable (with a token for gated repositories). Every failure is one line that says what to do,
never a traceback. Used by preflight (diet.run.preflight) and by the loaders (diet.models.loaders), which
wrap transformers' own loading errors the same way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from diet.errors import DietConfigError

TRUTHY = {"1", "on", "yes", "true"}  # huggingface_hub's reading of HF_HUB_OFFLINE


def check_model(model: Mapping[str, Any]) -> None:
    """A model named by `model.name_or_path` (which wins over the source, as in diet.models.load_model)."""
    value = model.get("name_or_path")
    if value in (None, "", "???"):  # "???": Hydra's missing value (model=custom without name_or_path)
        if model.get("source") == "pretrained":
            raise DietConfigError(f"model={model.get('name')} needs model.name_or_path=<hub id or local folder>")
        return
    value = str(value)
    if looks_local(value):
        check_model_folder(value)
    else:
        check_hub_model(value)


def looks_local(value: str) -> bool:
    """A path, not a hub id ('name' or 'org/name'): absolute, ./ ../ ~, more than one '/', or a path whose
    first part exists here (a folder with a typo further down)."""
    if value.startswith(("/", "./", "../", "~", "\\")) or value in (".", "..") or value.count("/") > 1:
        return True
    return Path(value).exists() or ("/" in value and Path(value.split("/")[0]).is_dir())


def check_model_folder(value: str) -> None:
    path = Path(value).expanduser()
    if not path.exists():
        raise DietConfigError(f"model.name_or_path={value!r}: no such folder ({existing_parent(path)})")
    if not (path / "config.json").is_file():
        raise DietConfigError(f"model.name_or_path={value!r} is not a model folder: it has no config.json "
                              "(a transformers checkpoint folder holds config.json, the weights and the tokenizer)")


def existing_parent(path: Path) -> str:
    """Where the path stops existing, to point at the typo."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    return f"the nearest existing folder is {str(parent)!r}"


def hub_offline() -> bool:
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(name, "").strip().lower() in TRUTHY for name in names)


def hub_token() -> str | None:
    from huggingface_hub import get_token

    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or get_token()


def hub_cache() -> Path:
    """The Hugging Face hub cache as the environment sets it now (huggingface_hub reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    return Path(home).expanduser() / "hub"


def hub_advice(repo: str) -> str:
    """What to do when a hub model cannot be loaded (one line)."""
    return (f"to fix: for a gated model, accept its licence at https://huggingface.co/{repo} and export HF_TOKEN=<a "
            f"read token of that account>; or download it once where the hub is reachable (`hf download {repo}`; "
            f"huggingface_hub < 1.0: `huggingface-cli download {repo}`), after which it loads from the cache, "
            "also with HF_HUB_OFFLINE=1; or set model.name_or_path= to a local folder with config.json and the weights")


def check_hub_model(repo: str) -> None:
    """config.json of `repo` is in the local cache, or the hub serves it (downloading it, as the load would)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cache = hub_cache()
    cached = try_to_load_from_cache(repo, "config.json", cache_dir=cache)
    if isinstance(cached, str):
        return
    where = f"model.name_or_path={repo!r} is not in the local Hugging Face cache ({cache})"
    if hub_offline():
        raise DietConfigError(f"{where} and the hub is offline (HF_HUB_OFFLINE=1); {hub_advice(repo)}")
    unreachable = hub_unreachable()
    if unreachable:
        raise DietConfigError(f"{where} and {unreachable}; {hub_advice(repo)}")
    try:
        hf_hub_download(repo, "config.json", cache_dir=cache, token=hub_token(), etag_timeout=10)
    except Exception as error:  # noqa: BLE001 - every failure becomes the one message below
        raise DietConfigError(f"{where} and {hub_failure(error)}; {hub_advice(repo)}") from None


def hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why the hub's host takes no connection, or None. One quick TCP connect: huggingface_hub itself
    retries a dead connection with back-off for half a minute. Behind a proxy the proxy decides: None."""
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname, url.port or (80 if url.scheme == "http" else 443)), timeout).close()
    except OSError as error:
        return f"the hub ({url.hostname}) cannot be reached: {error.strerror or error}"
    return None


def hub_failure(error: Exception) -> str:
    """Why the hub did not serve the file, in words."""
    from huggingface_hub.errors import (
        GatedRepoError, LocalEntryNotFoundError, RemoteEntryNotFoundError, RepositoryNotFoundError,
    )

    if isinstance(error, GatedRepoError):  # before RepositoryNotFoundError, its base class
        return ("the model is gated: " + ("this HF_TOKEN has no access to it" if hub_token() else "no HF_TOKEN is set"))
    if isinstance(error, RepositoryNotFoundError):
        return "the hub has no such model (or it is private and HF_TOKEN has no access to it)"
    if isinstance(error, RemoteEntryNotFoundError):
        return "the hub repository has no config.json (not a transformers model)"
    if isinstance(error, LocalEntryNotFoundError):
        return "the hub cannot be reached (no connection)"
    return f"the hub could not be asked ({type(error).__name__}: {first_line(error)})"


def first_line(error: BaseException, limit: int = 300) -> str:
    text = str(error).strip().splitlines()
    return (text[0].rstrip(".") if text else type(error).__name__)[:limit]


def load_failure(path: str, error: BaseException) -> str:
    """The one-line message for a transformers error while loading `path` (preflight passed, load failed)."""
    advice = hub_advice(path) if not looks_local(path) else (
        "to fix: the folder must be a complete transformers checkpoint (config.json, weights, tokenizer files)")
    return f"could not load model {path!r}: {first_line(error)}; {advice}"
