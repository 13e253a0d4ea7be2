"""Is this environment the locked one? Every package of requirements/lock*.txt (for this interpreter's
markers) must be installed at its locked version; `make install` runs this last and fails otherwise.

    python -m experiments.check_env --lock requirements/lock.txt --lock requirements/lock-nodeps.txt

Packages installed beside the lock are listed, not refused: torch (installed on its own, by the user's
choice of build) and what a CUDA build of it brings, diet itself, and the installers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diet.lockfile import compare, installed_versions, locked_pins


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
