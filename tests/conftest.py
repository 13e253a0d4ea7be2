"""Shared test helpers: the real Hydra configs, the real offline data folder, an isolated cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT.parent / "shared" / "data"  # never copied into the repository


def compose_config(overrides: list[str]) -> dict[str, Any]:
    """The resolved run config exactly as `python -m experiments.run <overrides>` builds it."""
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """A fresh $DIET_CACHE (profiles, converted models) for one test."""
    path = tmp_path / "cache"
    monkeypatch.setenv("DIET_CACHE", str(path))
    return path


@pytest.fixture(autouse=True)
def offline_data(monkeypatch) -> Path:
    monkeypatch.setenv("DIET_DATA_DIR", str(DATA_DIR))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return DATA_DIR
