"""The Gradio app: one ``gr.Blocks`` with a tab per idea. Model logic lives in ``resnet``, not here."""
from __future__ import annotations

import functools
import os

import gradio as gr
import torch
from starlette.middleware import Middleware

from .. import device as devices
from ..fonts import use_cjk_fallback
from ..i18n import ASSETS, t, translations
from ..serving import ModelCache, Settings
from ..train import prepare
from ..train.estimate import DEFAULT_PRESET, PRESETS
from .tabs import about, architecture, classify, features, finetune, labs, lesson
from . import disk, fairshare, links
from .common import Context, lang
from .pages import PageTracker
from .uploads import UploadGuard

TABS = (lesson, architecture, classify, features, finetune, labs, about)


def device_line(device: torch.device, L: str) -> str:
    """Where inference and training run, and at what precision, in ``L`` (``resnet.device.describe``, translated)."""
    training = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[devices.amp_dtype(device)]
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        name = t("app.device.cpu", L, threads=torch.get_num_threads())
    else:
        name = device.type.upper()
    key = "app.device.line" if training == "fp32" else "app.device.line_mixed"
    return "`" + t(key, L, name=name, training=training) + "`"


def create_app(settings: Settings | None = None, models: ModelCache | None = None) -> tuple[gr.Blocks, dict]:
    """The Blocks app and the keyword arguments its ``launch`` needs (i18n, css, limits)."""
    settings = settings or Settings()
    torch.set_num_threads(settings.torch_threads)  # concurrent jobs share the cores instead of oversubscribing
    use_cjk_fallback()
    # Gradio switches matplotlib's backend around every event, importing pyplot then; imported here, once, so
    # that the first concurrent requests never import it in two threads at once (a circular-import error).
    import matplotlib.pyplot  # noqa: F401
    models = models or ModelCache(settings.cache_mb, allow_download=settings.allow_download)
    # Offline, the first Start must still teach: find out once, in the background, whether the Fine-tune tab's
    # default depth has ImageNet weights to be had, and if not, prepare the built-in source (``resnet.train.prepare``).
    prepare.start(PRESETS[DEFAULT_PRESET]["arch"])
    i18n = gr.I18n(**translations())
    ctx = Context(settings, models, i18n)
    # delete_cache: Gradio's copies of uploads and of fine-tuned model files go after an hour.
    with gr.Blocks(title="ResNet Lab", delete_cache=(900, 3600)) as demo:
        gr.Markdown(i18n("app.title"), elem_id="title")
        device = gr.Markdown(elem_id="device-line")

        def show_device(request: gr.Request):
            return device_line(models.device, lang(request))
        ctx.on_load(show_device, None, device)
        # What a shared link changed or ignored (``resnet.ui.links``); hidden unless a link says something.
        notice = gr.Markdown(visible=False, elem_id="link-notice")
        with gr.Tabs(elem_id="tabs") as tabs:
            for tab in TABS:
                tab.build(ctx)
        # The link in the page's URL is read first; every other load event follows it, so that each tab's first
        # results are computed with the link's settings.
        restored = links.install(demo, tabs, notice, ctx.links, lang)
        for fn, inputs, outputs in ctx.loads:
            restored.then(fn, inputs, outputs, api_visibility="private", **ctx.cheap)
    demo.queue(max_size=settings.max_queue)
    for fn in demo.fns.values():  # an event that does not say how it queues is a quick job
        if fn.queue and fn.concurrency_limit == "default":
            fn.concurrency_limit, fn.concurrency_id = ctx.quick["concurrency_limit"], ctx.quick["concurrency_id"]
    fairshare.install(demo)
    disk.protect_existing()  # the examples and default images Gradio copied while the app was built
    css_file = ASSETS / "style.css"
    launch_kwargs = dict(i18n=i18n, max_file_size=f"{settings.max_file_mb}mb",
                         css=css_file.read_text() if css_file.exists() else None,
                         theme=gr.themes.Soft(), show_error=True,
                         max_threads=fairshare.worker_slots(settings.max_queue),
                         app_kwargs={"middleware": [Middleware(PageTracker), Middleware(
                             UploadGuard, demo=demo, after_upload=functools.partial(disk.enforce_budget, every_s=5.0))]})
    return demo, launch_kwargs


def main() -> None:
    demo, kwargs = create_app()
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME"), **kwargs)
