"""One string table for the whole app, English and Simplified Chinese.

Every sentence a visitor reads comes from ``resnet/assets/i18n/<area>.json``
(``{"key": {"en": "...", "zh-CN": "..."}}``), looked up one of two ways:

- static UI text (labels, buttons, choice labels, explanations) goes to Gradio's i18n (``gr.I18n(**translations())``)
  and is translated in the browser;
- text the server makes (plot titles and legends, results, status lines, errors) is looked up here with ``t(key,
  lang)``, in the language of the visitor's browser.

A sentence made where the visitor's language is not known (a library check deep below the UI) is a ``Text``: it
reads as English (``str``: logs, the command line) and renders in any language later (``Text.render(lang)``); an
error carries one as ``error.text`` (see ``error`` and ``message``).
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

LANGS = ("en", "zh-CN")


ASSETS = Path(__file__).resolve().parent / "assets"  # package data: the same in the checkout and an installed copy
I18N_DIR = ASSETS / "i18n"


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


def has(key: str) -> bool:
    return key in table()


def t(key: str, lang: str = "en", **fmt) -> str:
    """The string ``key`` in ``lang`` (English if missing), formatted with ``fmt`` (``Text`` values rendered in
    ``lang`` first)."""
    entry = table().get(key)
    if entry is None:
        raise KeyError(f"no i18n string {key!r}")
    text = entry.get(lang) or entry["en"]
    return text.format(**{k: render(v, lang) for k, v in fmt.items()}) if fmt else text


class Text:
    """A sentence from the table whose language is chosen when it is shown: ``str()`` is English."""

    __slots__ = ("key", "params")

    def __init__(self, key: str, **params):
        self.key, self.params = key, params

    def render(self, lang: str = "en") -> str:
        return t(self.key, lang, **self.params)

    def __str__(self) -> str:
        return self.render("en")

    def __repr__(self) -> str:
        return f"Text({self.key!r}, {self.params!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Text) and (self.key, self.params) == (other.key, other.params)

    def __hash__(self) -> int:
        return hash(self.key)


def render(value, lang: str = "en"):
    """``value`` in ``lang`` if it is a ``Text``, else unchanged."""
    return value.render(lang) if isinstance(value, Text) else value


def error(cls: type[Exception], key: str, **params) -> Exception:
    """An exception of type ``cls`` (a ``resnet.errors.LabError``) whose message is ``Text(key, **params)``: English
    as ``str(e)``, and ``message(e, lang)`` in the visitor's language."""
    text = Text(key, **params)
    e = cls(str(text))
    e.text = text
    return e


def message(e: BaseException, lang: str = "en") -> str:
    """The error's sentence in ``lang`` when it was made by ``error``; otherwise its own (English) text."""
    text = getattr(e, "text", None)
    return text.render(lang) if isinstance(text, Text) else str(e)


def translations() -> dict[str, dict[str, str]]:
    """``{lang: {key: text}}``, the shape ``gr.I18n(**translations())`` takes."""
    out: dict[str, dict[str, str]] = {lang: {} for lang in LANGS}
    for key, langs in table().items():
        for lang in LANGS:
            out[lang][key] = langs.get(lang) or langs["en"]
    return out


# ---------------------------------------------------------------------------- what Chinese text may keep in English

# The English the note itself keeps after a Chinese term (GLOSSARY.md), names (models, data sets, libraries, people),
# and units. Words with a digit, an underscore or a dot (ResNet-50, conv2_x, layer1.0.bn1, fp32, cheetah.jpg) and
# acronyms in capitals (BN, SGD, CPU) are names or code as well; so is text inside a code span.
KEPT_PHRASES = ("Batch Normalization", "batch size", "model.train()", "model.eval()", "Hugging Face")
KEPT_WORDS = frozenset("""
    epoch bias depthwise dropout logits FLOPs MACs TMACs GMACs ImageNet CIFAR torchvision PyTorch Gradio Grad-CAM
    ResNet ResNeXt Wide Xavier He ReLU softmax torch px MiB GiB KiB inf NaN
""".split())
_SHORT_WORDS = frozenset("of in at to on or no is be by an as it we if up do so".split())
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_.'+-]*")


def foreign_words(text: str) -> list[str]:
    """The English words in ``text`` that a Chinese page should not show: everything in Latin letters except names,
    units, code and the glossary's kept terms (``KEPT_PHRASES``, ``KEPT_WORDS``); one- and two-letter tokens (x, y,
    μ_B, k, He) are symbols, except English's own short words (of, in, no …)."""
    text = re.sub(r"`[^`]*`|<code>.*?</code>|<[^>]*>|[\w/-]*\.(?:zip|jpe?g|png|gif|bmp|webp|tiff?|pth|pt|json|csv)\b",
                  " ", text)
    for phrase in KEPT_PHRASES:
        text = text.replace(phrase, " ")
    out = []
    for word in _WORD.findall(text):
        word = word.rstrip(".'-+")
        symbol = len(word) <= 2 and word.lower() not in _SHORT_WORDS
        acronym = word.isupper() or (word.endswith("s") and word[:-1].isupper())  # BN, SGD, CPUs
        if not (symbol or acronym or word in KEPT_WORDS or re.search(r"[0-9_.]", word)):
            out.append(word)
    return out
