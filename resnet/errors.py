"""The errors whose message is a sentence for the visitor. Anything else is logged and answered generically.

A ``LabError`` message never holds a server path, an errno string or where files are cached: those go to
the server log (``WeightsUnavailable.detail`` keeps the operator's version). The subclasses also derive from
``ValueError`` / ``RuntimeError`` where callers have long caught those.
"""
from __future__ import annotations


class LabError(Exception):
    """Root of the user-facing errors: the message says what happened and what to do, in one sentence."""


class BadSetting(LabError, ValueError):
    """A setting (a slider's value, a name, a list) outside what the function takes."""


class BudgetExceeded(BadSetting):
    """A job over this server's memory or work budget; the message names the limit and a setting that fits."""


class BadImage(LabError, ValueError):
    """The input is not an image we can read."""


class DatasetError(LabError, ValueError):
    """A data set that cannot be used."""


class NotUploaded(LabError, ValueError):
    """A request names a file that was not uploaded through this server."""


class DownloadFailed(LabError):
    """A download did not complete."""


class WeightsUnavailable(LabError, RuntimeError):
    """No usable pretrained weights; the message says what happened (no server paths), ``detail`` says where."""

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail or message
