"""Settings as the API may send them, checked: a whole number in range, a list of known names.

Every refusal is one translatable sentence (``budget.*`` in assets/i18n/safety.json) that names the setting, the
range and the value received: English as ``str(e)`` for the command line and the logs, the visitor's language on
the page (``resnet.i18n.message``).
"""
from __future__ import annotations

import math

from .errors import BadSetting
from .i18n import Text, error, has


def what_text(what: str) -> Text | str:
    """A setting's name (``"batch size"``) as a translatable ``budget.what.batch_size`` where the table has it."""
    key = "budget.what." + what.replace(" ", "_").replace("-", "_")
    return Text(key) if has(key) else what


def whole(value, lo: int, hi: int, what: str) -> int:
    """``value`` as an int in [lo, hi] (an integral float is accepted: sliders send them), else one sentence.
    ``what`` names the setting in English (``"batch size"``); its translation is ``budget.what.batch_size``."""
    ok = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
    if isinstance(value, bool) or not ok or not lo <= value <= hi:
        raise error(BadSetting, "budget.whole", what=what_text(what), lo=lo, hi=hi, value=short(value))
    return int(value)


def choices(values, allowed, what: str, limit: int | None = None) -> tuple:
    """A list input from the API: one name or a list of names from ``allowed``, duplicates collapsed, capped."""
    if isinstance(values, str):
        values = [v for v in values.split(",")]
    if not isinstance(values, (list, tuple)):
        raise error(BadSetting, "budget.not_a_list", what=what_text(what), value=short(values))
    limit = limit or len(allowed)
    if len(values) > 4 * limit:  # a request padded with thousands of copies is not worth reading
        raise error(BadSetting, "budget.at_most", limit=limit, what=what_text(what))
    out = []
    for v in values:
        v = v.strip() if isinstance(v, str) else v
        if not isinstance(v, str) or v not in allowed:
            raise error(BadSetting, "budget.unknown", what=what_text(what[:-1] if what.endswith("s") else what),
                        value=short(v), allowed=", ".join(allowed))
        if v not in out:
            out.append(v)
    if not out:
        raise error(BadSetting, "budget.at_least_one", what=what_text(what))
    if len(out) > limit:
        raise error(BadSetting, "budget.at_most", limit=limit, what=what_text(what))
    return tuple(out)


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:20] + "…"
