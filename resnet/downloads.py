"""Every download (weights and data sets): https only, timeouts, a size cap, a hash check, and a back-off.

A server must never hang on a slow mirror, hold a lock others wait on while it downloads, or remember a
failed download until it restarts: each URL that failed is tried again after a back-off (``RESNET_DOWNLOAD_RETRY_S``,
doubling per failure, at most an hour). ``http`` is accepted only on loopback (a local test mirror).
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from . import config
from .errors import DownloadFailed
from .i18n import error
from .filehash import sha256_file

log = logging.getLogger("resnet.downloads")
MAX_BACKOFF_S = 3600.0


_failures: dict[str, tuple[int, float]] = {}  # url → (failures in a row, monotonic time of the last)
_reachable: dict[str, bool] = {}  # host → what ``probe`` found (a download from it that succeeds says True)
_lock = threading.Lock()


def allowed_url(url: str) -> bool:
    """``https``, or ``http`` to this machine only."""
    parts = urllib.parse.urlsplit(url)
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1"))


def retry_in(url: str) -> float:
    """Seconds until ``url`` may be tried again (0: now)."""
    with _lock:
        n, when = _failures.get(url, (0, 0.0))
    if n == 0:
        return 0.0
    wait = min(MAX_BACKOFF_S, config.get("RESNET_DOWNLOAD_RETRY_S") * 2 ** (n - 1))
    return max(0.0, when + wait - time.monotonic())


def _failed(url: str) -> None:
    with _lock:
        n, _ = _failures.get(url, (0, 0.0))
        _failures[url] = (n + 1, time.monotonic())


def _host(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def probe(url: str, timeout: float | None = None) -> bool:
    """Can ``url`` be downloaded from here? A ``HEAD`` request (nothing downloaded), answered within ``timeout``
    (default ``RESNET_DOWNLOAD_TIMEOUT_S``) with a success: a refused connection, a timeout, no network or an error
    status mean no. The answer is remembered for the URL's host (``reachable``): a server finds out once, at start-up,
    whether its weights host can be reached, instead of each visitor's run waiting for a download to time out."""
    ok = False
    if allowed_url(url):
        try:
            req = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(req, timeout=timeout or config.get("RESNET_DOWNLOAD_TIMEOUT_S")) as r:
                ok = 200 <= r.status < 400
        except (urllib.error.URLError, OSError, ValueError) as e:
            log.warning("%s cannot be downloaded from here: %s", url, getattr(e, "reason", e))
    with _lock:
        _reachable[_host(url)] = ok
    return ok


def reachable(url: str) -> bool | None:
    """What ``probe`` found for ``url``'s host (or a later download from it that succeeded); None: never probed."""
    with _lock:
        return _reachable.get(_host(url))


CHUNK = 64 << 10  # bytes read at a time: Stop is noticed within one chunk, even on a slow line


class DownloadCancelled(Exception):
    """The download was stopped (``watched``'s ``cancelled`` became true); its partial file is gone."""


_watch = threading.local()


@contextlib.contextmanager
def watched(report, cancelled):
    """Within it, this thread's downloads call ``report(bytes done, bytes in all or 0)`` after each chunk and stop
    with ``DownloadCancelled`` once ``cancelled()`` is true: a page shows a long download's progress, and Stop ends
    it."""
    _watch.hooks = (report, cancelled)
    try:
        yield
    finally:
        _watch.hooks = None


def fetch(url: str, dst: Path, *, max_bytes: int, sha256_prefix: str | None = None) -> Path:
    """Download ``url`` to ``dst`` through ``dst.partial``; the file's SHA-256 must start with ``sha256_prefix``.

    Raises ``DownloadFailed`` (retry later) or ``HashMismatch`` (the file is not the expected one).
    """
    if not allowed_url(url):
        raise error(DownloadFailed, "download.https_only")
    wait = retry_in(url)
    if wait > 0:
        raise error(DownloadFailed, "download.backoff", minutes=wait / 60)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".partial")
    timeout = config.get("RESNET_DOWNLOAD_TIMEOUT_S")
    try:
        report, cancelled = getattr(_watch, "hooks", None) or (lambda done, total: None, lambda: False)
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as out:  # connect and each read
            n, total = 0, int(r.headers.get("Content-Length") or 0)
            while chunk := r.read(CHUNK):
                n += len(chunk)
                if n > max_bytes:
                    raise error(DownloadFailed, "download.too_large", mb=max_bytes / 2**20)
                out.write(chunk)
                report(n, total)
                if cancelled():
                    raise DownloadCancelled(url)
    except DownloadFailed:
        tmp.unlink(missing_ok=True)
        _failed(url)
        raise
    except (urllib.error.URLError, OSError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        _failed(url)
        log.warning("download of %s failed: %s", url, getattr(e, "reason", e))
        raise error(DownloadFailed, "download.offline") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sha256_prefix and not sha256_file(tmp).startswith(sha256_prefix.lower()):
        tmp.unlink(missing_ok=True)
        _failed(url)
        raise error(HashMismatch, "download.checksum")
    tmp.replace(dst)
    with _lock:
        _failures.pop(url, None)
        _reachable[_host(url)] = True
    return dst


class HashMismatch(DownloadFailed):
    pass
