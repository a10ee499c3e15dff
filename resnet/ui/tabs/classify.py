"""Classify tab: ImageNet top-5 for an uploaded, pasted or webcam image."""
from __future__ import annotations

import gradio as gr

from ...errors import BadSetting
from ...i18n import error, t
from ...models.resnet import ARCHS
from ...predict import classify
from ..common import arch_choices, example_photos, friendly, lang, payload_path, weights_reason


def weights_banner(entry, L: str) -> str:
    """Where the weights came from, or a warning (and what to do) when there are none."""
    title = ARCHS[entry.arch].title
    if entry.pretrained:
        return t("classify.pretrained", L, title=title, source=entry.source)
    return t("classify.random", L, title=title, arch=entry.arch, reason=weights_reason(entry, L))


def make_classifier(ctx):
    @friendly
    def classify_image(image, arch: str, request: gr.Request = None):
        L = lang(request)
        path = payload_path(image, L)
        if not path:
            raise error(BadSetting, "classify.no_image")
        if arch not in ARCHS:
            raise error(BadSetting, "arch.unknown", arch=arch)
        entry = ctx.models.get(arch)
        top = classify(entry.model, path, top_k=5)
        return dict(top), weights_banner(entry, L)
    return classify_image


def build(ctx) -> None:
    with gr.Tab(ctx("tab.classify"), id="classify"):
        gr.Markdown(ctx("classify.intro"))
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", sources=["upload", "clipboard", "webcam"], label=ctx("classify.image"),
                                 elem_id="classify-image", height=320)
                arch = gr.Dropdown(arch_choices(), value=ctx.settings.default_arch, label=ctx("arch.depth"))
                button = gr.Button(ctx("classify.run"), variant="primary", elem_id="classify-button")
            with gr.Column():
                top5 = gr.Label(num_top_classes=5, label=ctx("classify.top5"), elem_id="classify-label")
                info = gr.Markdown(elem_id="classify-info")
        gr.Examples(example_photos(), inputs=[image], label=ctx("classify.examples"))
        fn = make_classifier(ctx)
        button.click(fn, [image, arch], [top5, info], api_name="classify", preprocess=False, **ctx.quick)
        image.upload(fn, [image, arch], [top5, info], api_visibility="private", preprocess=False,
                     **ctx.quick)
        ctx.copy_link("classify")
