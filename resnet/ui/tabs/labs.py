"""Labs tab: the note's highlights as experiments to run in class, one section each.

Every lab handler is ``sharing.shared``: identical requests (same inputs and language) share one run of it, and a
finished one is replayed (``resnet.train.jobs``); the training-type labs take one of the training slots.

Callbacks only translate between widgets and ``resnet.analysis.labs``; the figures come from ``resnet.ui.figures.labs``.
"""
from __future__ import annotations

import math

import gradio as gr

from ... import budget
from ...analysis import labs
from ...checks import whole
from ...models.resnet import build_model
from ..figures import labs as plots
from ...errors import BadSetting
from ...i18n import error, t
from ...predict import model_categories
from .. import sharing
from ..common import early, example_photos, explained, friendly, lang, payload_path
from ..progress import live, strip
from .labs_text import (sci, batch_text, bias_text, bn_run_text, compare_text, deep_reading,  # noqa: F401
                        flow_reading, race_reading, steps_text, train_eval_text)

FLOW_NETS = ("cifar20", "cifar56", "cifar110", "resnet18", "resnet34")  # labels: labs.net.<name>
BN_LAYERS = ["bn1", "layer1.0.bn1", "layer2.0.bn1", "layer3.0.bn1", "layer4.0.bn1"]
BN_CHANNELS = {name: m.num_features for name, m in build_model("resnet18", device="meta").named_modules()
               if name in BN_LAYERS}  # 64, 64, 128, 256, 512
DEFAULTS = dict(flow_batch=32, race_steps=120, race_batch=16, race_lr=0.05, deep_batch=2, bn_pool=64, bn_train_steps=80,
                cin=128, cout=128, groups=32, size=28)
LIMITS = dict(race_steps=(10, 600), bn_pool=(8, 128), deep_batch=(2, 4), race_lr=(0.001, 1.0), bn_train_steps=(16, 240))


# ---- Lab 1: gradient flow and the race ------------------------------------------------------------

# Each lab's ``*_args`` turns the page's (or a stranger's) values into the library's, with a sentence for what
# is wrong; its validator also runs the lab's budget check, before the job waits in the queue.

def flow_args(nets, settings, batch_size, L: str) -> tuple[tuple, tuple, int]:
    if not isinstance(nets, list) or not isinstance(settings, list) or not nets or not settings:
        raise error(BadSetting, "labs.flow.choose")
    return tuple(nets), tuple(settings), batch_size if batch_size is not None else DEFAULTS["flow_batch"]


def check_flow(nets, settings, batch_size, L: str) -> None:
    nets, settings, batch = flow_args(nets, settings, batch_size, L)
    budget.admit(labs.GradientFlowJob(nets, settings, batch))


@sharing.shared("gradient_flow")
@friendly
def run_gradient_flow(nets: list[str], settings: list[str], batch_size: float, request: gr.Request = None):
    L = lang(request)
    nets, settings, batch = flow_args(nets, settings, batch_size, L)
    profiles = labs.gradient_flow(nets, settings, batch_size=batch)
    lines = []
    for setting in dict.fromkeys(p.setting for p in profiles):
        lines.append(f"\n**{t(f'labs.setting.{setting}', L)}**\n")  # its own paragraph, not the last bullet's tail
        for name in dict.fromkeys(p.net for p in profiles):
            by = {p.residual: p for p in profiles if p.net == name and p.setting == setting}
            ratio = labs.gradient_ratio(profiles, name, setting)
            lines.append("- " + t("labs.flow.line", L, res=by[True].title, plain=plots.net_name(by[False].title, L),
                                  res_first=sci(by[True].first), plain_first=sci(by[False].first),
                                  ratio=sci(ratio)))
    lines.append("\n" + "\n\n".join(flow_reading(profiles, L)))
    return plots.gradient_flow_figure(profiles, L), "\n".join(lines)


def race_args(steps, batch_size, lr, L: str) -> tuple[int, int, float]:
    lo, hi = LIMITS["race_steps"]
    steps = whole(steps if steps is not None else DEFAULTS["race_steps"], 1, 10**6, "number of steps")
    if not lo <= steps <= hi:
        raise error(BadSetting, "labs.race.steps_range", lo=lo, hi=hi)
    batch = whole(batch_size if batch_size is not None else DEFAULTS["race_batch"], 1, 10**6, "batch size")
    lr = lr if lr is not None else DEFAULTS["race_lr"]
    lo, hi = LIMITS["race_lr"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lo <= lr <= hi:  # NaN fails the comparison
        raise error(BadSetting, "labs.race.lr_range", lo=lo, hi=hi)
    return steps, batch, float(lr)


def check_race(steps, batch_size, lr, L: str) -> None:
    steps, batch, lr = race_args(steps, batch_size, lr, L)
    budget.admit(labs.RaceJob(steps, batch, lr))


@sharing.shared("training_race", limited=True, outputs=2)
@friendly
def run_race(steps: float, batch_size: float, lr: float, request: gr.Request = None):
    """A generator: the loss-curve figure after every few steps, then a one-line verdict."""
    L = lang(request)
    steps, batch, lr = race_args(steps, batch_size, lr, L)
    every = max(5, steps // 20)
    for update in labs.training_race(steps, batch_size=batch, lr=lr, every=every):
        text = t("labs.race.progress", L, step=update.step, steps=update.steps, seconds=update.seconds)
        if update.done:
            final = update.final()
            text = t("labs.race.done", L, seconds=update.seconds) + "\n\n" + " · ".join(
                f"{plots.net_name(name, L)}: **{sci(v)}**" for name, v in final.items())
            text += "\n\n" + race_reading(update, L)
        yield plots.race_figure(update, L), text


# ---- Lab 2: over 1000 layers --------------------------------------------------------------------

def deep_args(batch_size, setting, L: str) -> tuple[int, str]:
    lo, hi = LIMITS["deep_batch"]
    b = whole(batch_size if batch_size is not None else DEFAULTS["deep_batch"], 1, 10**6, "batch size")
    if not lo <= b <= hi:
        raise error(BadSetting, "labs.deep.batch_range", lo=lo, hi=hi)
    return b, setting or "bn"


def check_deep(batch_size, setting, L: str) -> None:
    b, setting = deep_args(batch_size, setting, L)
    budget.admit(labs.DeepNetworkJob("cifar1202", b, 32, setting))


@sharing.shared("deep_network", limited=True, outputs=2)
@friendly
def run_deep(batch_size: float, setting: str, request: gr.Request = None):
    """A generator: the residual net's curve as soon as it is measured, then both nets' and the verdict."""
    L = lang(request)
    b, setting = deep_args(batch_size, setting, L)
    for r in labs.deep_network_steps("cifar1202", batch_size=b, setting=setting):
        if r.plain is None:
            yield plots.deep_figure(r, L), t("labs.deep.progress", L, title=plots.net_name(r.residual.title, L),
                                             seconds=r.residual.seconds)
            continue
        text = t("labs.deep.result", L, depth=r.depth, params=r.residual.params / 1e6, seconds=r.residual.seconds,
                 res_first=sci(r.residual.first), res_ok=100 * labs.first_finite_fraction(r.residual),
                 plain_params=r.plain.params / 1e6, plain_seconds=r.plain.seconds, plain_first=sci(r.plain.first),
                 plain_ok=100 * labs.first_finite_fraction(r.plain), setting=t(f"labs.setting.{setting or 'bn'}", L))
        reading = deep_reading(r, L)
        yield plots.deep_figure(r, L), text + ("\n\n" + reading if reading else "")


# ---- Lab 3: BatchNorm ---------------------------------------------------------------------------

def bn_args(image, layer, channel, pool_size, L: str) -> tuple[str, str, int, int]:
    path = payload_path(image, L)
    if not path:
        raise error(BadSetting, "labs.bn.no_image")
    if layer not in BN_LAYERS:
        raise error(BadSetting, "labs.bn.bad_layer", layer=layer)
    lo, hi = LIMITS["bn_pool"]
    n = whole(pool_size if pool_size is not None else DEFAULTS["bn_pool"], 1, 10**6, "pool size")
    if not lo <= n <= hi:
        raise error(BadSetting, "labs.bn.pool_range", lo=lo, hi=hi)
    channel = bn_channel(layer, channel)
    budget.admit(labs.BNPoolJob((path, *example_photos()), n, labs.BN_IMAGE_SIZE))  # before the upload is decoded
    return path, layer, channel, n


def check_bn(image, layer, channel, pool_size, L: str) -> None:
    bn_args(image, layer, channel, pool_size, L)


def make_bn_lab(ctx):
    @sharing.shared("bn_lab", extra=lambda: {"weights": sharing.model_weights("resnet18")})
    @friendly
    def run_bn_lab(image, layer: str, channel: float, pool_size: float, request: gr.Request = None):
        L = lang(request)
        path, layer, channel, n = bn_args(image, layer, channel, pool_size, L)
        entry = ctx.models.get("resnet18")
        model = labs.lab_copy(entry.model)  # never touch the shared model's mode or statistics
        x = labs.image_tensor(path)
        pool = labs.image_pool([path, *example_photos()], n)
        illustrative = labs.illustrate_affine(model)
        gathered = labs.ensure_statistics(model, pool)
        # 1. Algorithm 1 on this image's feature map.
        features, bn = labs.bn_input(model, x, layer)
        steps = labs.bn_steps(features, bn, channel)
        # 2. Train vs eval mode.
        te = labs.train_vs_eval(model, x, pool, model_categories(entry.model))
        # 3. Batch statistics against the whole pool's.
        pool_features, _ = labs.bn_input(model, pool, layer)
        stats = labs.batch_statistics(pool_features, [s for s in labs.BATCH_SIZES if s <= n])
        # 4. A conv bias before BN.
        bias = labs.bias_cancellation(x=pool[:8])
        return (plots.bn_steps_figure(steps, L), steps_text(steps, layer, illustrative, L),
                plots.train_eval_figure(te, L), train_eval_text(te, entry.pretrained, gathered, L),
                plots.batch_stats_figure(stats, L), batch_text(stats, L) + "\n\n" + bias_text(bias, L))
    return run_bn_lab


def bn_channel(layer: str, channel) -> int:
    """The channel as a whole number that ``layer`` has (0 … 63 for ``bn1``, … 511 for ``layer4.0.bn1``), else a
    sentence that says the layer's range."""
    channel = whole(channel if channel is not None else 0, 0, 10**6, "channel")
    if channel >= BN_CHANNELS[layer]:
        raise error(BadSetting, "labs.bn.channel_range", layer=layer, n=BN_CHANNELS[layer], hi=BN_CHANNELS[layer] - 1)
    return channel


def channel_slider(layer: str, channel: float):
    """The channel slider reaches the chosen layer's last channel (63 for ``bn1`` … 511 for ``layer4.0.bn1``)."""
    hi = BN_CHANNELS.get(layer, BN_CHANNELS["bn1"]) - 1
    value = channel if isinstance(channel, (int, float)) and math.isfinite(channel) else 0
    return gr.Slider(maximum=hi, value=min(max(int(value), 0), hi))


def bn_train_args(steps, L: str) -> int:
    lo, hi = LIMITS["bn_train_steps"]
    steps = whole(steps if steps is not None else DEFAULTS["bn_train_steps"], 1, 10**6, "number of steps")
    if not lo <= steps <= hi:
        raise error(BadSetting, "labs.race.steps_range", lo=lo, hi=hi)
    return steps


def check_bn_training(bn_train_steps, L: str) -> None:
    budget.admit(labs.BNBatchRunJob(bn_train_args(bn_train_steps, L)))


@sharing.shared("bn_batch_run", limited=True, outputs=2)
@friendly
def run_bn_training(bn_train_steps: float, request: gr.Request = None):
    """A generator: BN statistics from 2 images vs from 32, trained side by side; the figure every few steps."""
    L = lang(request)
    steps = bn_train_args(bn_train_steps, L)
    for update in labs.bn_batch_run(steps, every=max(4, steps // 10)):
        text = (bn_run_text(update, L) if update.done else
                t("labs.race.progress", L, step=update.step, steps=update.steps, seconds=update.seconds))
        yield plots.bn_run_figure(update, labs.BN_RUN_BATCH, L), text


# ---- Lab 4: group convolution -------------------------------------------------------------------

def group_args(cin, cout, groups, size) -> tuple[int, int, int, int]:
    """The four numbers as whole numbers in range, the groups dividing both channel counts (else a sentence)."""
    names = ("cin", "cout", "groups", "size")
    job = labs.GroupConvJob(*(DEFAULTS[k] if v is None else v for k, v in zip(names, (cin, cout, groups, size))))
    job = job.validated()
    return job.cin, job.cout, job.groups, job.size


def check_group(cin, cout, groups, size, L: str) -> None:
    group_args(cin, cout, groups, size)


@sharing.shared("group_conv")
@friendly
def run_group_conv(cin: float, cout: float, groups: float, size: float, request: gr.Request = None):
    L = lang(request)
    costs = labs.conv_costs(*group_args(cin, cout, groups, size))
    blocks = [labs.block_cost(arch) for arch in labs.BLOCK_PAIR]
    normal, grouped, depthwise = costs
    lines = [t("labs.group.result", L, groups=grouped.groups, params=grouped.params, macs=grouped.macs,
               n_params=normal.params, n_macs=normal.macs, d_params=depthwise.params, d_macs=depthwise.macs,
               d_out=depthwise.cout, saving=normal.macs / max(grouped.macs, 1))]
    lines.append(compare_text(costs, L))
    r, x = blocks
    lines.append(t("labs.group.blocks", L, r_title=r.title, r_params=r.model_params / 1e6, r_macs=r.model_macs / 1e9,
                   x_title=x.title, x_params=x.model_params / 1e6, x_macs=x.model_macs / 1e9,
                   r_block=r.block_params, x_block=x.block_params))
    return plots.conv_cost_figure(costs, L), plots.group_block_figure(blocks, grouped, L), "\n\n".join(lines)


# ---- Layout -------------------------------------------------------------------------------------

def flow_section(ctx) -> None:
    """The gradient-flow lab and the training race: why depth needs shortcuts and normalisation."""
    with gr.Accordion(ctx("labs.flow.title"), open=True, elem_id="labs-flow"):
        explained(ctx, "labs.flow.explain")
        with gr.Row():
            nets = gr.CheckboxGroup([(ctx(f"labs.net.{k}"), k) for k in FLOW_NETS], value=["cifar20", "cifar56"],
                                    label=ctx("labs.flow.nets"))
            settings = gr.CheckboxGroup([(ctx(f"labs.setting.{k}"), k) for k in labs.SETTINGS],
                                        value=["none", "bn"], label=ctx("labs.flow.settings"))
            batch = gr.Slider(4, 64, DEFAULTS["flow_batch"], step=4, label=ctx("labs.batch_size"))
        flow_button = gr.Button(ctx("labs.flow.run"), variant="primary", elem_id="labs-flow-button")
        flow_plot = gr.Plot(label=ctx("labs.flow.plot"), elem_id="labs-flow-plot")
        flow_text = gr.Markdown(elem_id="labs-flow-text")
        gr.Markdown(ctx("labs.flow.note_vs_lab"), elem_id="labs-flow-note")
        flow_button.click(run_gradient_flow, [nets, settings, batch], [flow_plot, flow_text],
                          api_name="gradient_flow", preprocess=False, validator=early(check_flow),
                          **ctx.quick)

        explained(ctx, "labs.race.explain")
        with gr.Row():
            steps = gr.Slider(*LIMITS["race_steps"], DEFAULTS["race_steps"], step=10, label=ctx("labs.race.steps"),
                              elem_id="labs-race-steps")
            race_batch = gr.Slider(8, 64, DEFAULTS["race_batch"], step=8, label=ctx("labs.batch_size"))
            lr = gr.Number(DEFAULTS["race_lr"], label=ctx("labs.race.lr"), minimum=0.001, maximum=1)
        with gr.Row():
            race_button = gr.Button(ctx("labs.race.run"), variant="primary", elem_id="labs-race-button")
            race_stop = gr.Button(ctx("labs.race.stop"), variant="stop", elem_id="labs-race-stop")
        race_bar = strip("labs-race-progress", bar=False)  # its curves stay in view as they grow
        race_plot = gr.Plot(label=ctx("labs.race.plot"), elem_id="labs-race-plot")
        race_text = gr.Markdown(elem_id="labs-race-text")
        race_button.click(run_race, [steps, race_batch, lr], [race_plot, race_text], api_name="training_race",
                          preprocess=False, validator=early(check_race), **ctx.train, **live(race_bar))
        race_stop.click(sharing.stopper("training_race"), None, None, api_visibility="private", **ctx.cheap)


def deep_section(ctx) -> None:
    """The deep-network lab: a plain and a residual net of the same depth, trained side by side."""
    with gr.Accordion(ctx("labs.deep.title"), open=False, elem_id="labs-deep"):
        explained(ctx, "labs.deep.explain")
        with gr.Row():
            deep_batch = gr.Slider(*LIMITS["deep_batch"], DEFAULTS["deep_batch"], step=1,
                                   label=ctx("labs.batch_size"))
            deep_setting = gr.Radio([(ctx(f"labs.setting.{k}"), k) for k in labs.SETTINGS], value="bn",
                                    label=ctx("labs.flow.settings"))
        deep_button = gr.Button(ctx("labs.deep.run"), variant="primary", elem_id="labs-deep-button")
        deep_bar = strip("labs-deep-progress", bar=False)
        deep_plot = gr.Plot(label=ctx("labs.deep.plot"), elem_id="labs-deep-plot")
        deep_text = gr.Markdown(elem_id="labs-deep-text")
        deep_button.click(run_deep, [deep_batch, deep_setting], [deep_plot, deep_text], api_name="deep_network",
                          preprocess=False, validator=early(check_deep), **ctx.train, **live(deep_bar))


def bn_section(ctx) -> None:
    """The batch-norm lab: one channel's statistics step by step, train vs eval, batch size; and its training run."""
    with gr.Accordion(ctx("labs.bn.title"), open=False, elem_id="labs-bn"):
        explained(ctx, "labs.bn.explain")
        with gr.Row():
            image = gr.Image(value=example_photos()[0], type="filepath", sources=["upload", "clipboard"],
                             label=ctx("labs.bn.image"), height=240)
            with gr.Column():
                layer = gr.Dropdown(BN_LAYERS, value="bn1", label=ctx("labs.bn.layer"))
                channel = gr.Slider(0, BN_CHANNELS["bn1"] - 1, 0, step=1, label=ctx("labs.bn.channel"))
                pool = gr.Slider(*LIMITS["bn_pool"], DEFAULTS["bn_pool"], step=8, label=ctx("labs.bn.pool"))
                bn_button = gr.Button(ctx("labs.bn.run"), variant="primary", elem_id="labs-bn-button")
        bn_steps_plot = gr.Plot(label=ctx("labs.bn.steps_plot"))
        bn_steps_text = gr.Markdown(elem_id="labs-bn-steps")
        with gr.Row():
            te_plot = gr.Plot(label=ctx("labs.bn.train_eval_plot"))
            te_text = gr.Markdown(elem_id="labs-bn-train-eval")
        with gr.Row():
            stats_plot = gr.Plot(label=ctx("labs.bn.batch_plot"))
            stats_text = gr.Markdown(elem_id="labs-bn-batch")
        bn_button.click(make_bn_lab(ctx), [image, layer, channel, pool],
                        [bn_steps_plot, bn_steps_text, te_plot, te_text, stats_plot, stats_text],
                        api_name="bn_lab", preprocess=False,
                        validator=early(check_bn), **ctx.quick)
        layer.change(channel_slider, [layer, channel], [channel], api_visibility="private", **ctx.cheap)

        explained(ctx, "labs.bn.run_explain")
        with gr.Row():
            bn_train_steps = gr.Slider(*LIMITS["bn_train_steps"], DEFAULTS["bn_train_steps"], step=8,
                                       label=ctx("labs.race.steps"))
            bn_train_button = gr.Button(ctx("labs.bn.run_train"), variant="primary",
                                        elem_id="labs-bn-train-button")
            bn_train_stop = gr.Button(ctx("labs.race.stop"), variant="stop")
        bn_train_bar = strip("labs-bn-train-progress", bar=False)
        bn_train_plot = gr.Plot(label=ctx("labs.bn.run_plot"), elem_id="labs-bn-train-plot")
        bn_train_text = gr.Markdown(elem_id="labs-bn-train-text")
        bn_train_button.click(run_bn_training, [bn_train_steps], [bn_train_plot, bn_train_text],
                              api_name="bn_batch_run", preprocess=False, validator=early(check_bn_training),
                              **ctx.train, **live(bn_train_bar))
        bn_train_stop.click(sharing.stopper("bn_batch_run"), None, None, api_visibility="private", **ctx.cheap)


def group_section(ctx) -> None:
    """The grouped-convolution lab: the cost of a convolution by groups, and a ResNeXt block drawn."""
    with gr.Accordion(ctx("labs.group.title"), open=False, elem_id="labs-group"):
        explained(ctx, "labs.group.explain")
        with gr.Row():
            cin = gr.Number(DEFAULTS["cin"], label=ctx("labs.group.cin"), precision=0, minimum=1, maximum=4096)
            cout = gr.Number(DEFAULTS["cout"], label=ctx("labs.group.cout"), precision=0, minimum=1, maximum=4096)
            groups = gr.Number(DEFAULTS["groups"], label=ctx("labs.group.groups"), precision=0, minimum=1)
            size = gr.Number(DEFAULTS["size"], label=ctx("labs.group.size"), precision=0, minimum=1, maximum=512)
        group_button = gr.Button(ctx("labs.group.run"), variant="primary", elem_id="labs-group-button")
        with gr.Row():
            cost_plot = gr.Plot(label=ctx("labs.group.cost_plot"))
            group_text = gr.Markdown(elem_id="labs-group-text")
        block_plot = gr.Plot(label=ctx("labs.group.block_plot"))
        group_button.click(run_group_conv, [cin, cout, groups, size], [cost_plot, block_plot, group_text],
                           api_name="group_conv", validator=early(check_group), **ctx.quick)


def build(ctx) -> None:
    with gr.Tab(ctx("tab.labs"), id="labs"):
        gr.Markdown(ctx("labs.intro"))

        flow_section(ctx)
        deep_section(ctx)
        bn_section(ctx)
        group_section(ctx)
        ctx.copy_link("labs")
