"""What every tab shares: settings, the model cache, the string table, and error handling."""
from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from dataclasses import dataclass, field

import gradio as gr

from ..errors import LabError
from ..i18n import has, lang_from_header, message, t
from ..serving import ModelCache, Settings
from .uploads import uploaded_path

log = logging.getLogger("resnet.ui")

# The exceptions whose message is a sentence for the visitor (``resnet.errors``). Anything else (a plain
# ValueError, an OSError, a RuntimeError) may hold server paths, errno strings or torch internals: it is logged and
# answered with the generic sentence.
USER_ERRORS = (LabError,)


@dataclass
class Context:
    settings: Settings
    models: ModelCache
    i18n: gr.I18n
    loads: list = field(default_factory=list)
    links: list = field(default_factory=list)  # the tabs' Copy-link buttons (``resnet.ui.links``)

    def on_load(self, fn, inputs, outputs) -> None:
        """Run ``fn`` when a page opens, so that each tab shows something before the first click."""
        self.loads.append((fn, inputs, outputs))

    def copy_link(self, tab: str) -> None:
        """A "Copy link" button for tab ``tab``: the link to it with the settings on the page (``resnet.ui.links``)."""
        from .links import copy_link_button
        copy_link_button(self, tab)

    def __call__(self, key: str):
        """A translatable label for static UI text."""
        return self.i18n(key)

    # How an event queues. Quick jobs share one concurrency limit across all their endpoints (Gradio's
    # ``concurrency_id``); both kinds count towards a visitor's fair share (``fairshare``); cheap ones never wait.
    @property
    def quick(self) -> dict:
        return dict(concurrency_limit=self.settings.quick_concurrency, concurrency_id="quick")

    @property
    def train(self) -> dict:
        """Training-type jobs. Their handlers subscribe to ``resnet.train.jobs.JOBS``, which runs each distinct
        job once and at most ``train_concurrency`` of them at a time (the memory budget assumes that many), so
        Gradio lets every request in: thirty students asking for the same run all watch it live instead of
        waiting in line behind it. An endpoint given these settings MUST do its work through ``JOBS``
        (``resnet.ui.sharing``), or it would run unlimited."""
        return dict(concurrency_limit=max(self.settings.max_queue, self.settings.train_concurrency),
                    concurrency_id="train")

    cheap = dict(concurrency_limit=None)


def lang(request: gr.Request | None) -> str:
    """The user's language for server-made text, from the browser's Accept-Language."""
    headers = getattr(request, "headers", None) or {}
    return lang_from_header(headers.get("accept-language"))


def request_of(args, kwargs) -> gr.Request | None:
    """The ``gr.Request`` among a handler's arguments (None for a call with none, e.g. from a test)."""
    return next((v for v in (*args, *kwargs.values()) if isinstance(v, gr.Request)), None)


def _request_lang(args, kwargs) -> str:
    """The visitor's language, from the ``gr.Request`` among a handler's arguments (English without one)."""
    return lang(request_of(args, kwargs))


def _as_gr_error(e: Exception, L: str = "en") -> gr.Error:
    if isinstance(e, gr.Error):
        return e
    if isinstance(e, USER_ERRORS):
        return gr.Error(message(e, L).splitlines()[0][:400] or type(e).__name__, print_exception=False)
    log.exception("unexpected error")
    return gr.Error(t("error.unexpected", L), print_exception=False)


def friendly(fn):
    """Turn any failure into a one-sentence ``gr.Error`` in the visitor's language: a ``LabError``'s own sentence,
    anything else logged and answered generically. No stack trace ever reaches the page."""
    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def agen(*args, **kwargs):
            inner = fn(*args, **kwargs)
            try:
                async for item in inner:
                    yield item
            except (GeneratorExit, asyncio.CancelledError):
                raise
            except Exception as e:
                raise _as_gr_error(e, _request_lang(args, kwargs)) from None
            finally:
                await inner.aclose()  # its own clean-up (a subscription's close) now, not when collected
        return agen

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def coro(*args, **kwargs):
            try:
                return await fn(*args, **kwargs)
            except Exception as e:
                raise _as_gr_error(e, _request_lang(args, kwargs)) from None
        return coro

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except GeneratorExit:
                raise
            except Exception as e:
                raise _as_gr_error(e, _request_lang(args, kwargs)) from None
        return gen

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise _as_gr_error(e, _request_lang(args, kwargs)) from None
    return wrapper


def early(check):
    """A Gradio validator made of ``check(*inputs, lang)``: it runs when a job asks to join the queue, so a
    request over a limit (a bad setting, a file that was not uploaded, the memory or work budget) is refused at
    once with the same sentence the job would give, in the visitor's language, instead of after waiting its turn."""
    names = list(inspect.signature(check).parameters)[:-1]  # the event's inputs; the last parameter is the language
    n = len(names)
    # The page shows a refusal beside one input: the last visible one, just above the button that was pressed
    # (the first would put a budget or setting refusal over the data set's choices).
    shown = max(i for i, name in enumerate(names) if name != "state") if names else 0

    def validator(*args):
        inputs, request = args[:n], (args[n] if len(args) > n else None)
        L = lang(request)
        verdicts = [gr.validate(True, "")] * len(inputs)
        try:
            check(*inputs, L)
        except Exception as e:
            verdicts[shown] = gr.validate(False, _as_gr_error(e, L).message)
        return verdicts[0] if len(verdicts) == 1 else verdicts

    # Gradio passes the request only to a positional parameter annotated gr.Request: spell the signature out.
    P = inspect.Parameter
    validator.__signature__ = inspect.Signature(
        [P(f"input_{i}", P.POSITIONAL_OR_KEYWORD) for i in range(n)]
        + [P("request", P.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request)])
    validator.__annotations__ = {"request": gr.Request}
    return validator


def weights_reason(entry, L: str) -> str:
    """Why a model has no pretrained weights, for the visitor. The library's reasons are English sentences
    (``resnet.weights``): only the one for a download under way is known here, the rest are summed up."""
    if entry.source == t("weights.fetching", "en"):
        return t("weights.fetching", L)
    return entry.source if L == "en" else t("weights.unavailable", L)


def arch_choices() -> list[tuple[str, str]]:
    from ..models.resnet import ARCHS
    return [(spec.title, name) for name, spec in ARCHS.items()]


def explained(ctx, key: str, **markdown) -> None:
    """A page text and, where it has one, its longer part ``<key>.more`` behind a closed "More" fold: what is on the
    page stays short enough to read in class, and the rest is one click away."""
    gr.Markdown(ctx(key), **markdown)
    if has(key + ".more"):
        with gr.Accordion(ctx("app.fold"), open=False):
            gr.Markdown(ctx(key + ".more"))


def payload_path(value, lang: str = "en") -> str | None:
    """The path of a file the visitor uploaded, from a raw (``preprocess=False``) payload; None when empty.

    Anything that was not uploaded through this server is refused (``uploads.uploaded_path`` decides). File
    inputs skip Gradio's own decoding so that ``resnet.preprocess.open_image`` alone reads the bytes: one place for
    size limits, EXIF orientation and clear messages about broken files.
    """
    path = uploaded_path(value, lang)
    return str(path) if path else None


def duration_text(seconds: float, L: str) -> str:
    """A duration as the estimate lines say it: seconds under a minute and a half, else minutes and seconds."""
    if seconds < 90:
        return t("finetune.seconds", L, s=max(1, round(seconds)))
    m, s = divmod(round(seconds), 60)
    return t("finetune.minutes", L, m=m, s=s)


def example_photos() -> list[str]:
    """Real photos that ship inside gradio and matplotlib."""
    import gradio.media
    from matplotlib import cbook
    photos = [gradio.media.get_image(name) for name in ("cheetah.jpg", "lion.jpg", "tower.jpg", "bus.png")]
    return [str(p) for p in photos] + [str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))]


def on_gpu(fn=None, *, duration: int = 60):
    """On a ZeroGPU Space, run ``fn`` with a GPU attached (``spaces.GPU``); elsewhere, unchanged.

    ``spaces`` is only importable on Hugging Face; there is no hard dependency on it.
    """
    def wrap(f):
        try:
            import spaces  # type: ignore[import-not-found]
        except ImportError:
            return f
        return spaces.GPU(duration=duration)(f)
    return wrap(fn) if fn is not None else wrap
