"""Classify tab: ImageNet top-5 for an uploaded, pasted or webcam image, or the answers of a student's own checkpoint
(a state dict such as the note's tutorial saves, with its class_indices.json)."""
from __future__ import annotations

import threading
from pathlib import Path

import gradio as gr

from ... import device as devices
from ...checkpoint import CheckpointCache
from ...errors import BadSetting
from ...i18n import error, t
from ...models.resnet import ARCHS
from ...predict import classify, model_categories
from ..common import arch_choices, example_photos, friendly, lang, payload_path, weights_reason

CHECKPOINT_TYPES = [".pth", ".pt"]
CLASS_FILE_TYPES = [".json"]
_cache_lock = threading.Lock()


def weights_banner(entry, L: str) -> str:
    """Where the weights came from, or a warning (and what to do) when there are none."""
    title = ARCHS[entry.arch].title
    if entry.pretrained:
        return t("classify.pretrained", L, title=title, source=entry.source)
    return t("classify.random", L, title=title, arch=entry.arch, reason=weights_reason(entry, L))


def checkpoint_cache(ctx) -> CheckpointCache:
    """The app's loaded checkpoints (both tabs share them), by the SHA-256 of the uploaded bytes: classifying the
    same upload again does not read it again. Two models at most, within the model cache's memory budget."""
    with _cache_lock:
        cache = getattr(ctx, "checkpoints", None)
        if cache is None:
            device = ctx.models.device
            cache = ctx.checkpoints = CheckpointCache(
                max_items=2, max_mb=ctx.settings.cache_mb,
                prepare=lambda model: devices.prepare(model, device, amp=False))
        return cache


def own_model(ctx, checkpoint, class_indices, L: str):
    """``(model, banner)`` for an uploaded checkpoint (and class-index file), or None when none was uploaded.
    Both payloads pass ``payload_path``: only files uploaded to this server are opened."""
    ckpt, classes = payload_path(checkpoint, L), payload_path(class_indices, L)
    if not ckpt:
        if classes:
            raise error(BadSetting, "classify.classes_without_checkpoint")
        return None
    model = checkpoint_cache(ctx).get(ckpt, classes)
    return model, own_banner(model, Path(ckpt).name, Path(classes).name if classes else None, L)


def class_label(model, index: int, name: str, L: str) -> str:
    """A class as the page shows it: its name, or, for a checkpoint uploaded without a class-index file (whose
    outputs are only numbered), "class 3" in the page's language."""
    if getattr(model, "categories", None) or int(model.fc.out_features) == 1000:
        return name
    return t("classify.class_n", L, i=index)


def own_banner(model, name: str, classes_name: str | None, L: str) -> str:
    """"Your checkpoint (ResNet-34, 5 classes)": what answers instead of the ImageNet model, and where its class
    names come from (file names only: the visitor's own)."""
    n = int(model.fc.out_features)
    names = (t("classify.own_classes", L, name=classes_name) if classes_name
             else t("classify.own_no_classes", L, last=n - 1))
    return t("classify.own", L, title=ARCHS[model.arch].title, n=n, name=name, classes=names)


def make_classifier(ctx):
    @friendly
    def classify_image(image, arch: str, checkpoint=None, class_indices=None, request: gr.Request = None):
        L = lang(request)
        path = payload_path(image, L)
        if not path:
            raise error(BadSetting, "classify.no_image")
        own = own_model(ctx, checkpoint, class_indices, L)
        if own is not None:
            model, banner = own
            index = {n: i for i, n in enumerate(model_categories(model))}
            return {class_label(model, index[n], n, L): p for n, p in classify(model, path, top_k=5)}, banner
        if arch not in ARCHS:
            raise error(BadSetting, "arch.unknown", arch=arch)
        entry = ctx.models.get(arch)
        top = classify(entry.model, path, top_k=5)
        return dict(top), weights_banner(entry, L)
    return classify_image


def own_inputs(ctx, prefix: str):
    """The accordion where a student uploads a checkpoint and its class-index file (both tabs)."""
    with gr.Accordion(ctx("classify.own_title"), open=False, elem_id=f"{prefix}-own"):
        gr.Markdown(ctx("classify.own_intro"))
        checkpoint = gr.File(file_types=CHECKPOINT_TYPES, label=ctx("classify.checkpoint"),
                             elem_id=f"{prefix}-checkpoint", height=90)
        class_indices = gr.File(file_types=CLASS_FILE_TYPES, label=ctx("classify.class_indices"),
                                elem_id=f"{prefix}-class-indices", height=90)
    return checkpoint, class_indices


def build(ctx) -> None:
    with gr.Tab(ctx("tab.classify"), id="classify"):
        gr.Markdown(ctx("classify.intro"))
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", sources=["upload", "clipboard", "webcam"], label=ctx("classify.image"),
                                 elem_id="classify-image", height=320)
                arch = gr.Dropdown(arch_choices(), value=ctx.settings.default_arch, label=ctx("arch.depth"))
                checkpoint, class_indices = own_inputs(ctx, "classify")
                button = gr.Button(ctx("classify.run"), variant="primary", elem_id="classify-button")
            with gr.Column():
                top5 = gr.Label(num_top_classes=5, label=ctx("classify.top5"), elem_id="classify-label")
                info = gr.Markdown(elem_id="classify-info")
        gr.Examples(example_photos(), inputs=[image], label=ctx("classify.examples"))
        fn = make_classifier(ctx)
        inputs = [image, arch, checkpoint, class_indices]
        button.click(fn, inputs, [top5, info], api_name="classify", preprocess=False, **ctx.quick)
        image.upload(fn, inputs, [top5, info], api_visibility="private", preprocess=False,
                     **ctx.quick)
        ctx.copy_link("classify")
