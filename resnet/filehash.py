"""A file's SHA-256, once for the package: downloads check it, checkpoints and weights are known by it, runs are
keyed by it. A leaf module (no imports from the package), so anything may use it without an import circle."""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """The hex SHA-256 of a file's bytes, read a megabyte at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: str | os.PathLike | None) -> str:
    """SHA-256 of a file's bytes ("" for None), remembered while its size, time and inode stay the same: a
    classroom classifying with one uploaded checkpoint, or every fine-tune resolving its weights again, does not
    hash 80–340 MB each time."""
    if path is None:
        return ""
    st = os.stat(path)
    return _digest(os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)


@functools.lru_cache(maxsize=256)
def _digest(path: str, size: int, mtime_ns: int, inode: int) -> str:
    return sha256_file(path)
