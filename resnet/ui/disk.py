"""Disk that visitors can fill: uploads and fine-tune runs, both inside Gradio's upload folder, bounded together.

Run files are written straight into Gradio's folder (``run_folder``) so that Gradio serves them without
copying: deleting a run's folder deletes the only copy. ``enforce_budget`` removes the oldest entries until
uploads and runs together fit ``RESNET_DISK_BUDGET_MB``, sparing anything in use or younger than a minute,
and the app's own files (the examples and default images Gradio copied there while the app was built).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from .. import config
from .uploads import upload_root

log = logging.getLogger("resnet.ui")
RUNS = "resnet-lab-runs"
GRACE_S = 60.0   # an upload about to be used, or a run being written, is never removed
_lock = threading.Lock()
_last = 0.0
_protected: set[str] = set()
busy: set[str] = set()  # folders of runs under way: never removed


def protect_existing() -> None:
    """Call once the app is built: what is in the upload folder now is the app's own, never removed."""
    root = Path(upload_root())
    if root.is_dir():
        _protected.update(str(p) for p in root.iterdir())


def run_folder() -> Path:
    """A new, private folder for one run's downloads, inside Gradio's upload folder."""
    root = Path(upload_root()) / RUNS
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="run-", dir=root))


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        st = path.lstat()
        return st.st_size // max(st.st_nlink, 1)  # a shared run's downloads are hard links to one copy
    return sum(_size(p) for p in path.iterdir())


def entries() -> list[tuple[float, int, Path]]:
    """(age stamp, bytes, path) of every removable entry: each upload's folder and each run's folder."""
    root = Path(upload_root())
    out = []
    for top in (root, root / RUNS):
        if not top.is_dir():
            continue
        for p in top.iterdir():
            if p.name == RUNS and top == root:
                continue
            try:
                out.append((p.lstat().st_mtime, _size(p), p))
            except OSError:  # removed meanwhile
                continue
    return out


def enforce_budget(*, every_s: float = 0.0) -> int:
    """Remove the oldest uploads and runs until they fit the budget; returns the bytes removed."""
    global _last
    with _lock:
        now = time.time()
        if now - _last < every_s:
            return 0
        _last = now
        budget = config.get("RESNET_DISK_BUDGET_MB") * 2**20
        items = sorted(entries(), key=lambda e: e[0])
        total = sum(size for _, size, _ in items)
        removed = 0
        for mtime, size, path in items:
            if total <= budget:
                break
            if str(path) in busy or str(path) in _protected or now - mtime < GRACE_S:
                continue
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            total -= size
            removed += size
        if removed:
            log.info("disk budget: removed %.1f MB of old uploads and runs", removed / 2**20)
        return removed


def remove(path: str | os.PathLike | None) -> None:
    """Delete one run's folder (only ever one of ours)."""
    if path and Path(path).parent.name == RUNS:
        shutil.rmtree(path, ignore_errors=True)
