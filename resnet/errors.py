"""The errors whose message is a sentence for the visitor. Anything else is logged and answered generically.

A ``LabError`` message never holds a server path, an errno string or where files are cached: those go to
the server log.
"""
from __future__ import annotations


class LabError(Exception):
    """Root of the user-facing errors: the message says what happened and what to do, in one sentence."""
