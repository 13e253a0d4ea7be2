"""The drift check behind `make test-latest`: in an environment built with the NEWEST versions pyproject
allows, list what differs from the lock and run the tests marked `drift` (every export path on the real
models, the fast backend against stock lm-eval); the result goes to a markdown file for README to quote.

    python -m experiments.drift_check --lock requirements/lock.txt --out results/checks/test_latest.md

Not part of .ci/run, which must stay deterministic: a new release may break it without any change here.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from diet.io import atomic_write_text
from diet.lockfile import installed_versions, locked_pins

SUMMARY_WORDS = ("passed", "failed", "error", "skipped", "deselected")


def version_changes(pins: dict[str, str], installed: dict[str, str]) -> list[str]:
    """'name locked -> installed' for every locked package this environment has at another version."""
    return [f"{name} {version} -> {installed.get(name, 'absent')}" for name, version in sorted(pins.items())
            if installed.get(name) != version]


def summary_line(output: str) -> str:
    """pytest's closing line ('3 passed, 1 failed in 12.3s'), or the last line when there is none."""
    lines = [line.strip("= ").strip() for line in output.splitlines() if line.strip()]
    closing = [line for line in lines if any(word in line for word in SUMMARY_WORDS) and " in " in line]
    return closing[-1] if closing else (lines[-1] if lines else "no output")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--marker", default="drift", help="pytest marker of the tests to run")
    args = parser.parse_args(argv)
    changes = version_changes(locked_pins(args.lock), installed_versions())
    print("newer than the lock:\n  " + ("\n  ".join(changes) or "nothing"), flush=True)
    command = [sys.executable, "-m", "pytest", "-q", "-m", args.marker, "-p", "no:cacheprovider"]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    sys.stdout.write(result.stdout[-20000:])
    sys.stderr.write(result.stderr[-5000:])
    failures = [line for line in result.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    verdict = "passed" if result.returncode == 0 else f"FAILED (pytest exit {result.returncode})"
    report = [
        "# make test-latest: the newest versions pyproject allows", "",
        f"- when: {datetime.now(timezone.utc).isoformat(timespec='seconds')}, Python {platform.python_version()}, "
        f"{platform.machine()}",
        f"- verdict: **{verdict}** — {summary_line(result.stdout)} ({time.perf_counter() - start:.0f} s)",
        f"- tests: `pytest -m {args.marker}` (every export path on Gemma-3 270M and SmolLM2, fast backend vs stock "
        f"lm-eval on Gemma-3 270M)",
        f"- versions that differ from {args.lock} ({len(changes)}):", "",
        *[f"  - {change}" for change in changes or ["none"]], "",
        *(["## Failures", "", *[f"- {line}" for line in failures], ""] if failures else []),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, "\n".join(report))
    print(f"written: {args.out}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
