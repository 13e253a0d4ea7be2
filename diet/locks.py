"""A file lock that works on the filesystems clusters put caches on.

filelock's FileLock uses flock(2); some shared filesystems (NFS mounted with nolock, some Lustre and FUSE
mounts) refuse it with ENOLCK / ENOSYS / EOPNOTSUPP. There the lock falls back to filelock's SoftFileLock
(an exclusive lock file: correct everywhere, but a process killed while holding it leaves the file, which
the timeout message names). Every process on one filesystem takes the same branch, so they exclude each other.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from typing import Iterator

from filelock import FileLock, SoftFileLock, Timeout

log = logging.getLogger(__name__)

NO_FLOCK = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}
SOFT_TIMEOUT_S = 6 * 3600.0  # a soft lock older than any profile or conversion is reported, not waited on forever


@contextlib.contextmanager
def file_lock(path: str) -> Iterator[None]:
    lock = FileLock(path)
    try:
        lock.acquire()
    except OSError as error:
        if error.errno not in NO_FLOCK:
            raise
        log.info("flock refused on %s (%s): using a lock file instead", path, error.strerror)
        soft = SoftFileLock(path + ".soft", timeout=SOFT_TIMEOUT_S)
        try:
            soft.acquire()
        except Timeout:
            raise RuntimeError(f"waited {SOFT_TIMEOUT_S / 3600:.0f} h for {path}.soft: if no process holds it "
                               f"(one was killed), remove the file") from None
        try:
            yield
        finally:
            soft.release()
        return
    try:
        yield
    finally:
        lock.release()
