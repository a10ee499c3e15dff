"""Fine-tune tab: the note's transfer strategies trained side by side, live curves, Stop, downloads.

The Start request's settings and presets: ``finetune_request``; the tab's words (names, tables, the lines around a
run): ``finetune_text``; the pretraining section: ``pretrain``."""
from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ...errors import BadSetting
from ...i18n import error, has, t
from ...models.transfer import STRATEGIES, load_export
from ...predict import classify
from ...train import estimate as estimates
from ...train import prepare
from ...train.finetune import LIMITS, FinetuneConfig, run
from .. import disk, sharing
from ..common import arch_choices, early, friendly, lang, on_gpu, payload_path
from ..progress import Steady, live, steadily, strip
from .finetune_request import (DATASETS, PER_CLASS, PRESET_KEYS, PRESETS, SETTINGS, FinetuneRequest, matching_preset,
                               on_start_inputs, preset_values)
from .finetune_text import (curves_figure, estimate_text, final_status, name, prepare_unit, results_table, run_info,
                            source_line, val_se)
from .pretrain import build_section, stored_line

# Shares of the table's width: on a phone all six columns fit the screen (style.css: .table-fits).
RESULT_WIDTHS = ["17%", "19%", "20%", "11%", "20%", "13%"]
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds")
UI_REFRESH_S = 0.5  # how often the status line may update between epochs (also how soon Stop is noticed)
PREPARE_REFRESH_S = 3.0  # how often the line before Start follows the server's own preparation of the source


class Runs(sharing.Sessions):
    """Each session's subscription to its fine-tune (``sharing.Sessions``) and its latest run's folder (a session
    keeps only its latest run's files)."""

    def __init__(self):
        super().__init__()
        self._folders: dict[str, Path] = {}

    def start(self, session: str, sub: sharing.Subscription) -> Path:
        """Leave the session's previous run and delete its files; a new folder for this one."""
        with self._lock:
            disk.remove(self._folders.pop(session, None))
            folder = self._folders[session] = disk.run_folder()
            disk.busy.add(str(folder))
        super().start(session, sub)
        disk.enforce_budget()
        return folder

    def finish(self, session: str, sub: sharing.Subscription, folder: Path) -> None:
        disk.busy.discard(str(folder))
        super().finish(session, sub)


def translate_headers(request: gr.Request = None):
    """The empty results table with its headers in the visitor's language, when the page opens (a Dataframe's
    headers are plain text: the browser does not translate them)."""
    return results_table([], lang(request))


def remove_run_dir(state) -> None:
    """Called by Gradio when a session's state expires or the tab closes: delete that run's files."""
    if isinstance(state, dict):
        disk.remove(state.get("dir"))


@on_start_inputs
def start_key(req: FinetuneRequest, L: str) -> str:
    """The job key of a Start (``resnet.ui.sharing``): identical requests share one run."""
    return req.config(L).key()


@on_start_inputs
def check_start(req: FinetuneRequest, L: str) -> None:
    """Start's validator (``common.early``): a request that ``config`` refuses never joins the queue."""
    req.config(L)


def producer(cfg: FinetuneConfig):
    """The run itself, started once per distinct job by ``resnet.train.jobs``, in its own thread."""
    @on_gpu(duration=120)
    def events(cancel):
        yield from run(cfg, cancel=cancel)
    return events


def status_only(line: str) -> tuple:
    """Start's six outputs with only the status line changed."""
    return (line, *(gr.skip() for _ in range(5)))


class RunView:
    """One visitor's view of a fine-tune as its events come (a ``sharing.Subscription``): the curves so far, the
    strategies finished, the progress strip. ``update`` turns an event into Start's six outputs, or None."""

    def __init__(self, cfg: FinetuneConfig, sub: sharing.Subscription, run_dir: Path, L: str, progress):
        self.cfg, self.sub, self.run_dir, self.L, self.progress = cfg, sub, run_dir, L, progress
        self.state = {"dir": str(run_dir), "models": {}}  # the session's files: its downloads, its models to try
        self.history: dict[str, dict[str, list]] = {}  # the curves so far, in RunResult.history's layout
        self.info: dict = {}  # classes and validation images: chance line, error bands
        self.finished = []  # the strategies done so far (StrategySummary), in the results table while the run goes on
        self.total_steps, self.done_steps, self.epochs_seen, self.last_ui = None, 0, 0, 0.0
        shared = sharing.note(sub, L)  # joined a run under way, or a replay
        self.shared = shared + "\n\n" if shared else ""
        self.over = False  # the run ended (done or cancelled), not only this visitor's watch

    def opening(self, dataset) -> tuple:
        L = self.L
        return (self.shared + t("finetune.status_start", L, dataset=t(f"finetune.dataset_{dataset}", L)),
                None, results_table([], L), None, gr.update(choices=[], value=None), self.state)

    async def update(self, ev) -> tuple | None:
        L, sub = self.L, self.sub
        if ev is sharing.TICK:
            return status_only(self.shared + sharing.waiting(sub, L)) if sub.state == "waiting" else None
        if ev.kind == "start":
            self.info.update(run_info(ev))
            return status_only(self.shared + ev.message.render(L))
        if ev.kind == "prepare" and not sub.behind:
            self.progress((ev.step, ev.steps), desc=ev.message.render(L), unit=prepare_unit(ev, L))
        elif ev.kind == "step":
            return self.step(ev)
        elif ev.kind == "epoch":
            return await self.epoch(ev)
        elif ev.kind == "strategy_done":
            if ev.summary is not None:
                self.finished.append(ev.summary)
            if not sub.behind:
                skip = gr.skip()
                return skip, skip, results_table(self.finished, L), skip, skip, skip
        elif ev.kind in ("done", "cancelled"):
            return await self.done(ev.result)
        return None

    def step(self, ev) -> tuple | None:
        L, called = self.L, name(ev.strategy, self.L) if ev.strategy else ""
        if self.total_steps is None:
            self.total_steps = ev.steps * self.cfg.epochs * len(self.cfg.strategies)
        self.done_steps += 1
        if not self.sub.behind:
            self.progress((min(self.done_steps, self.total_steps), self.total_steps),
                          desc=t("finetune.progress_step", L, strategy=called, epoch=ev.epoch),
                          unit=t("finetune.unit_steps", L))
        now = time.monotonic()
        if now - self.last_ui >= UI_REFRESH_S and not self.sub.behind:  # cheap: Stop and disconnects stay prompt
            self.last_ui = now
            return status_only(t("finetune.status_step", L, strategy=called, epoch=ev.epoch, epochs=ev.epochs,
                                 step=ev.step, steps=ev.steps, loss=ev.train_loss))
        return None

    async def epoch(self, ev) -> tuple | None:
        h = self.history.setdefault(ev.strategy, {k: [] for k in HISTORY_KEYS})
        for key in HISTORY_KEYS:
            h[key].append(getattr(ev, key))
        self.epochs_seen += 1
        if self.sub.behind:  # catching up with a shared run: draw only the latest curves
            return None
        L, info = self.L, self.info
        snapshot = {k: {c: list(v) for c, v in h.items()} for k, h in self.history.items()}
        line = self.shared + t("finetune.status_epoch", L, strategy=name(ev.strategy, L) if ev.strategy else "",
                               epoch=ev.epoch, epochs=ev.epochs, acc=ev.val_acc, se=val_se(ev.val_acc, info),
                               loss=ev.val_loss, speed=ev.images_per_s or 0)
        plot = await sharing.shared_plot(self.sub, ("curves", self.epochs_seen, L),
                                         lambda: curves_figure(snapshot, L, **info))
        return (line, plot, *(gr.skip() for _ in range(4)))

    async def done(self, result) -> tuple:
        """The run's end (shared: read it, never change it): this visitor's own files, the verdict, the models."""
        L, sub = self.L, self.sub
        self.over = True
        files = []
        for s in result.summaries:  # this visitor's own files (hard links to one written copy)
            path = await sharing.aown_copy(sub, s.strategy, self.run_dir / f"{self.cfg.arch}-{s.strategy}.pth",
                                           lambda dst, s=s: result.export(s.strategy, dst))
            self.state["models"][s.strategy] = str(path)
            files.append(str(path))
        status = final_status(result, self.cfg, L)  # the weights' source; Best or tied
        notes = "\n".join(f"- {n.render(L)}" for n in result.notes)
        choices = [(name(s, L), s) for s in self.state["models"]]  # the note's names in Chinese
        if sub.replay:
            status = t("jobs.replay", L, seconds=sub.original_seconds or 0.0) + "\n\n" + status
        plot = await sharing.shared_plot(sub, ("final", L), lambda: curves_figure(
            result.history, L, len(result.classes), self.info.get("n_val"))) if result.summaries else gr.skip()
        return (status + ("\n\n" + notes if notes else ""), plot, results_table(result.summaries, L), files or None,
                gr.update(choices=choices, value=choices[0][1] if choices else None), self.state)


async def run_updates(req: FinetuneRequest, state, request, runs: Runs, progress):
    """Start's outputs as the run goes (``RunView``); the run's files are the session's until its next Start."""
    L = lang(request)
    cfg = req.config(L)
    session = getattr(request, "session_hash", None) or "anonymous"
    remove_run_dir(state)  # the previous run's downloads
    # Identical requests share one run: this subscribes to it (or to its replay), or starts it.
    sub = sharing.JOBS.subscribe(cfg.key(), producer(cfg), label="finetune")
    run_dir = runs.start(session, sub)
    try:
        view = RunView(cfg, sub, run_dir, L, progress)
        yield view.opening(req.dataset)
        async for ev in sub.aevents(timeout=UI_REFRESH_S):  # awaits without holding a thread
            outputs = await view.update(ev)
            if outputs is not None:
                yield outputs
        if not view.over:  # this visitor pressed Stop (or started again): detached, the run may go on for others
            yield status_only(t("finetune.status_stopped", L))
    finally:
        runs.finish(session, sub, run_dir)


def start_handler(runs: Runs):
    """Start's handler for this app's runs; Gradio and ``gradio_client`` read its parameters' names."""
    @sharing.keyed(start_key)
    @friendly
    async def start(dataset, zip_file, strategies, arch, epochs, image_size, batch_size, lr, per_class, state,
                    request: gr.Request = None, progress=gr.Progress()):
        """Yields (status, curves, results, files, model choices, state) as training goes: the curves every epoch
        (the finished strategies' and the one training), the results table's rows as strategies finish. Progress
        goes to the tab's strip (``resnet.ui.progress``), never over these outputs."""
        req = FinetuneRequest(dataset, zip_file, strategies, arch, epochs, image_size, batch_size, lr, per_class)
        steady = Steady(progress)
        outputs = steadily(run_updates(req, state, request, runs, steady), steady)
        try:
            async for out in outputs:
                yield out
        finally:
            await outputs.aclose()
    return start


def stop_handler(runs: Runs):
    def stop(request: gr.Request = None):
        """Detach this session from its run: the run stops at its next step (and frees its memory) when nobody
        else is watching it."""
        runs.stop(getattr(request, "session_hash", None) or "anonymous")
        return t("finetune.status_stopped", lang(request))
    return stop


def source_handlers(allow_download: bool):
    """The line before Start on the weights' source: on a change, and while the server prepares the source."""
    def show_source(arch, strategies, request: gr.Request = None):
        return source_line(arch, strategies, allow_download, lang(request))

    def refresh_source(arch, strategies, request: gr.Request = None):
        """The line, the pretraining section's stored backbone once preparing is over, and whether to tick on."""
        L = lang(request)
        going = prepare.status().running
        stored = gr.skip() if going else stored_line(arch, L)
        return source_line(arch, strategies, allow_download, L), stored, gr.Timer(active=going)
    return show_source, refresh_source


@friendly
def show_estimate(dataset, strategies, arch, epochs, image_size, batch_size, lr, per_class,
                  request: gr.Request = None):
    req = FinetuneRequest(dataset, None, strategies, arch, epochs, image_size, batch_size, lr, per_class)
    return estimate_text(req, lang(request))


def apply_preset(preset):  # the sliders in PRESET_KEYS order; "custom" leaves them (no docstring: the API shows it)
    return preset_values(preset) if preset in PRESETS else tuple(gr.skip() for _ in range(7))


@friendly
def try_model(image, strategy, state, request: gr.Request = None):
    L = lang(request)
    path = payload_path(image, L)
    if not path:
        raise error(BadSetting, "classify.no_image")
    models = (state or {}).get("models", {})
    if strategy not in models:
        raise error(BadSetting, "finetune.no_model")
    model, _ = load_export(models[strategy])
    top = classify(model, path, top_k=min(5, len(model.categories) or 5))
    return {t(f"shape.{c}", L) if has(f"shape.{c}") else c: p for c, p in top}  # the built-in shapes translated


def settings_column(ctx) -> SimpleNamespace:
    """The left column: the preset, Start's nine settings, the lines before Start (weights, time), Start, Stop."""
    lo = {k: v[0] for k, v in LIMITS.items()}
    hi = {k: v[1] for k, v in LIMITS.items()}
    start_values = dict(zip(PRESET_KEYS, preset_values(estimates.DEFAULT_PRESET)))
    ui = SimpleNamespace()
    ui.preset = gr.Radio([(ctx(f"finetune.preset_{p}"), p) for p in (*PRESETS, "custom")],
                         value=estimates.DEFAULT_PRESET, label=ctx("finetune.preset"),
                         info=ctx("finetune.preset_info"), elem_id="ft-preset")
    ui.dataset = gr.Radio([(ctx(f"finetune.dataset_{d}"), d) for d in DATASETS], value="synthetic",
                          label=ctx("finetune.dataset"), elem_id="ft-dataset")
    ui.zip_file = gr.File(file_types=[".zip"], label=ctx("finetune.zip"), visible=False, elem_id="ft-zip")
    ui.per_class = gr.Radio([(ctx("finetune.per_class_all") if v == "all" else v, v) for v in PER_CLASS],
                            value=start_values["per_class"], label=ctx("finetune.per_class"),
                            info=ctx("finetune.per_class_info"), elem_id="ft-per-class")
    ui.strategies = gr.CheckboxGroup([(ctx(f"finetune.name_{n}"), n) for n in STRATEGIES],
                                     value=start_values["strategies"], label=ctx("finetune.strategies"),
                                     elem_id="ft-strategies")
    gr.Markdown(ctx("finetune.strategy_help"))
    ui.arch = gr.Dropdown(arch_choices(), value=start_values["arch"], label=ctx("arch.depth"), elem_id="ft-arch")
    with gr.Row():
        ui.epochs = gr.Slider(lo["epochs"], hi["epochs"], value=start_values["epochs"], step=1,
                              label=ctx("finetune.epochs"), elem_id="ft-epochs")
        ui.image_size = gr.Slider(lo["image_size"], hi["image_size"], value=start_values["image_size"],
                                  step=16, label=ctx("finetune.image_size"), elem_id="ft-size")
    with gr.Row():
        ui.batch_size = gr.Slider(lo["batch_size"], hi["batch_size"], value=start_values["batch_size"],
                                  step=1, label=ctx("finetune.batch_size"), elem_id="ft-batch")
        ui.lr = gr.Number(start_values["lr"], label=ctx("finetune.lr"), minimum=0, maximum=hi["lr"], elem_id="ft-lr")
    ui.source = gr.Markdown(elem_id="ft-source")  # the weights' source, before Start
    ui.estimate = gr.Markdown(elem_id="ft-estimate")  # the time it should take here, and runs ahead
    with gr.Row():
        ui.start = gr.Button(ctx("finetune.start"), variant="primary", elem_id="ft-start")
        ui.stop = gr.Button(ctx("finetune.stop"), variant="stop", elem_id="ft-stop")
    return ui


def results_column(ctx) -> SimpleNamespace:
    """The right column: the status line, the progress strip, the curves, the results table, the downloads."""
    out = SimpleNamespace()
    out.status = gr.Markdown(elem_id="ft-status")
    out.bar = strip("ft-progress")  # the run's progress: nothing covers the curves or the results
    out.curves = gr.Plot(label=ctx("finetune.curves"), elem_id="ft-curves")
    out.results = gr.Dataframe(label=ctx("finetune.results"), interactive=False,  # headers: on load
                               elem_id="ft-results", wrap=True, column_widths=RESULT_WIDTHS,
                               elem_classes=["table-fits"])
    ctx.on_load(translate_headers, None, out.results)
    out.files = gr.File(label=ctx("finetune.downloads"), file_count="multiple", interactive=False,
                        elem_id="ft-files")
    return out


def try_section(ctx) -> SimpleNamespace:
    """Try a fine-tuned model on a picture: the image, the model's choice, the button, the top classes."""
    trying = SimpleNamespace()
    with gr.Group():
        gr.Markdown(ctx("finetune.try_title"))
        with gr.Row():
            trying.image = gr.Image(type="filepath", label=ctx("finetune.try_image"), height=220,
                                    elem_id="ft-try-image")
            with gr.Column():
                trying.model = gr.Dropdown([], label=ctx("finetune.try_model"), elem_id="ft-try-model")
                trying.button = gr.Button(ctx("finetune.try_run"), elem_id="ft-try-run")
            trying.label = gr.Label(num_top_classes=5, label=ctx("finetune.try_label"), elem_id="ft-try-label")
    return trying


def build(ctx) -> None:
    with gr.Tab(ctx("tab.finetune"), id="finetune"):
        gr.Markdown(ctx("finetune.intro"))
        state = gr.State(None, time_to_live=3600, delete_callback=remove_run_dir)
        with gr.Row():
            with gr.Column(scale=1):
                ui = settings_column(ctx)
            with gr.Column(scale=2):
                out = results_column(ctx)
        pretraining = build_section(ctx, ui.arch)  # the built-in source's section: its own button, Stop, curves
        trying = try_section(ctx)
        ctx.copy_link("finetune")
        wire_presets(ui)
        wire_lines_before_start(ctx, ui, pretraining)
        wire_start(ctx, Runs(), ui, out, trying, state)


def wire_presets(ui) -> None:
    """A preset sets the sliders; a slider moved by hand makes the preset "custom" (or the one it now matches)."""
    ui.dataset.change(lambda d: gr.update(visible=d == "upload"), ui.dataset, ui.zip_file, api_visibility="private",
                      queue=False)
    settings = [getattr(ui, k) for k in PRESET_KEYS]
    ui.preset.input(apply_preset, ui.preset, settings, api_name="finetune_preset", queue=False)
    gr.on([c.change for c in settings], matching_preset, settings, ui.preset, api_visibility="private",
          queue=False)


def wire_lines_before_start(ctx, ui, pretraining) -> None:
    """Before Start: where the weights come from, and how long the run should take here. While the server finds
    out whether ImageNet weights can be had, or prepares the built-in source by itself (``resnet.train.prepare``),
    the weights' line says how far it is, every few seconds; once it is over, the line says what runs start from
    now, the pretraining section what is stored, and the timer stops."""
    show_source, refresh_source = source_handlers(ctx.settings.allow_download)
    source_inputs = [ui.arch, ui.strategies]
    estimate_inputs = [getattr(ui, n) for n in SETTINGS if n != "zip_file"]
    ctx.on_load(show_source, source_inputs, ui.source)
    ctx.on_load(show_estimate, estimate_inputs, ui.estimate)
    gr.on([ui.arch.change, ui.strategies.change], show_source, source_inputs, ui.source, api_name="finetune_source",
          **ctx.cheap)
    # A backbone just stored changes what the pretrained strategies start from.
    pretraining.event.then(show_source, source_inputs, ui.source, api_visibility="private", **ctx.cheap)
    preparing = gr.Timer(PREPARE_REFRESH_S, active=prepare.status().running)
    preparing.tick(refresh_source, source_inputs, [ui.source, pretraining.status, preparing],
                   api_visibility="private", show_progress="hidden", **ctx.cheap)
    gr.on([c.change for c in estimate_inputs], show_estimate, estimate_inputs, ui.estimate,
          api_name="finetune_estimate", trigger_mode="always_last", **ctx.cheap)


def wire_start(ctx, runs: Runs, ui, out, trying, state) -> None:
    """Start, Stop, and trying a model; after a run, the estimate again (a replay is now instant)."""
    estimate_inputs = [getattr(ui, n) for n in SETTINGS if n != "zip_file"]
    run_event = ui.start.click(start_handler(runs), [getattr(ui, n) for n in SETTINGS] + [state],
                               [out.status, out.curves, out.results, out.files, trying.model, state],
                               api_name="finetune", preprocess=False, validator=early(check_start), **ctx.train,
                               **live(out.bar))
    run_event.then(show_estimate, estimate_inputs, ui.estimate, api_visibility="private", **ctx.cheap)
    # The switch stops the training thread; ``cancels`` ends the event in the page (or drops it from the queue).
    ui.stop.click(stop_handler(runs), None, out.status, cancels=[run_event], api_name="stop_finetune",
                  concurrency_limit=None, queue=False)
    trying.button.click(try_model, [trying.image, trying.model, state], trying.label, api_name="try_finetuned",
                        preprocess=False, **ctx.quick)
