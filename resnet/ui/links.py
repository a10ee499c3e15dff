"""Shareable links: every tab's settings in the page URL, so that one link puts a class on the same experiment.

``?tab=<id>`` selects a tab (``architecture classify features finetune labs about``: the ``gr.Tab`` ids) and the
other query parameters set that tab's inputs, each named after the parameter of the handler it feeds
(``?tab=finetune&arch=resnet50&epochs=3&strategies=all,last,head``). Nothing here names a tab's settings: they
are read from the app itself (``collect``), from every public named event (``api_name``): its input components, the
handler's parameter names, and the ``gr.Tab`` each component sits in. A setting added to an endpoint is linkable at
once. Files, images and ``gr.State`` are not (a link cannot carry an upload), nor choices that only exist after a
run (a dropdown built empty), nor a shortcut that only the visitor's own choice runs (``.input``: the Fine-tune tab's
preset sets other settings, and those are in the link).

Names: a parameter name belongs to the first endpoint of its tab that uses it, the endpoint named like the tab
first (``/finetune`` on the Fine-tune tab), then in the order the page builds them. Another component of the same
tab behind the same name is reached as ``<api_name>.<name>`` (the Labs tab: ``batch_size`` is the gradient-flow
section's, ``training_race.batch_size`` the race's); that qualified form is accepted for every parameter.

Values: a list is a comma list (``strategies=all,last,head``); a number is checked against its component's
minimum, maximum, step and precision; a choice must be one of the component's choices (a dropdown that takes
custom values takes any short text); a checkbox is ``true`` or ``false``. A value that does not fit, an unknown
name or tab is ignored, and the page says which and why in a line above the tabs (``links.*`` strings), never an
error. Reading the URL happens on the server when the page loads (``request.query_params``); writing it happens in
the browser: each tab's "Copy link" button (``copy_link_button``) builds the link from the values on the page, and
the address bar follows the settings as they change (``history.replaceState``).
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field

import gradio as gr
from gradio import utils as gr_utils

from ..i18n import Text, t

log = logging.getLogger("resnet.ui")

TAB = "tab"
# Query parameters the page itself uses (Gradio's own views and theme): never reported as unknown, kept as they are.
RESERVED = frozenset({"view", "deep_link", "lang", "write_token", "room", "student"})  # the live class's room, a name
# The teacher's key to a live class (``resnet.ui.tabs.classroom``): kept in the teacher's address bar, never copied.
PRIVATE = frozenset({"key"})
MAX_TEXT = 200  # a free-text value in a link (a dropdown that takes custom values)
LINKABLE = (gr.Dropdown, gr.Radio, gr.CheckboxGroup, gr.Slider, gr.Number, gr.Checkbox, gr.Textbox)
COPY_ID, TEXT_ID = "link-copy-{tab}", "link-text-{tab}"


class Invalid(ValueError):
    """A value in a link that does not fit its component; ``why`` says what would (a ``Text``)."""

    def __init__(self, why: Text):
        super().__init__(str(why))
        self.why = why


@dataclass
class Field:
    """One linkable input of a tab: its query parameter ``name`` (and other names that reach it), its component."""
    name: str
    component: gr.components.Component
    endpoint: str
    aliases: list[str] = field(default_factory=list)


@dataclass
class TabLinks:
    id: str
    tab: gr.Tab
    fields: list[Field] = field(default_factory=list)

    def lookup(self) -> dict[str, Field]:
        """Every accepted name (plain and qualified) → its field."""
        out = {}
        for f in self.fields:
            for name in (f.name, *f.aliases):
                out.setdefault(name, f)
        return out


# ---- What a tab's link holds, read from the app --------------------------------------------------------------

def tab_of(block) -> gr.Tab | None:
    """The ``gr.Tab`` a component sits in (its nearest ancestor), or None."""
    parent = getattr(block, "parent", None)
    while parent is not None:
        if isinstance(parent, gr.Tab):
            return parent
        parent = getattr(parent, "parent", None)
    return None


def linkable(component) -> bool:
    """Whether a link can carry this input's value: a setting, not a file, an image, a state, an empty choice or a
    value the page holds out of sight (``visible=False``: the lesson's committed prediction is committed, not linked)."""
    if not isinstance(component, LINKABLE) or component.visible is False:
        return False
    if isinstance(component, (gr.Dropdown, gr.Radio, gr.CheckboxGroup)):
        return bool(component.choices) or bool(getattr(component, "allow_custom_value", False))
    return True


def parameter_names(fn) -> list[str | None]:
    """The handler's parameter name for each of an event's inputs (what ``gradio_client`` calls them)."""
    names = list(getattr(fn, "input_parameter_names", None) or [])
    if not names and fn.fn is not None:
        names = [p.name for p in gr_utils.get_positional_input_parameters(fn.fn)]
    return (names + [None] * len(fn.inputs))[:len(fn.inputs)]


def named_events(demo: gr.Blocks):
    """The public named events, in the order the page registered them."""
    for fn in demo.fns.values():
        if fn.fn is None or not fn.api_name or getattr(fn, "api_visibility", "public") != "public":
            continue
        yield fn


def collect(demo: gr.Blocks) -> dict[str, TabLinks]:
    """Each tab's linkable inputs, in the page's tab order (tabs without a linkable input included)."""
    tabs: dict[str, TabLinks] = {}
    for block in demo.blocks.values():
        if isinstance(block, gr.Tab) and block.id is not None:
            tabs.setdefault(str(block.id), TabLinks(str(block.id), block))
    per_tab: dict[str, list[tuple[str, str, gr.components.Component]]] = {k: [] for k in tabs}
    for fn in named_events(demo):
        # An input whose own ``.input`` (the visitor's choice, never a value set by the page) runs the event is a
        # shortcut to other settings, such as the Fine-tune tab's preset: the settings it sets are what a link holds.
        own = {block_id for block_id, event in (fn.targets or []) if event == "input"}
        for component, name in zip(fn.inputs, parameter_names(fn)):
            tab = tab_of(component)
            if name is None or tab is None or str(tab.id) not in tabs or not linkable(component) \
                    or component._id in own:
                continue
            per_tab[str(tab.id)].append((fn.api_name, name, component))
    for tab_id, entries in per_tab.items():
        # The endpoint named like its tab first; otherwise the order the page built them in.
        entries.sort(key=lambda e: e[0] != tab_id)
        links = tabs[tab_id]
        by_component: dict[int, Field] = {}
        taken: set[str] = {TAB}
        for api_name, name, component in entries:
            qualified = f"{api_name}.{name}"
            f = by_component.get(component._id)
            if f is None:
                f = Field(name if name not in taken else qualified, component, api_name)
                by_component[component._id] = f
                links.fields.append(f)
                taken.add(f.name)
            for alias in (name, qualified):  # the plain name too, when no other field holds it
                if alias not in taken:
                    f.aliases.append(alias)
                    taken.add(alias)
    return tabs


# ---- Values ↔ query text --------------------------------------------------------------------------------------

def format_value(value) -> str | None:
    """A value as a link writes it (None: left out)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(v for v in (format_value(x) for x in value) if v is not None)
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return str(value)


def _choice(component, text: str):
    values = [value for _, value in component.choices]
    for value in values:
        if format_value(value) == text:
            return value
    if getattr(component, "allow_custom_value", False):
        if len(text) > MAX_TEXT:
            raise Invalid(Text("links.why.long", n=MAX_TEXT))
        return text
    raise Invalid(Text("links.why.choices", choices=", ".join(format_value(v) or "" for v in values)))


def _number(component, text: str):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        raise Invalid(Text("links.why.number"))
    lo, hi = getattr(component, "minimum", None), getattr(component, "maximum", None)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s, hi_s = format_value(float(lo)) if lo is not None else "−∞", format_value(float(hi)) if hi is not None else "∞"
        raise Invalid(Text("links.why.range", lo=lo_s, hi=hi_s))
    step = getattr(component, "step", None) if isinstance(component, gr.Slider) else None
    if step:
        k = (value - (lo or 0)) / step
        if abs(k - round(k)) > 1e-6:
            raise Invalid(Text("links.why.step", step=format_value(float(step)), lo=format_value(float(lo or 0))))
    whole = getattr(component, "precision", None) == 0 or (
        step is not None and float(step).is_integer() and float(lo or 0).is_integer())
    if whole:
        if not value.is_integer():
            raise Invalid(Text("links.why.whole"))
        return int(value)
    return value


def parse(component, text: str):
    """The value ``text`` (from a link) stands for in ``component``; ``Invalid`` (with why) when it does not fit."""
    text = text.strip()
    if isinstance(component, gr.CheckboxGroup) or (isinstance(component, gr.Dropdown) and component.multiselect):
        items = [s.strip() for s in text.split(",") if s.strip()]
        return list(dict.fromkeys(_choice(component, s) for s in items))
    if isinstance(component, (gr.Dropdown, gr.Radio)):
        return _choice(component, text)
    if isinstance(component, (gr.Slider, gr.Number)):
        return _number(component, text)
    if isinstance(component, gr.Checkbox):
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise Invalid(Text("links.why.bool"))
    if len(text) > MAX_TEXT:
        raise Invalid(Text("links.why.long", n=MAX_TEXT))
    return text


def to_query(tab: TabLinks, values: list) -> str:
    """The query string (without ``?``) of ``tab`` with ``values`` (one per field, in order); lists as comma lists."""
    parts = [f"{TAB}={tab.id}"]
    for f, value in zip(tab.fields, values):
        text = format_value(value)
        if text is not None:
            parts.append(f"{f.name}={_quote(text)}")
    return "&".join(parts)


def _quote(text: str) -> str:
    from urllib.parse import quote
    return quote(text, safe=",")


@dataclass
class Restored:
    """What a link asks for: the tab (None: none or unknown), each field's new value, and what was ignored."""
    tab: str | None
    values: dict[int, object]  # component id → value
    notes: list[Text]


def from_query(params: dict[str, str], tabs: dict[str, TabLinks]) -> Restored:
    """Read a page's query parameters: the tab, each setting's value, a note for each one ignored."""
    params = {str(k): str(v) for k, v in params.items() if not str(k).startswith("__") and k not in RESERVED | PRIVATE}
    tab_id = params.pop(TAB, None)
    notes: list[Text] = []
    if tab_id is None:
        if params:
            notes.append(Text("links.no_tab", names=", ".join(sorted(params))))
        return Restored(None, {}, notes)
    tab_id = tab_id.strip().lower()
    if tab_id not in tabs:
        notes.append(Text("links.bad_tab", tab=_show(tab_id), tabs=", ".join(tabs)))
        return Restored(None, {}, notes)
    lookup = tabs[tab_id].lookup()
    values: dict[int, object] = {}
    for name, text in params.items():
        f = lookup.get(name)
        if f is None:
            known = ", ".join(f.name for f in tabs[tab_id].fields)
            notes.append(Text("links.unknown", name=_show(name), tab=tab_id, known=known or "—"))
            continue
        try:
            values[f.component._id] = parse(f.component, text)
        except Invalid as e:
            notes.append(Text("links.bad_value", name=_show(f.name), value=_show(text), why=e.why))
    return Restored(tab_id, values, notes)


def _show(text: str) -> str:
    """A stranger's text quoted for a notice: short, in code, no backticks."""
    text = " ".join(text.replace("`", "'").split())
    return "`" + (text if len(text) <= 40 else text[:39] + "…") + "`"


def notice_text(notes: list[Text], L: str) -> str:
    if not notes:
        return ""
    return "⚠ " + t("links.ignored", L) + "\n" + "\n".join(f"- {n.render(L)}" for n in notes)


# ---- The page: reading the link on load, Copy link, the address bar ---------------------------------------------

def copy_link_button(ctx, tab: str | None = None) -> None:
    """A "Copy link" button and the link's text, for the tab being built (wired by ``install`` once every tab's
    events exist)."""
    with gr.Row(elem_classes="copy-link"):
        button = gr.Button(ctx("links.copy"), size="sm", scale=0, min_width=160,
                           elem_id=COPY_ID.format(tab=tab or "tab"))
        text = gr.Textbox(label=ctx("links.copy"), show_label=False, container=False, interactive=False, scale=4,
                          placeholder=ctx("links.placeholder"), elem_id=TEXT_ID.format(tab=tab or "tab"))
    ctx.links.append((tab, button, text))


def _js(tab: TabLinks, copy: bool) -> str:
    """The browser side: the link of ``tab`` from the values on the page (the event's inputs, in field order), put
    in the address bar without reloading; with ``copy``, also on the clipboard and returned (shown beside the
    button). Gradio's own parameters (``__theme``, ``view``) are kept, any other is the link's and is rewritten."""
    config = json.dumps({"tab": tab.id, "names": [f.name for f in tab.fields], "keep": sorted(RESERVED),
                         "private": sorted(PRIVATE)})
    return """(...values) => {
    const c = %s;
    if (!%s && !window.__resnetLinkRead) return [];  // the page's own first events: the link is not read yet
    const fmt = v => {
        if (v === null || v === undefined) return null;
        if (Array.isArray(v)) return v.map(fmt).filter(x => x !== null).join(",");
        if (typeof v === "boolean") return v ? "true" : "false";
        return String(v);
    };
    const enc = s => encodeURIComponent(s).replace(/%%2C/g, ",");
    const parts = [c.tab === null ? null : "tab=" + enc(c.tab)].filter(x => x !== null);
    c.names.forEach((name, i) => { const s = fmt(values[i]); if (s !== null) parts.push(name + "=" + enc(s)); });
    for (const [k, v] of new URLSearchParams(window.location.search)) {
        if (k.startsWith("__") || c.keep.includes(k) || (!%s && c.private.includes(k)))
            parts.push(enc(k) + "=" + enc(v));
    }
    const url = window.location.origin + window.location.pathname + "?" + parts.join("&") + window.location.hash;
    try { window.history.replaceState(window.history.state, "", url); } catch (e) {}
    if (!%s) return [];
    const fallback = () => {
        const area = document.createElement("textarea");
        area.value = url; area.style.position = "fixed"; area.style.opacity = "0";
        document.body.appendChild(area); area.select();
        try { document.execCommand("copy"); } catch (e) {}
        area.remove();
    };
    try {
        if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(url).catch(fallback);
        else fallback();
    } catch (e) { fallback(); }
    return url;
}""" % (config, "true" if copy else "false", "true" if copy else "false", "true" if copy else "false")


def install(demo: gr.Blocks, tabs_block: gr.Tabs, notice: gr.Markdown, buttons: list, lang) -> object:
    """Wire the links into the page (inside ``demo``'s context, after every tab is built): the load event that
    reads a link, each Copy-link button, and the address bar that follows the settings. Returns the load event
    (the page's other load events chain after it, so that they see the link's values)."""
    tabs = collect(demo)
    fields = [f for tl in tabs.values() for f in tl.fields]
    components = list({f.component._id: f.component for f in fields}.values())

    def restore(request: gr.Request = None):
        """The link's tab and settings (each output left as it is unless the link sets it), and a notice."""
        L = lang(request)
        try:
            params = dict(getattr(request, "query_params", None) or {})
            found = from_query(params, tabs)
        except Exception:  # a link must never break the page
            log.exception("reading a link")
            found = Restored(None, {}, [])
        text = notice_text(found.notes, L)
        updates = [gr.Tabs(selected=found.tab) if found.tab else gr.skip(),
                   gr.update(value=text, visible=bool(text))]
        updates += [gr.update(value=found.values[c._id]) if c._id in found.values else gr.skip() for c in components]
        return updates

    event = demo.load(restore, None, [tabs_block, notice, *components], api_visibility="private",
                      concurrency_limit=None, show_progress="hidden")
    # Until the link is read, the address bar keeps it (components fire change events as the page starts).
    event.then(None, None, None, js="() => { window.__resnetLinkRead = true; return []; }", api_visibility="private")
    for tab_id, button, text in buttons:
        home = tab_of(button)  # the tab the button sits in decides; the id given is for a button outside tabs
        tl = tabs.get(str(home.id) if home is not None else tab_id)
        if tl is None:
            continue
        button.click(None, [f.component for f in tl.fields], [text], js=_js(tl, copy=True),
                     api_visibility="private")
    for tl in tabs.values():  # the address bar follows the settings (and the tab chosen)
        inputs, js = [f.component for f in tl.fields], _js(tl, copy=False)
        tl.tab.select(None, inputs, None, js=js, api_visibility="private")
        for f in tl.fields:
            f.component.change(None, inputs, None, js=js, api_visibility="private")
    return event
