"""Is this environment the locked one? Every package of requirements/lock*.txt (for this interpreter's
markers) must be installed at its locked version; `make install` runs this last and fails otherwise.

    python -m experiments.check_env --lock requirements/lock.txt --lock requirements/lock-nodeps.txt

Packages installed beside the lock are listed, not refused: torch (installed on its own, by the user's
choice of build) and what a CUDA build of it brings, diet itself, and the installers.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import sys
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", action="append", type=Path, required=True, help="a lock file (repeatable)")
    args = parser.parse_args(argv)
    pins: dict[str, str] = {}
    for path in args.lock:
        pins.update(locked_pins(path))
    installed = installed_versions()
    problems, beside = compare(pins, installed)
    if beside:
        print(f"installed beside the lock: {', '.join(beside)}")
    if problems:
        print("this environment is not the locked one:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"environment = lock: {len(pins)} packages at their locked versions; torch {installed.get('torch')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
