"""The finished tasks of an unfinished cell (`eval.by_task=true`): an interrupted cell resumes at its next task.

A full-split cell evaluates for hours (18,904 documents, about 2 h on 2 CPU cores), longer than a session may
last. Evaluated task by task, each finished task's summary is written at once (atomically) to
`<results_dir>/.partial/<cell>/<task>.json`; a rerun of the cell recomputes the selection (profiles come from
the cache), prunes, and evaluates only the tasks not kept. A kept task is reused only for the same identity
and the same pruned weights (sha256 over every tensor), so a code change that altered the mask or the
surgery re-evaluates it instead of mixing two models in one record. The record names the tasks it reused and
the code that evaluated them; the folder is removed once the record is written.
"""

from __future__ import annotations

import json
import logging
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from diet.io import atomic_write_json

log = logging.getLogger(__name__)

PARTIAL_DIR = ".partial"


def partial_dir(results_dir: Path, stem: str) -> Path:
    return Path(results_dir) / PARTIAL_DIR / stem


class TaskResults:
    """The kept task summaries of one evaluated model of one cell."""

    def __init__(self, folder: Path, config_hash: str, weights_sha256: str, code: str) -> None:
        self.folder, self.config_hash, self.weights_sha256, self.code = Path(folder), config_hash, weights_sha256, code
        self.reused: dict[str, str] = {}  # task -> code version that evaluated it

    def _path(self, task: str) -> Path:
        return self.folder / f"{task}.json"

    def load(self, task: str) -> dict[str, Any] | None:
        """The kept summary of `task` for these weights, or None (never kept, or kept for other weights)."""
        path = self._path(task)
        if not path.exists():
            return None
        kept = json.loads(path.read_text())
        if kept.get("config_hash") != self.config_hash or kept.get("weights_sha256") != self.weights_sha256:
            log.warning("%s: kept result was evaluated on other weights (%s); evaluating it again", task, path)
            return None
        self.reused[task] = kept["code"]
        log.info("%s: reusing the result kept by an interrupted run (%s, code %s)", task, path, kept["code"])
        return kept["summary"]

    def save(self, task: str, summary: dict[str, Any]) -> None:
        atomic_write_json(self._path(task), {
            "config_hash": self.config_hash, "weights_sha256": self.weights_sha256, "code": self.code,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "summary": summary})


def clear(folder: Path) -> None:
    """Drop a cell's kept tasks (after its record is written, or before a forced rerun)."""
    if Path(folder).exists():
        shutil.rmtree(folder)
