"""The option defaults as conf/config.yaml writes them (read as plain YAML: no Hydra, no interpolation)."""

from __future__ import annotations

import functools
from typing import Any

import yaml

from diet.errors import DietConfigError
from diet.paths import conf_dir


@functools.cache
def run_defaults() -> dict[str, Any]:
    path = conf_dir() / "config.yaml"
    if not path.is_file():
        raise DietConfigError(f"no {path}: diet reads its option defaults from the checkout's conf/ folder")
    return yaml.safe_load(path.read_text())


@functools.cache
def method_defaults(name: str) -> dict[str, Any]:
    """conf/method/<name>.yaml's options (without `name`); {} for a method without a file there."""
    path = conf_dir() / "method" / f"{name}.yaml"
    if not path.is_file():
        return {}
    return {key: value for key, value in (yaml.safe_load(path.read_text()) or {}).items() if key != "name"}
