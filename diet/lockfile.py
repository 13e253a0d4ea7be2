"""The locked environment: the pins of a lock file (requirements/lock*.txt) that hold for this interpreter, the
versions installed, and how the two differ. Read by experiments.check_env (`make install` ends with it) and
experiments.drift_check (`make test-latest`)."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

# installed on their own, outside the lock (Makefile): the torch build and its CUDA runtime, the installers
OUTSIDE_THE_LOCK = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*|diet|pip|wheel)$")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?\s*$")


def locked_pins(path: Path) -> dict[str, str]:
    """name -> version of every pin in a lock file whose marker holds for this interpreter."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line.strip())
        if match is None:
            continue
        name, version, marker = match.groups()
        if marker and not Marker(marker).evaluate():
            continue
        pins[canonicalize_name(name)] = version
    if not pins:
        raise SystemExit(f"{path}: no pinned requirement found (is it a lock file?)")
    return pins


def installed_versions() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}


def compare(pins: dict[str, str], installed: dict[str, str]) -> tuple[list[str], list[str]]:
    """(problems, packages installed beside the lock)."""
    problems = [f"{name}: locked {version}, installed {installed.get(name, 'nothing')}"
                for name, version in sorted(pins.items()) if installed.get(name) != version]
    beside = sorted(f"{name}=={version}" for name, version in installed.items()
                    if name not in pins and not OUTSIDE_THE_LOCK.match(name))
    return problems, beside
