"""The Fine-tune tab's pretraining section: train the chosen depth on the built-in source set, with its curves
drawn live, progress and Stop, and say where the backbone was stored (its file name only) and how well it learnt the
source task.

The Fine-tune tab calls ``build_section(ctx, arch)`` with its own architecture dropdown; the section's event is
the app's ``/pretrain`` endpoint (``arch, image_size, epochs``), a generator of (status line, curves)."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import gradio as gr

from ... import budget
from ...checks import whole
from ...i18n import t
from ...models.resnet import ARCHS
from ...train.pretrain import DEFAULTS, LIMITS, PretrainConfig, pretrain
from ...weights import WeightsUnavailable, file_stamp, find_source, read_source
from .. import sharing
from ..common import duration_text, early, friendly, lang, on_gpu
from ..progress import Steady, live, steadily, strip

UI_SIZES = (32, 128)    # the slider's range (the library allows up to LIMITS["image_size"])
UI_EPOCHS = (1, 20)


@functools.lru_cache(maxsize=16)
def _recorded(path: str, *stamp) -> dict:
    """What was stored with a source backbone (read once per file version)."""
    return read_source(path)[1]


def stored_line(arch: str, L: str) -> str:
    """The status line before any run: the arch's stored source backbone (file name, source accuracy) or none."""
    if arch not in ARCHS:
        return ""
    title = ARCHS[arch].title
    path = find_source(arch)
    if path is None:
        return t("pretrain.status_idle", L, arch=title)
    try:
        meta = _recorded(str(path), *file_stamp(path))
    except (WeightsUnavailable, OSError):
        return t("pretrain.status_idle", L, arch=title)
    return t("pretrain.status_have", L, arch=title, file=path.name, acc=float(meta.get("val_acc", 0.0)),
             size=meta.get("image_size", "?"))


def curves_figure(history: dict, cfg: PretrainConfig, L: str):
    """The source task's curves so far (validation accuracy with its standard error, losses), chance at 1 / classes."""
    from ..figures.training import training_figure
    return training_figure({"pretrain": history}, lang=L, names={"pretrain": t("pretrain.curve", L)},
                           chance=1 / cfg.num_classes, n_val=cfg.val_per_class * cfg.num_classes,
                           se_label=t("finetune.plot_se", L))


def make_config(arch, image_size, epochs) -> PretrainConfig:
    """The run's settings from the page or the API (integral floats accepted), checked against the budget."""
    size = whole(image_size, *LIMITS["image_size"], "image size")
    epochs = whole(epochs, *LIMITS["epochs"], "epochs")
    # The recipe's pictures per class, read when a request comes (a test may shrink it).
    cfg = PretrainConfig(arch=arch, image_size=size, epochs=epochs, per_class=DEFAULTS["per_class"]).validated()
    budget.admit(cfg)
    return cfg


def estimate_line(arch, image_size, epochs, L: str) -> str:
    """Before Pretrain: how long it should take on this server (``resnet.train.estimate``, timed here once per arch,
    size and device, then arithmetic), or why it would be refused."""
    from ...errors import LabError
    from ...i18n import message
    from ...train.estimate import estimate_pretrain
    try:
        cfg = make_config(arch, image_size, epochs)
    except LabError as e:
        return t("pretrain.estimate_refused", L, reason=message(e, L).splitlines()[0])
    e = estimate_pretrain(cfg)
    return t("pretrain.estimate", L, time=duration_text(e.seconds, L), arch=ARCHS[cfg.arch].title, size=cfg.image_size,
             n=e.n_train, device=e.calibration.device.split(":")[0].upper())


def check(arch, image_size, epochs, L: str) -> None:
    make_config(arch, image_size, epochs)


def start_key(arch, image_size, epochs, L: str) -> str:
    """The job key of a pretraining (``resnet.ui.sharing``): identical requests share one run."""
    return make_config(arch, image_size, epochs).key()


def producer(cfg: PretrainConfig):
    """The run itself, started once per distinct job by ``resnet.train.jobs``, in its own thread."""
    @on_gpu(duration=300)
    def events(cancel):
        yield from pretrain(cfg.arch, image_size=cfg.image_size, epochs=cfg.epochs, per_class=cfg.per_class,
                            cancel=cancel)
    return events


def make_handlers(switches: sharing.Sessions):
    @sharing.keyed(start_key)
    @friendly
    async def start(arch, image_size, epochs, request: gr.Request = None, progress=gr.Progress()):
        """Yields (status line, curves) as it trains: the curves after every epoch; the last line says where the
        backbone was stored. Progress goes to the section's strip (``resnet.ui.progress``), not over these."""
        steady = Steady(progress)
        outputs = steadily(updates(arch, image_size, epochs, request, steady), steady)
        try:
            async for out in outputs:
                yield out
        finally:
            await outputs.aclose()

    async def updates(arch, image_size, epochs, request, progress):
        L = lang(request)
        cfg = make_config(arch, image_size, epochs)
        session = getattr(request, "session_hash", None) or "anonymous"
        sub = sharing.JOBS.subscribe(cfg.key(), producer(cfg), label="pretrain")
        switches.start(session, sub)
        skip = gr.skip()
        try:
            done_steps, total = 0, None
            history = {k: [] for k in ("epoch", "train_loss", "val_loss", "val_acc")}  # the curves so far
            shared = sharing.note(sub, L)
            if shared:
                yield shared, skip
            async for ev in sub.aevents(timeout=1.0):  # awaits without holding a thread
                if ev is sharing.TICK:
                    if sub.state == "waiting":
                        yield sharing.waiting(sub, L), skip
                    continue
                if ev.kind == "epoch":
                    for key in history:
                        history[key].append(getattr(ev, key))
                if sub.behind and ev.kind not in ("done", "cancelled"):
                    continue  # catching up with a shared run: only its latest state is shown
                if ev.kind == "start":
                    yield ev.message.render(L), skip
                elif ev.kind == "prepare":
                    progress((ev.step, ev.steps), desc=ev.message.render(L), unit=t("finetune.unit_images", L))
                elif ev.kind == "step":
                    total = total or ev.steps * ev.epochs
                    done_steps += 1
                    progress((min(done_steps, total), total), desc=t("pretrain.progress", L, epoch=ev.epoch),
                             unit=t("finetune.unit_steps", L))
                    if ev.step == 1 or ev.step % 10 == 0:
                        yield t("pretrain.status_step", L, epoch=ev.epoch, epochs=ev.epochs, step=ev.step,
                                steps=ev.steps, loss=ev.train_loss), skip
                elif ev.kind == "epoch":
                    snapshot = {k: list(v) for k, v in history.items()}
                    yield (t("pretrain.status_epoch", L, epoch=ev.epoch, epochs=ev.epochs, acc=ev.val_acc),
                           await sharing.shared_plot(sub, ("curves", ev.epoch, L),
                                                     lambda: curves_figure(snapshot, cfg, L)))
                elif ev.kind == "cancelled":
                    yield t("pretrain.status_stopped", L), skip
                elif ev.kind == "done":
                    r = ev.result
                    final = {k: list(r.history.get(k, [])) for k in history}
                    yield ((shared + "\n\n" if shared else "") + t(
                        "pretrain.status_done", L, file=r.file, acc=r.val_acc, n=r.val_count, classes=len(r.classes),
                        seconds=r.seconds),
                           await sharing.shared_plot(sub, ("final", L), lambda: curves_figure(final, cfg, L))
                           if final["epoch"] else skip)
        finally:
            switches.finish(session, sub)

    def stop(request: gr.Request = None):
        switches.stop(getattr(request, "session_hash", None) or "anonymous")
        return t("pretrain.status_stopped", lang(request))

    def describe(arch, request: gr.Request = None):
        return stored_line(arch, lang(request))

    @friendly
    def estimated(arch, image_size, epochs, request: gr.Request = None):
        return estimate_line(arch, image_size, epochs, lang(request))

    return start, stop, describe, estimated


@dataclass
class Section:
    """What the Fine-tune tab may wire further: the status line and the pretraining event (e.g. ``.then`` to
    refresh its own "weights: …" line once a backbone is stored)."""

    status: gr.Markdown
    event: object
    image_size: gr.Slider
    epochs: gr.Slider
    curves: gr.Plot | None = None


def build_section(ctx, arch_component) -> Section:
    """The pretraining section (an accordion) inside the Fine-tune tab; ``arch_component``: the tab's depth."""
    start_fn, stop_fn, describe_fn, estimate_fn = make_handlers(sharing.Sessions())
    with gr.Accordion(ctx("pretrain.title"), open=False, elem_id="pt-section"):
        gr.Markdown(ctx("pretrain.explain"))
        with gr.Row():
            image_size = gr.Slider(*UI_SIZES, value=DEFAULTS["image_size"], step=16, label=ctx("pretrain.image_size"),
                                   elem_id="pt-size")
            epochs = gr.Slider(*UI_EPOCHS, value=DEFAULTS["epochs"], step=1, label=ctx("pretrain.epochs"),
                               elem_id="pt-epochs")
        estimate = gr.Markdown(elem_id="pt-estimate")  # the time it should take here
        with gr.Row():
            start = gr.Button(ctx("pretrain.button"), elem_id="pt-start")
            stop = gr.Button(ctx("pretrain.stop"), variant="stop", elem_id="pt-stop")
        status = gr.Markdown(elem_id="pt-status")
        bar = strip("pt-progress")  # the run's progress: the status line and the curves stay readable
        curves = gr.Plot(label=ctx("pretrain.curves"), elem_id="pt-curves")
    event = start.click(start_fn, [arch_component, image_size, epochs], [status, curves], api_name="pretrain",
                        validator=early(check), **ctx.train, **live(bar))
    stop.click(stop_fn, None, status, cancels=[event], api_name="stop_pretrain", concurrency_limit=None, queue=False)
    arch_component.change(describe_fn, arch_component, status, api_visibility="private", queue=False)
    ctx.on_load(describe_fn, arch_component, status)
    settings = [arch_component, image_size, epochs]
    gr.on([c.change for c in settings], estimate_fn, settings, estimate, api_name="pretrain_estimate",
          trigger_mode="always_last", **ctx.cheap)
    ctx.on_load(estimate_fn, settings, estimate)
    return Section(status, event, image_size, epochs, curves)
