"""Which browser sessions have a page open now, and from which address: what tells a class from a flood.

Gradio's page, and ``gradio_client`` alike, keep one heartbeat stream open per tab (``GET …/heartbeat/<session>``)
for as long as the tab lives. ``PageTracker`` (ASGI middleware) records each stream while it is open, and for
``GRACE_S`` after it closes (a phone waking up, a reconnect). Thirty students behind one school address are thirty
live pages there; a script that sends requests under fresh session ids holds none. ``resnet.ui.fairshare`` gives
each live page its own share, and all the requests of an address that come from no live page one small share
together. Opening pages costs a caller a held connection each, and at most ``RESNET_PAGES_PER_ADDRESS`` count.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Mapping

from .. import config

GRACE_S = 30.0       # a page whose stream closed counts this long more, if it was open for SETTLED_S at least
SETTLED_S = 5.0      # (a caller that opens and drops streams under fresh session ids gets nothing for them)
MAX_TRACKED = 20000  # sessions remembered in all (a bound on memory, far above any real load)


def address_of(headers: Mapping[str, str], peer: str | None) -> str:
    """The visitor's address: the first X-Forwarded-For hop behind a trusted proxy (a Space), else the peer."""
    if config.trust_proxy():
        first = (headers.get("x-forwarded-for") or "").split(",")[0].strip()
        if first:
            return first[:64]
    return peer or "unknown"


def client_address(request) -> str:
    """``address_of`` for a Gradio or Starlette request."""
    client = getattr(request, "client", None)
    return address_of(getattr(request, "headers", None) or {}, getattr(client, "host", None))


class Pages:
    """Live page sessions by address: open streams, and those closed less than ``GRACE_S`` ago."""

    def __init__(self):
        self._lock = threading.Lock()
        self._open: dict[str, tuple[str, int]] = {}      # session → (address, open streams)
        self._since: dict[str, float] = {}               # session → when its first open stream opened
        self._closed: dict[str, tuple[str, float]] = {}  # session → (address, when its last stream closed)

    def opened(self, session: str, address: str) -> bool:
        """A stream opened; False when the address already has its most pages (this one does not count)."""
        with self._lock:
            held = self._open.get(session)
            if held is not None and held[0] == address:
                self._open[session] = (address, held[1] + 1)
                return True
            if self._count(address) >= config.get("RESNET_PAGES_PER_ADDRESS") or len(self._open) >= MAX_TRACKED:
                return False
            self._closed.pop(session, None)
            self._open[session] = (address, 1)
            self._since[session] = time.monotonic()
            return True

    def closed(self, session: str, address: str) -> None:
        with self._lock:
            held = self._open.get(session)
            if held is None or held[0] != address:
                return
            if held[1] > 1:
                self._open[session] = (address, held[1] - 1)
                return
            del self._open[session]
            if time.monotonic() - self._since.pop(session, 0.0) >= SETTLED_S:
                self._closed[session] = (address, time.monotonic())
            self._expire()

    def live(self, session: str, address: str) -> bool:
        """Whether ``session`` has a page open from ``address`` (or had, within the grace)."""
        with self._lock:
            held = self._open.get(session) or self._closed.get(session)
            if held is None or held[0] != address:
                return False
            return session in self._open or time.monotonic() - held[1] < GRACE_S

    def count(self, address: str) -> int:
        with self._lock:
            return self._count(address)

    def _count(self, address: str) -> int:
        now = time.monotonic()
        return (sum(1 for a, _ in self._open.values() if a == address)
                + sum(1 for a, t in self._closed.values() if a == address and now - t < GRACE_S))

    def _expire(self) -> None:
        now = time.monotonic()
        for session in [s for s, (_, t) in self._closed.items() if now - t >= GRACE_S]:
            del self._closed[session]
        while len(self._closed) > MAX_TRACKED:
            self._closed.pop(next(iter(self._closed)))


PAGES = Pages()  # the process-wide record (the app's)


def session_of(path: str) -> str | None:
    """The session of a heartbeat stream's path (``…/heartbeat/<session>``), else None."""
    head, sep, session = path.rstrip("/").rpartition("/heartbeat/")
    return session[:128] if sep and session and "/" not in session else None


class PageTracker:
    """ASGI middleware: record every heartbeat stream in ``PAGES`` while it is open."""

    def __init__(self, app, pages: Pages | None = None):
        self.app, self.pages = app, pages or PAGES

    async def __call__(self, scope, receive, send):
        session = session_of(scope.get("path", "")) if scope["type"] == "http" and scope.get("method") == "GET" \
            else None
        if session is None:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        address = address_of(headers, (scope.get("client") or (None,))[0])
        counted = self.pages.opened(session, address)
        try:
            return await self.app(scope, receive, send)
        finally:
            if counted:
                self.pages.closed(session, address)
