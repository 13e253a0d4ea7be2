"""The finished tasks of an unfinished cell (`eval.by_task=true`): an interrupted cell resumes at its next task.

A full-split cell evaluates for hours (18,904 documents, about 2 h on 2 CPU cores), longer than a session may
last. Evaluated task by task, each finished task's summary is written at once (atomically) to
`<results_dir>/.partial/<cell>/<task>.json` (with eval.chunk_docs also each finished chunk of a task's
documents, `<task>.docs<start>-<stop>.json`: diet/eval/chunks.py); a rerun of the cell recomputes the
selection (profiles come from the cache), prunes, and evaluates only the tasks (chunks) not kept. A kept task is reused only for the same identity
and the same pruned weights (sha256 over every tensor), so a code change that altered the mask or the
surgery re-evaluates it instead of mixing two models in one record. One exception, for a cell that spans
sessions on different processors: a method that computes weights (FLAP's bias compensation, from activation
means) gets their last bits from the processor's float kernels. A kept task is also reused when the selection
(mask hash) is the same and every tensor is either bit-identical or differs only by float rounding: its L1 and
L2 norms agree within ROUNDING_TOL (relative); the record lists such tasks with the largest difference
(`reused_within_rounding`). The record names the tasks it reused and the code that evaluated them; the folder
is removed once the record is written.
"""

from __future__ import annotations

import json
import logging
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from diet.io import atomic_write_json

log = logging.getLogger(__name__)

PARTIAL_DIR = ".partial"
# float32 rounding differences between processors move a norm by a few ulps of the tensor's values; 64 ulps
# (7.6e-6 relative) leaves room for rounding accumulated through a profile, far below any change of a kept
# channel or of a formula. The mask hash must match besides (a swapped channel can move a norm less).
ROUNDING_TOL = 64 * torch.finfo(torch.float32).eps


DIGEST_CHUNK = 1 << 24  # elements: 128 MiB in float64, never a float64 copy of a whole 256k-vocab embedding


def tensor_digests(model: torch.nn.Module) -> dict[str, list[Any]]:
    """name -> [shape, dtype, sha256 of the bytes (16 hex), L1 norm, L2 norm] (norms in float64, summed over
    chunks of DIGEST_CHUNK elements, so the float64 copy is one chunk at a time)."""
    import hashlib

    digests = {}
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            flat = tensor.detach().reshape(-1).contiguous()
            digest, l1s, l2s = hashlib.sha256(), [], []
            for start in range(0, max(flat.numel(), 1), DIGEST_CHUNK):
                chunk = flat[start:start + DIGEST_CHUNK]
                digest.update(chunk.cpu().view(torch.uint8).numpy().tobytes())
                l1s.append(float(torch.linalg.vector_norm(chunk, 1, dtype=torch.float64)))
                l2s.append(float(torch.linalg.vector_norm(chunk, 2, dtype=torch.float64)))
            l2 = l2s[0] if len(l2s) == 1 else sum(x * x for x in l2s) ** 0.5  # one chunk: as before chunking
            digests[name] = [list(tensor.shape), str(tensor.dtype), digest.hexdigest()[:16], sum(l1s), l2]
    return digests


def rounding_difference(kept: dict[str, list[Any]] | None, now: dict[str, list[Any]]) -> float | None:
    """The largest relative norm difference of the tensors that are not bit-identical, when every such tensor
    differs only within ROUNDING_TOL (same names, shapes and dtypes); None when the weights differ more."""
    if not kept or set(kept) != set(now):
        return None
    largest, differing = 0.0, 0
    for name, (shape, dtype, sha, l1, l2) in now.items():
        old_shape, old_dtype, old_sha, old_l1, old_l2 = kept[name]
        if (old_shape, old_dtype) != (shape, dtype):
            return None
        if old_sha == sha:
            continue
        differing += 1
        for old, new in ((old_l1, l1), (old_l2, l2)):
            relative = abs(new - old) / max(abs(old), abs(new), 1e-30)
            if relative > ROUNDING_TOL:
                return None
            largest = max(largest, relative)
    return largest if differing else None  # no tensor differs, yet the weights' sha256 does: not these weights


def partial_dir(results_dir: Path, stem: str) -> Path:
    return Path(results_dir) / PARTIAL_DIR / stem


class TaskResults:
    """The kept task summaries of one evaluated model of one cell."""

    def __init__(self, folder: Path, config_hash: str, weights_sha256: str, code: str,
                 selection: Any = None, digests: dict[str, list[Any]] | None = None) -> None:
        self.folder, self.config_hash, self.weights_sha256, self.code = Path(folder), config_hash, weights_sha256, code
        self.selection, self.digests = selection, digests  # mask hash; per-tensor digests (tensor_digests)
        self.reused: dict[str, str] = {}  # task -> code version that evaluated it
        self.within_rounding: dict[str, float] = {}  # task -> largest relative norm difference of its weights

    def _path(self, task: str) -> Path:
        return self.folder / f"{task}.json"

    def load(self, task: str) -> dict[str, Any] | None:
        """The kept summary of `task` for these weights, or None (never kept, or kept for other weights)."""
        path = self._path(task)
        if not path.exists():
            return None
        kept = json.loads(path.read_text())
        if kept.get("config_hash") != self.config_hash:
            log.warning("%s: kept result belongs to another configuration (%s); evaluating it again", task, path)
            return None
        if kept.get("weights_sha256") != self.weights_sha256:
            same_selection = self.selection is not None and kept.get("selection") == self.selection
            difference = rounding_difference(kept.get("tensors"), self.digests or {}) if same_selection else None
            if difference is None:
                log.warning("%s: kept result was evaluated on other weights (%s); evaluating it again", task, path)
                return None
            log.warning("%s: kept result was evaluated on the same selection with weights equal up to float rounding "
                        "(largest relative norm difference %.1e <= %.1e); reusing it", task, difference, ROUNDING_TOL)
            self.within_rounding[task] = difference
        self.reused[task] = kept["code"]
        log.info("%s: reusing the result kept by an interrupted run (%s, code %s)", task, path, kept["code"])
        return kept["summary"]

    def save(self, task: str, summary: dict[str, Any]) -> None:
        atomic_write_json(self._path(task), {
            "config_hash": self.config_hash, "weights_sha256": self.weights_sha256, "code": self.code,
            "selection": self.selection, "tensors": self.digests,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "summary": summary})


def clear(folder: Path) -> None:
    """Drop a cell's kept tasks (after its record is written, or before a forced rerun)."""
    if Path(folder).exists():
        shutil.rmtree(folder)
