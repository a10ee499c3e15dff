"""What a room refuses, each a ``LabError`` with one sentence (``resnet/assets/i18n/classroom.json``)."""
from __future__ import annotations

from ..errors import LabError


class RoomError(LabError, ValueError):
    """Root of the room's refusals."""


class RoomNotFound(RoomError):
    """No live room has that code (never made, ended, or expired): the same answer for each, so a guesser learns
    nothing from it."""


class NotTeacher(RoomError, PermissionError):
    """A request to drive a room without its teacher key."""


class TooManyAttempts(RoomError):
    """This address tried too many wrong codes lately; every lookup from it is refused until the window passes."""


class RoomsFull(RoomError):
    """The server holds as many rooms as it may (``RESNET_MAX_ROOMS``), none of them idle."""


class RoomFull(RoomError):
    """The room holds as many students as it may."""
