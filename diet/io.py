"""Atomic writes and checksums: a crash never leaves a half-written result or cache file."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The permissions a plain open()/mkdir() would give (mkstemp/mkdtemp use 0600/0700)."""
    return (0o777 if directory else 0o666) & ~_umask()


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)`, then rename tmp_path onto `path` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, default_mode())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_create_text(path: str | Path, text: str) -> bool:
    """Write `text` to `path` only if no file is there, atomically: the complete file appears at once or not at
    all, and of two writers racing for one name exactly one wins (False for the other, who wrote nothing).
    A hard link of a finished temporary file is the exclusive step; where the filesystem has no hard links,
    an O_EXCL create followed by the write (exclusive, not atomic to readers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp_path = Path(tmp)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp_path, default_mode())
        try:
            os.link(tmp_path, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some FUSE / object-store mounts)
            return exclusive_create_text(path, text)
    finally:
        tmp_path.unlink(missing_ok=True)


def exclusive_create_text(path: str | Path, text: str) -> bool:
    """Create `path` with `text` unless it exists (O_EXCL: of two creators exactly one wins, False for the
    other); the content is written after the create, so a reader may briefly see it incomplete."""
    try:
        created = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, default_mode())
    except FileExistsError:
        return False
    with os.fdopen(created, "w", encoding="utf-8") as handle:
        handle.write(text)
    return True


def json_text(obj: Any) -> str:
    """The JSON text of every file diet writes (records, caches): indented, keys sorted, newline-terminated."""
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json_text(obj))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=64)
def _content_sha256(path: Path, mtime_ns: int, size: int) -> str:
    return sha256_file(path)


def content_sha256(path: str | Path) -> str:
    """sha256_file for identities: a file is read once per content on disk (its path, mtime and size), since a
    sweep computes the same identity for every cell. Integrity checks (checkpoints, caches) read the file."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return _content_sha256(resolved, stat.st_mtime_ns, stat.st_size)


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hash of a JSON-serialisable object, independent of key order."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return sha256_bytes(text.encode("utf-8"))[:length]
