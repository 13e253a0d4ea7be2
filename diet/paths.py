"""Where caches and offline data live."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$DIET_CACHE, else ~/.cache/diet (converted models, calibration profiles), not created."""
    root = os.environ.get("DIET_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "diet"
    return Path(root).expanduser()


def cache_dir() -> Path:
    """cache_root(), created if missing."""
    path = cache_root()
    path.mkdir(parents=True, exist_ok=True)
    return path


def conf_dir() -> Path:
    """The checkout's Hydra config folder (conf/, beside the package): the one source of option defaults."""
    return Path(__file__).resolve().parents[1] / "conf"


def data_dir(configured: str | None = None) -> Path | None:
    """Offline benchmark data: the configured folder, else $DIET_DATA_DIR, else None (online mode)."""
    value = configured or os.environ.get("DIET_DATA_DIR")
    return Path(value).expanduser().resolve() if value else None
