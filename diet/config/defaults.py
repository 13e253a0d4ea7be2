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


def option_default(path: str, method: str = "diet") -> Any:
    """The default of an option as written on the command line: `calib.n` from conf/config.yaml,
    `method.vote.threshold` from conf/method/<method>.yaml."""
    parts = path.split(".")
    value: Any = method_defaults(method) if parts[0] == "method" else run_defaults()
    for part in parts[1:] if parts[0] == "method" else parts:
        if not isinstance(value, dict) or part not in value:
            raise DietConfigError(f"{path} has no default in conf/ (method {method!r})")
        value = value[part]
    return value


@functools.cache
def recover_defaults(name: str = "lora") -> dict[str, Any]:
    """conf/recover/<name>.yaml's options (without `name`)."""
    path = conf_dir() / "recover" / f"{name}.yaml"
    if not path.is_file():
        raise DietConfigError(f"no {path}: diet reads the recovery defaults from the checkout's conf/ folder")
    return {key: value for key, value in (yaml.safe_load(path.read_text()) or {}).items() if key != "name"}
