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
