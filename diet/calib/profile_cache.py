"""On-disk cache of activation profiles, one entry per (model fingerprint, task, calibration options).

Entries are written atomically with a checksum sidecar; a concurrent writer waits on a file lock;
a truncated or corrupted entry is detected, reported and recomputed, never used.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from diet.io import atomic_write, atomic_write_json, sha256_file, stable_hash
from diet.locks import file_lock
from diet.calib.profiler import ActivationProfile

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: signed sums, mlp_in site, block cosine


class ProfileCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def paths(self, key: dict[str, Any]) -> tuple[Path, Path]:
        digest = stable_hash({"format": FORMAT_VERSION, **key}, length=24)
        stem = f"{key.get('task', 'profile')}-{digest}"
        return self.root / f"{stem}.pt", self.root / f"{stem}.json"

    def load(self, key: dict[str, Any], warn: bool = True) -> ActivationProfile | None:
        data_path, meta_path = self.paths(key)
        if not meta_path.exists() or not data_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("sha256") != sha256_file(data_path):
                raise ValueError("checksum mismatch")
            return ActivationProfile.from_state(torch.load(data_path, weights_only=True))
        except Exception as error:  # noqa: BLE001 - any unreadable entry is recomputed
            if warn:
                warnings.warn(f"profile cache entry {data_path.name} is corrupted ({error}); recomputing", stacklevel=2)
            return None

    def store(self, key: dict[str, Any], profile: ActivationProfile) -> None:
        data_path, meta_path = self.paths(key)
        atomic_write(data_path, lambda tmp: torch.save(profile.to_state(), tmp))
        atomic_write_json(meta_path, {"key": key, "sha256": sha256_file(data_path), "format": FORMAT_VERSION})

    def get_or_compute(self, key: dict[str, Any], compute: Callable[[], ActivationProfile]) -> tuple[ActivationProfile, bool]:
        """(profile, was_cached). Two processes asking for the same key compute it once."""
        cached = self.load(key)
        if cached is not None:
            return cached, True
        data_path, _ = self.paths(key)
        self.root.mkdir(parents=True, exist_ok=True)
        with file_lock(str(data_path) + ".lock"):
            cached = self.load(key, warn=False)  # another process may have finished it while we waited
            if cached is not None:
                return cached, True
            profile = compute()
            self.store(key, profile)
        return profile, False
