"""Feature maps tab: a stage's strongest channels, Grad-CAM for a class, and every stage's shape and meaning, for the
ImageNet model or a student's own checkpoint (the Classify tab's upload: ``classify.own_model``)."""
from __future__ import annotations

import gradio as gr
import gradio.media

from ...checkpoint import BadCheckpoint, read_classes
from ...errors import BadSetting
from ...analysis.features import ALL_STAGES, feature_maps, grad_cam, model_view, resolve_target, stage_info, to_input
from ...i18n import error, has, t
from ...models.resnet import ARCHS
from ..figures.features import cam_overlay, feature_grid
from ...predict import model_categories
from ..common import arch_choices, example_photos, friendly, lang, payload_path
from .classify import class_label, own_inputs, own_model

MIN_CHANNELS, MAX_CHANNELS, DEFAULT_CHANNELS = 4, 64, 16
TOP_CLASS = "top class"  # the target value meaning "the class the network predicts" (its label: features.top_class)


def shape_text(shape) -> str:
    return "×".join(str(int(d)) for d in shape)


def stage_meaning(row: dict, L: str) -> str:
    """What a stage's channels tend to respond to, from the string table (``stage.<name>.meaning``)."""
    key = row.get("meaning_key") or f"stage.{row['stage']}.meaning"
    if has(key):
        return t(key, L)
    meaning = row.get("meaning")  # a library without resnet/assets/i18n/stages.json: its own {"en", "zh-CN"} dict
    return (meaning.get(L) or meaning["en"]) if isinstance(meaning, dict) else str(meaning or "")


def stage_table(info: list[dict], current: str, L: str) -> str:
    """Markdown: one row per stage, the chosen one in bold."""
    rows = [t("features.table_head", L)]
    for row in info:
        name = f"**{row['stage']}**" if row["stage"] == current else row["stage"]
        rows.append(f"| {name} | {shape_text(row['shape'])} | {stage_meaning(row, L)} |")
    return "\n".join(rows)


def _target_index(model, target, own: bool = False) -> int | None:
    """The Grad-CAM class the user asked for (None: the top class), or a sentence saying what to type (a
    checkpoint's own class names, not ImageNet's, for a student's checkpoint)."""
    try:
        return resolve_target(model, target)
    except ValueError:
        names = model_categories(model)
        if own:
            shown = ", ".join(names[:10]) + (" …" if len(names) > 10 else "")
            raise error(BadSetting, "features.bad_target_own", target=repr(str(target)), names=shown,
                        last=len(names) - 1) from None
        raise error(BadSetting, "features.bad_target", target=repr(str(target)), last=len(names) - 1) from None


def make_handler(ctx):
    @friendly
    def show_features(image, arch: str, stage: str, n_channels: float, target, checkpoint=None, class_indices=None,
                      request: gr.Request = None, progress=gr.Progress()):
        L = lang(request)
        path = payload_path(image, L)
        if not path:
            raise error(BadSetting, "features.no_image")
        if arch not in ARCHS and checkpoint is None:
            raise error(BadSetting, "arch.unknown", arch=arch)
        if stage not in ALL_STAGES:
            raise error(BadSetting, "features.bad_stage", stage=stage)
        try:
            n = int(n_channels if n_channels is not None else DEFAULT_CHANNELS)
        except (TypeError, ValueError):
            n = -1
        if not MIN_CHANNELS <= n <= MAX_CHANNELS:
            raise error(BadSetting, "features.bad_channels", lo=MIN_CHANNELS, hi=MAX_CHANNELS)

        progress(0.05, desc=t("features.loading", L))
        own = own_model(ctx, checkpoint, class_indices, L)  # a student's checkpoint answers instead, if uploaded
        if own is not None:
            (model, banner), entry = own, None
            arch = model.arch
        else:
            if arch not in ARCHS:
                raise error(BadSetting, "arch.unknown", arch=arch)
            entry = ctx.models.get(arch)
            model = entry.model
        idx = _target_index(model, target, own is not None)

        progress(0.3, desc=t("features.computing", L))
        # One forward pass serves both: the chosen stage for the grid and conv5_x for Grad-CAM.
        x = to_input(model, path)  # decode and preprocess once
        maps = feature_maps(model, x, stages=tuple(dict.fromkeys((stage, "conv5_x"))))
        heat, idx, name, prob = grad_cam(model, x, idx, layer4=maps["conv5_x"])
        name = class_label(model, idx, name, L)
        view = model_view(model, x)

        progress(0.8, desc=t("features.drawing", L))
        fmap = maps[stage]
        title = ARCHS[arch].title
        shown = min(n, fmap.shape[0])
        grid = feature_grid(fmap, shown, t("features.grid_title", L, title=title, stage=stage,
                                                  shape=shape_text(fmap.shape), n=shown, c=fmap.shape[0]))
        overlay = cam_overlay(view, heat, name)

        parts = []
        if own is not None:
            parts.append(banner)
        elif not entry.pretrained:
            parts.append(t("features.random", L, title=title, arch=arch))
        parts.append(t("features.cam_for", L, name=name, index=idx, prob=prob, size=view.size[0]))
        parts.append(stage_table(stage_info(model, view.size[0]), stage, L))
        return grid, overlay, "\n\n".join(parts)
    return show_features


def make_target_update(ctx):
    def classes_changed(class_indices, request: gr.Request = None):
        """The Grad-CAM class list follows an uploaded class-index file (its names), and ImageNet's without one. A
        file that cannot be read changes nothing here: Show says what is wrong with it."""
        L = lang(request)
        path = payload_path(class_indices, L)  # only an uploaded file is opened
        try:
            names = read_classes(path) if path else None
        except BadCheckpoint:
            names = None
        info = t("features.target_info_own" if names else "features.target_info", L)
        return gr.Dropdown(choices=target_choices(ctx, names, L), value=TOP_CLASS, info=info)
    return classes_changed


def build(ctx) -> None:
    with gr.Tab(ctx("tab.features"), id="features"):
        gr.Markdown(ctx("features.intro"))
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(value=str(gradio.media.get_image("cheetah.jpg")), type="filepath",
                                 sources=["upload", "clipboard", "webcam"], label=ctx("features.image"),
                                 elem_id="features-image", height=280)
                arch = gr.Dropdown(arch_choices(), value=ctx.settings.default_arch, label=ctx("arch.depth"),
                                   elem_id="features-arch")
                stage = gr.Radio(list(ALL_STAGES), value="conv2_x", label=ctx("features.stage"),
                                 elem_id="features-stage")
                n_channels = gr.Slider(MIN_CHANNELS, MAX_CHANNELS, value=DEFAULT_CHANNELS, step=1,
                                       label=ctx("features.channels"), elem_id="features-channels")
                target = gr.Dropdown(target_choices(ctx), value=TOP_CLASS, allow_custom_value=True,
                                     filterable=True, label=ctx("features.target"), info=ctx("features.target_info"),
                                     elem_id="features-target")
                checkpoint, class_indices = own_inputs(ctx, "features")
                button = gr.Button(ctx("features.run"), variant="primary", elem_id="features-button")
            with gr.Column(scale=2):
                grid = gr.Plot(label=ctx("features.grid"), elem_id="features-grid")
                cam = gr.Image(type="pil", label=ctx("features.cam"), interactive=False, elem_id="features-cam",
                               height=300)
                info = gr.Markdown(elem_id="features-info")
        gr.Examples(example_photos(), inputs=[image], label=ctx("features.examples"))
        fn = make_handler(ctx)
        button.click(fn, [image, arch, stage, n_channels, target, checkpoint, class_indices], [grid, cam, info],
                     api_name="feature_maps", preprocess=False, **ctx.quick)
        class_indices.change(make_target_update(ctx), [class_indices], [target], api_visibility="private",
                             preprocess=False, **ctx.cheap)
        ctx.copy_link("features")


def target_choices(ctx, names: list[str] | None = None, L: str | None = None) -> list:
    """"top class" first (its label translated in the browser, or in ``L`` for an update), then ``names`` (an
    uploaded class-index file's) or the ImageNet class names (torchvision's metadata, English: the names the
    network was trained with; no model needed)."""
    from ...weights import categories
    top = t("features.top_class", L) if L else ctx("features.top_class")
    return [(top, TOP_CLASS)] + (names or categories())
