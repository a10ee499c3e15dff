"""Where rooms live: ``RoomStore``, the small interface the UI talks to, and ``MemoryRooms``, the in-process one.

A room is found by its join code (on the students' link and the projector) and driven only with its teacher key (on
the teacher's link). Both come from ``secrets``. The code is ``CODE_LENGTH`` characters of ``ALPHABET`` (no 0/O,
1/I/L to misread): 31⁶ ≈ 8.9 × 10⁸ codes. A guess hits a live room with odds at most ``RESNET_MAX_ROOMS`` / 31⁶
(2.3 × 10⁻⁸ with the default 20); one address may make ``WRONG_CODES`` wrong guesses a minute
(``AttemptLimiter``), so a day of guessing from one address (14 400 guesses) finds some room with odds of 1 in 3 100
with all 20 rooms in use, and one given class (an hour, 600 guesses) with odds of 1 in 1.5 million
(``guess_odds``). A code only lets a page follow and answer; the teacher key (``secrets.token_urlsafe(24)``, 192
bits) is what drives a room, and the store keeps only its SHA-256, compared with ``hmac.compare_digest``.

Rooms are bounded (``RESNET_MAX_ROOMS``; a new one first drops idle ones) and expire after ``RESNET_ROOM_IDLE_S``
without a change or a student's heartbeat. Every method takes the code and returns only that room: nothing of one
room is reachable from another. A store shared by several replicas implements the same methods (ROOMS in the
README: Redis, pub/sub for ``wait_for_change``).
"""
from __future__ import annotations

import abc
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from typing import Callable, TypeVar

from .. import config
from ..i18n import error
from .errors import NotTeacher, RoomNotFound, RoomsFull, TooManyAttempts
from .room import Room

T = TypeVar("T")

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"  # 31 characters: no 0 O 1 I L
CODE_LENGTH = 6
WRONG_CODES = 10        # wrong codes one address may try …
WRONG_WINDOW_S = 60.0   # … within this many seconds


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def new_key() -> str:
    return secrets.token_urlsafe(24)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def normal_code(code) -> str:
    """A code as typed (lower case, spaces, a dash in the middle) in the form rooms are filed under."""
    if not isinstance(code, str):
        return ""
    return "".join(code.split()).replace("-", "").upper()[:2 * CODE_LENGTH]


def guess_odds(rooms: int, guesses: int) -> float:
    """The chance that ``guesses`` random guesses find any of ``rooms`` live rooms (at most; guessers repeat)."""
    return 1.0 - (1.0 - rooms / len(ALPHABET) ** CODE_LENGTH) ** guesses


class AttemptLimiter:
    """Wrong codes per address in a sliding window. Once an address is over, every lookup from it is refused (right
    codes too: answering a right code while refusing wrong ones would tell a guesser which is which)."""

    def __init__(self, limit: int = WRONG_CODES, window_s: float = WRONG_WINDOW_S, max_addresses: int = 10_000):
        self.limit, self.window_s, self.max_addresses = limit, window_s, max_addresses
        self._wrong: dict[str, deque] = {}
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque | None:
        times = self._wrong.get(address)
        if times is not None:
            while times and times[0] <= now - self.window_s:
                times.popleft()
            if not times:
                del self._wrong[address]
                return None
        return times

    def blocked(self, address: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._recent(address, now)
            return times is not None and len(times) >= self.limit

    def wrong(self, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            if address not in self._wrong and len(self._wrong) >= self.max_addresses:
                for a in list(self._wrong):  # forget the addresses whose window has passed
                    self._recent(a, now)
                if len(self._wrong) >= self.max_addresses:
                    self._wrong.pop(next(iter(self._wrong)))
            self._wrong.setdefault(address, deque()).append(now)


class RoomStore(abc.ABC):
    """Rooms by code. Changes go through ``update`` (a student's) or ``drive`` (the teacher's, key checked), each a
    function applied to the room at once and saved; followers wait for a room's ``version`` to pass the one they
    drew. A shared store implements these same methods."""

    @abc.abstractmethod
    def create(self) -> tuple[Room, str]:
        """A new room and its teacher key (the only time the key is seen). Raises ``RoomsFull``."""

    @abc.abstractmethod
    def get(self, code: str, address: str | None = None) -> Room:
        """The room of ``code``. With an ``address`` (a student joining), a wrong code counts against it, and an
        address over the limit is refused (``TooManyAttempts``). Raises ``RoomNotFound``."""

    @abc.abstractmethod
    def authorize(self, code: str, key: str) -> Room:
        """The room, if ``key`` is its teacher key; else ``NotTeacher`` (``RoomNotFound`` for no such room)."""

    @abc.abstractmethod
    def update(self, code: str, change: Callable[[Room], T]) -> T:
        """Apply ``change`` to the room (atomically), save it, and return what ``change`` returned."""

    def drive(self, code: str, key: str, change: Callable[[Room], T]) -> T:
        """A teacher's change: the key checked first."""
        self.authorize(code, key)
        return self.update(code, change)

    @abc.abstractmethod
    def delete(self, code: str) -> bool:
        """End a room (the caller has authorized the teacher); True if it was there."""

    @abc.abstractmethod
    def codes(self) -> list[str]:
        """The live rooms' codes (for the operator; never shown to a visitor)."""

    @abc.abstractmethod
    def expire(self, now: float | None = None) -> list[str]:
        """Drop the rooms idle for ``RESNET_ROOM_IDLE_S``; their codes."""

    @abc.abstractmethod
    def wait_for_change(self, code: str, version: int, timeout: float) -> int:
        """Block until the room's version is past ``version`` or ``timeout`` passes; the version then."""

    @abc.abstractmethod
    async def changed(self, code: str, version: int, timeout: float) -> int:
        """``wait_for_change`` for an async handler: awaits without holding a thread."""


class MemoryRooms(RoomStore):
    """The in-process store: a dict of live ``Room`` objects behind one lock (each room has its own lock for its
    changes). ``max_rooms`` and ``idle_s`` default to ``RESNET_MAX_ROOMS`` and ``RESNET_ROOM_IDLE_S``, read when
    needed."""

    def __init__(self, max_rooms: int | None = None, idle_s: float | None = None,
                 limiter: AttemptLimiter | None = None, clock: Callable[[], float] = time.time):
        self._max_rooms, self._idle_s = max_rooms, idle_s
        self.limiter = limiter or AttemptLimiter()
        self.clock = clock
        self._rooms: dict[str, Room] = {}
        self._keys: dict[str, str] = {}  # code → SHA-256 of the teacher key
        self._lock = threading.Lock()

    @property
    def max_rooms(self) -> int:
        return self._max_rooms if self._max_rooms is not None else config.get("RESNET_MAX_ROOMS")

    @property
    def idle_s(self) -> float:
        return self._idle_s if self._idle_s is not None else config.get("RESNET_ROOM_IDLE_S")

    def create(self) -> tuple[Room, str]:
        now = self.clock()
        self.expire(now)
        with self._lock:
            if len(self._rooms) >= self.max_rooms:
                raise error(RoomsFull, "classroom.rooms_full", n=self.max_rooms)
            code = new_code()
            while code in self._rooms:
                code = new_code()
            key = new_key()
            room = Room(code, created=now, clock=self.clock)
            self._rooms[code], self._keys[code] = room, key_digest(key)
        return room, key

    def _find(self, code: str, now: float) -> Room | None:
        """The live room of ``code`` (an idle one is dropped here, not returned)."""
        with self._lock:
            room = self._rooms.get(normal_code(code))
            if room is not None and now - room.last_active > self.idle_s:
                self._drop(room.code)
                return None
            return room

    def _drop(self, code: str) -> None:
        room = self._rooms.pop(code, None)
        self._keys.pop(code, None)
        if room is not None:
            room.close()

    def get(self, code: str, address: str | None = None) -> Room:
        if address is not None and self.limiter.blocked(address):
            raise error(TooManyAttempts, "classroom.too_many")
        room = self._find(code, self.clock())
        if room is None:
            if address is not None:
                self.limiter.wrong(address)
            raise error(RoomNotFound, "classroom.not_found")
        return room

    def authorize(self, code: str, key: str) -> Room:
        room = self.get(code)
        with self._lock:
            digest = self._keys.get(room.code, "")
        given = key_digest(key) if isinstance(key, str) else ""
        if not hmac.compare_digest(given, digest):
            raise error(NotTeacher, "classroom.not_teacher")
        return room

    def update(self, code: str, change: Callable[[Room], T]) -> T:
        room = self.get(code)
        with room.cond:
            return change(room)

    def delete(self, code: str) -> bool:
        with self._lock:
            there = normal_code(code) in self._rooms
            self._drop(normal_code(code))
            return there

    def codes(self) -> list[str]:
        with self._lock:
            return list(self._rooms)

    def expire(self, now: float | None = None) -> list[str]:
        now = self.clock() if now is None else now
        with self._lock:
            idle = [c for c, r in self._rooms.items() if now - r.last_active > self.idle_s]
            for code in idle:
                self._drop(code)
        return idle

    def wait_for_change(self, code: str, version: int, timeout: float) -> int:
        return self.get(code).wait_for_change(version, timeout)

    async def changed(self, code: str, version: int, timeout: float) -> int:
        return await self.get(code).changed(version, timeout)

    def stats(self) -> dict:
        """Rooms and students now (for the teacher's dashboard's server line and the logs)."""
        with self._lock:
            rooms = list(self._rooms.values())
        return {"rooms": len(rooms), "max_rooms": self.max_rooms, "students": sum(r.student_count() for r in rooms)}


ROOMS = MemoryRooms()  # the app's store

