"""One string table for the whole app, English and Simplified Chinese.

Static UI text goes to Gradio's i18n (translated in the browser); text the server generates (plot
titles, messages) is looked up here with ``t``. Each area of the app keeps its strings in its own
``assets/i18n/<area>.json`` file: ``{"key": {"en": "...", "zh-CN": "..."}}``.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

LANGS = ("en", "zh-CN")
I18N_DIR = Path(__file__).resolve().parent.parent / "assets" / "i18n"


@lru_cache(maxsize=1)
def table() -> dict[str, dict[str, str]]:
    strings: dict[str, dict[str, str]] = {}
    for f in sorted(I18N_DIR.glob("*.json")):
        for key, langs in json.loads(f.read_text(encoding="utf-8")).items():
            if key in strings:
                raise ValueError(f"i18n key {key!r} defined twice (second time in {f.name})")
            strings[key] = langs
    return strings


def lang_from_header(accept_language: str | None) -> str:
    """``zh-CN`` when the browser prefers any Chinese, else English."""
    first = (accept_language or "").split(",")[0].strip().lower()
    return "zh-CN" if first.startswith("zh") else "en"


def t(key: str, lang: str = "en", **fmt) -> str:
    """The string ``key`` in ``lang`` (English if missing), formatted with ``fmt``."""
    entry = table().get(key)
    if entry is None:
        raise KeyError(f"no i18n string {key!r}")
    text = entry.get(lang) or entry["en"]
    return text.format(**fmt) if fmt else text


def translations() -> dict[str, dict[str, str]]:
    """``{lang: {key: text}}``, the shape ``gr.I18n(**translations())`` takes."""
    out: dict[str, dict[str, str]] = {lang: {} for lang in LANGS}
    for key, langs in table().items():
        for lang in LANGS:
            out[lang][key] = langs.get(lang) or langs["en"]
    return out
