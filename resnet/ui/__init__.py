"""The Gradio app: one ``gr.Blocks`` with a tab per idea. Model logic lives in ``resnet``, not here."""
from __future__ import annotations

import os
from pathlib import Path

import gradio as gr
import torch
from starlette.middleware import Middleware

from .. import device as devices
from ..fonts import use_cjk_fallback
from ..i18n import translations
from ..serving import ModelCache, Settings
from . import about, architecture, classify, disk, fairshare, features, finetune, labs
from .common import Context
from .uploads import UploadGuard

ASSETS = Path(__file__).resolve().parent.parent.parent / "assets"
TABS = (architecture, classify, features, finetune, labs, about)


def create_app(settings: Settings | None = None, models: ModelCache | None = None) -> tuple[gr.Blocks, dict]:
    """The Blocks app and the keyword arguments its ``launch`` needs (i18n, css, limits)."""
    settings = settings or Settings()
    torch.set_num_threads(settings.torch_threads)  # concurrent jobs share the cores instead of oversubscribing
    use_cjk_fallback()
    models = models or ModelCache(settings.cache_mb, allow_download=settings.allow_download)
    i18n = gr.I18n(**translations())
    ctx = Context(settings, models, i18n)
    # delete_cache: Gradio's copies of uploads and of fine-tuned model files go after an hour.
    with gr.Blocks(title="ResNet Lab", delete_cache=(900, 3600)) as demo:
        gr.Markdown(i18n("app.title"), elem_id="title")
        gr.Markdown(f"`{devices.describe(models.device)}`", elem_id="device-line")
        with gr.Tabs():
            for tab in TABS:
                tab.build(ctx)
        for fn, inputs, outputs in ctx.loads:
            demo.load(fn, inputs, outputs, api_visibility="private", **ctx.cheap)
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
                         app_kwargs={"middleware": [Middleware(UploadGuard, demo=demo)]})
    return demo, launch_kwargs


def main() -> None:
    demo, kwargs = create_app()
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME"), **kwargs)
