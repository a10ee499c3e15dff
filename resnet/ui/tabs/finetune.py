"""Fine-tune tab: the note's transfer strategies trained side by side, live curves, Stop, downloads."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import gradio as gr

from ... import budget
from ...errors import BadSetting
from ...train.finetune import LIMITS, FinetuneConfig, run
from ...i18n import Text, error, t
from ..figures.training import training_figure
from ...predict import classify
from ...models.transfer import STRATEGIES, load_export
from .. import disk, sharing
from ..common import arch_choices, early, friendly, lang, on_gpu, payload_path

DATASETS = ("synthetic", "hymenoptera", "upload")  # labels: finetune.dataset_<name>
DEFAULT_STRATEGIES = ["all", "last", "head"]
RESULT_COLUMNS = ("strategy", "pretrained", "trainable", "seconds", "best", "final")  # headers: finetune.col_<name>
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds")
UI_REFRESH_S = 0.5  # how often the status line may update between epochs (also how soon Stop is noticed)


class Runs:
    """Each session's subscription to its fine-tune (``resnet.train.jobs``: Stop detaches only that session; the run
    goes on for anyone else watching it and stops when its last watcher leaves) and its latest run's folder (a
    session keeps only its latest run's files)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._subs: dict[str, sharing.Subscription] = {}
        self._folders: dict[str, Path] = {}

    def start(self, session: str, sub: sharing.Subscription) -> Path:
        """Leave the session's previous run and delete its files; a new folder for this one."""
        with self._lock:
            old = self._subs.get(session)
            disk.remove(self._folders.pop(session, None))
            self._subs[session] = sub
            folder = self._folders[session] = disk.run_folder()
            disk.busy.add(str(folder))
        if old is not None and old is not sub:
            old.close()  # one run per session: a new Start leaves the previous one
        disk.enforce_budget()
        return folder

    def stop(self, session: str) -> bool:
        with self._lock:
            sub = self._subs.pop(session, None)
        if sub is not None:
            sub.close()
        return sub is not None

    def finish(self, session: str, sub: sharing.Subscription, folder: Path) -> None:
        with self._lock:
            if self._subs.get(session) is sub:
                del self._subs[session]
            disk.busy.discard(str(folder))
        sub.close()


def name(strategy: str, L: str) -> str:
    """A strategy as the page names it: its code in English, the note's words in Chinese."""
    return t(f"finetune.name_{strategy}", L)


def curves_figure(history: dict, L: str, num_classes: int | None = None):
    names = {s: name(s, L) for s in STRATEGIES}
    return training_figure(history, lang=L, names=names, chance=1 / num_classes if num_classes else None)


def headers(L: str) -> list[str]:
    return [t(f"finetune.col_{c}", L) for c in RESULT_COLUMNS]


def translate_headers(request: gr.Request = None):
    """The empty results table with its headers in the visitor's language, when the page opens (a Dataframe's
    headers are plain text: the browser does not translate them)."""
    return results_table([], lang(request))


def results_table(summaries, L: str) -> dict:
    yes, no = t("finetune.pretrained_yes", L), t("finetune.pretrained_no", L)
    rows = [[name(s.strategy, L), yes if s.pretrained else no, f"{s.trainable_params:,}", f"{s.seconds:.1f}",
             f"{s.best_val_acc:.1%}", f"{s.final_val_acc:.1%}"] for s in summaries]
    return {"headers": headers(L), "data": rows}


def remove_run_dir(state) -> None:
    """Called by Gradio when a session's state expires or the tab closes: delete that run's files."""
    if isinstance(state, dict):
        disk.remove(state.get("dir"))


def to_int(value, name: str) -> int:
    """A whole number from a UI or API value; limits are checked by ``FinetuneConfig.validated``."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise error(BadSetting, "finetune.not_number", name=Text(f"engine.setting_{name}"), value=repr(value)) \
            from None
    if f != f or f in (float("inf"), float("-inf")) or f != int(f):
        raise error(BadSetting, "finetune.not_whole", name=Text(f"engine.setting_{name}"), value=repr(value))
    return int(f)


def make_config(dataset, zip_file, strategies, arch, epochs, image_size, batch_size, lr, L: str) -> FinetuneConfig:
    if dataset not in DATASETS:
        raise error(BadSetting, "finetune.bad_dataset", value=repr(dataset))
    if dataset == "upload":
        path = payload_path(zip_file, L)
        if not path:
            raise error(BadSetting, "finetune.no_zip")
        dataset = path
    if not strategies:
        raise error(BadSetting, "finetune.no_strategy")
    try:
        lr = float(lr) if lr not in (None, "") else 0.0
    except (TypeError, ValueError):
        raise error(BadSetting, "finetune.not_number", name=Text("engine.setting_lr"), value=repr(lr)) from None
    if not isinstance(strategies, (list, tuple)) or len(strategies) > len(STRATEGIES) * 2:
        raise error(BadSetting, "engine.no_strategy", choices=", ".join(STRATEGIES))
    cfg = FinetuneConfig(dataset=dataset, arch=arch, strategies=tuple(strategies), epochs=to_int(epochs, "epochs"),
                         image_size=to_int(image_size, "image_size"), batch_size=to_int(batch_size, "batch_size"),
                         lr=None if lr == 0 else lr)
    cfg = cfg.validated()  # duplicated strategies collapse to one run each
    budget.check_finetune(cfg)  # memory and work, before any data or weights are loaded
    return cfg


def check_start(dataset, zip_file, strategies, arch, epochs, image_size, batch_size, lr, state, L: str) -> None:
    make_config(dataset, zip_file, strategies, arch, epochs, image_size, batch_size, lr, L)


def start_key(dataset, zip_file, strategies, arch, epochs, image_size, batch_size, lr, state, L: str) -> str:
    """The job key of a Start (``resnet.ui.sharing``): identical requests share one run."""
    return sharing.finetune_key(make_config(dataset, zip_file, strategies, arch, epochs, image_size, batch_size, lr, L))


def producer(cfg: FinetuneConfig):
    """The run itself, started once per distinct job by ``resnet.train.jobs``, in its own thread."""
    @on_gpu(duration=120)
    def events(cancel):
        yield from run(cfg, cancel=cancel)
    return events


def make_handlers(ctx, runs: Runs):
    @sharing.keyed(start_key)
    @friendly
    async def start(dataset, zip_file, strategies, arch, epochs, image_size, batch_size, lr, state,
              request: gr.Request = None, progress=gr.Progress()):
        """Yields (status, curves, results, files, model choices, state) as training goes."""
        L = lang(request)
        cfg = make_config(dataset, zip_file, strategies, arch, epochs, image_size, batch_size, lr, L)
        session = getattr(request, "session_hash", None) or "anonymous"
        remove_run_dir(state)  # the previous run's downloads
        # Identical requests share one run: this subscribes to it (or to its replay), or starts it.
        sub = sharing.JOBS.subscribe(sharing.finetune_key(cfg), producer(cfg), label="finetune")
        run_dir = runs.start(session, sub)
        state = {"dir": str(run_dir), "models": {}}
        history: dict[str, dict[str, list]] = {}  # the curves so far, in RunResult.history's layout
        total_steps, done_steps = None, 0
        last_ui = 0.0
        skip = gr.skip()
        shared = sharing.note(sub, L)  # joined a run under way, or a replay
        shared = shared + "\n\n" if shared else ""
        over = False
        try:
            yield (shared + t("finetune.status_start", L, dataset=t(f"finetune.dataset_{dataset}", L)),
                   None, results_table([], L), None, gr.update(choices=[], value=None), state)
            epochs_seen = 0
            async for ev in sub.aevents(timeout=UI_REFRESH_S):  # awaits without holding a thread
                if ev is sharing.TICK:
                    if sub.state == "waiting":
                        yield shared + sharing.waiting(sub, L), skip, skip, skip, skip, skip
                    continue
                called = name(ev.strategy, L) if ev.strategy else ""
                if ev.kind == "start":
                    yield shared + ev.message.render(L), skip, skip, skip, skip, skip
                elif ev.kind == "prepare" and not sub.behind:
                    progress((ev.step, ev.steps), desc=ev.message.render(L))
                elif ev.kind == "step":
                    if total_steps is None:
                        total_steps = ev.steps * cfg.epochs * len(cfg.strategies)
                    done_steps += 1
                    if not sub.behind:
                        progress((min(done_steps, total_steps), total_steps),
                                 desc=t("finetune.progress_step", L, strategy=called, epoch=ev.epoch))
                    now = time.monotonic()
                    if now - last_ui >= UI_REFRESH_S and not sub.behind:  # cheap: Stop and disconnects stay prompt
                        last_ui = now
                        yield (t("finetune.status_step", L, strategy=called, epoch=ev.epoch, epochs=ev.epochs,
                                 step=ev.step, steps=ev.steps, loss=ev.train_loss), skip, skip, skip, skip, skip)
                elif ev.kind == "epoch":
                    h = history.setdefault(ev.strategy, {k: [] for k in HISTORY_KEYS})
                    for key in HISTORY_KEYS:
                        h[key].append(getattr(ev, key))
                    epochs_seen += 1
                    if sub.behind:  # catching up with a shared run: draw only the latest curves
                        continue
                    snapshot = {k: {c: list(v) for c, v in h.items()} for k, h in history.items()}
                    yield (shared + t("finetune.status_epoch", L, strategy=called, epoch=ev.epoch, epochs=ev.epochs,
                                      acc=ev.val_acc, loss=ev.val_loss, speed=ev.images_per_s or 0),
                           await sharing.shared_plot(sub, ("curves", epochs_seen, L),
                                                     lambda: curves_figure(snapshot, L)),
                           skip, skip, skip, skip)
                elif ev.kind == "strategy_done":
                    pass
                elif ev.kind in ("done", "cancelled"):
                    result, over = ev.result, True  # shared: read it, never change it
                    files = []
                    for s in result.summaries:  # this visitor's own files (hard links to one written copy)
                        path = await sharing.aown_copy(sub, s.strategy, run_dir / f"{cfg.arch}-{s.strategy}.pth",
                                                       lambda dst, s=s: result.export(s.strategy, dst))
                        state["models"][s.strategy] = str(path)
                        files.append(str(path))
                    banner = "" if result.pretrained else t("finetune.random_start", L, arch=cfg.arch) + "\n\n"
                    if ev.kind == "cancelled":
                        status = t("finetune.status_stopped", L)
                    elif result.summaries:
                        best = max(result.summaries, key=lambda s: s.best_val_acc)
                        status = t("finetune.status_done", L, seconds=result.seconds, best=name(best.strategy, L),
                                   acc=best.best_val_acc)
                    else:
                        status = ""
                    notes = "\n".join(f"- {n.render(L)}" for n in result.notes)
                    choices = list(state["models"])
                    if sub.replay:
                        status = t("jobs.replay", L, seconds=sub.original_seconds or 0.0) + "\n\n" + status
                    yield (banner + status + ("\n\n" + notes if notes else ""),
                           await sharing.shared_plot(sub, ("final", L), lambda: curves_figure(
                               result.history, L, len(result.classes))) if result.summaries else skip,
                           results_table(result.summaries, L), files or None,
                           gr.update(choices=choices, value=choices[0] if choices else None), state)
            if not over:  # this visitor pressed Stop (or started again): detached, the run may go on for others
                yield t("finetune.status_stopped", L), skip, skip, skip, skip, skip
        finally:
            runs.finish(session, sub, run_dir)

    def stop(request: gr.Request = None):
        """Detach this session from its run: the run stops at its next step (and frees its memory) when nobody
        else is watching it."""
        runs.stop(getattr(request, "session_hash", None) or "anonymous")
        return t("finetune.status_stopped", lang(request))

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
        return dict(classify(model, path, top_k=min(5, len(model.categories) or 5)))

    return start, stop, try_model


def build(ctx) -> None:
    runs = Runs()
    start_fn, stop_fn, try_fn = make_handlers(ctx, runs)
    lo = {k: v[0] for k, v in LIMITS.items()}
    hi = {k: v[1] for k, v in LIMITS.items()}
    with gr.Tab(ctx("tab.finetune"), id="finetune"):
        gr.Markdown(ctx("finetune.intro"))
        state = gr.State(None, time_to_live=3600, delete_callback=remove_run_dir)
        with gr.Row():
            with gr.Column(scale=1):
                dataset = gr.Radio([(ctx(f"finetune.dataset_{d}"), d) for d in DATASETS], value="synthetic",
                                   label=ctx("finetune.dataset"), elem_id="ft-dataset")
                zip_file = gr.File(file_types=[".zip"], label=ctx("finetune.zip"), visible=False, elem_id="ft-zip")
                strategies = gr.CheckboxGroup([(ctx(f"finetune.name_{n}"), n) for n in STRATEGIES],
                                              value=DEFAULT_STRATEGIES, label=ctx("finetune.strategies"),
                                              elem_id="ft-strategies")
                gr.Markdown(ctx("finetune.strategy_help"))
                arch = gr.Dropdown(arch_choices(), value="resnet18", label=ctx("arch.depth"), elem_id="ft-arch")
                with gr.Row():
                    epochs = gr.Slider(lo["epochs"], hi["epochs"], value=5, step=1,
                                       label=ctx("finetune.epochs"), elem_id="ft-epochs")
                    image_size = gr.Slider(lo["image_size"], hi["image_size"], value=128, step=16,
                                           label=ctx("finetune.image_size"), elem_id="ft-size")
                with gr.Row():
                    batch_size = gr.Slider(lo["batch_size"], hi["batch_size"], value=32, step=1,
                                           label=ctx("finetune.batch_size"), elem_id="ft-batch")
                    lr = gr.Number(0, label=ctx("finetune.lr"), minimum=0, maximum=hi["lr"], elem_id="ft-lr")
                with gr.Row():
                    start = gr.Button(ctx("finetune.start"), variant="primary", elem_id="ft-start")
                    stop = gr.Button(ctx("finetune.stop"), variant="stop", elem_id="ft-stop")
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="ft-status")
                curves = gr.Plot(label=ctx("finetune.curves"), elem_id="ft-curves")
                results = gr.Dataframe(label=ctx("finetune.results"), interactive=False,  # headers: on load
                                       elem_id="ft-results")
                ctx.on_load(translate_headers, None, results)
                files = gr.File(label=ctx("finetune.downloads"), file_count="multiple", interactive=False,
                                elem_id="ft-files")
        with gr.Group():
            gr.Markdown(ctx("finetune.try_title"))
            with gr.Row():
                try_image = gr.Image(type="filepath", label=ctx("finetune.try_image"), height=220)
                with gr.Column():
                    try_model = gr.Dropdown([], label=ctx("finetune.try_model"), elem_id="ft-try-model")
                    try_button = gr.Button(ctx("finetune.try_run"))
                try_label = gr.Label(num_top_classes=5, label=ctx("finetune.try_label"))
        ctx.copy_link("finetune")

        dataset.change(lambda d: gr.update(visible=d == "upload"), dataset, zip_file, api_visibility="private", queue=False)
        run_event = start.click(start_fn, [dataset, zip_file, strategies, arch, epochs, image_size, batch_size, lr, state],
                                [status, curves, results, files, try_model, state], api_name="finetune",
                                preprocess=False, validator=early(check_start), **ctx.train)
        # The switch stops the training thread; ``cancels`` ends the event in the page (or drops it from the queue).
        stop.click(stop_fn, None, status, cancels=[run_event], api_name="stop_finetune", concurrency_limit=None,
                   queue=False)
        try_button.click(try_fn, [try_image, try_model, state], try_label, api_name="try_finetuned",
                         preprocess=False, **ctx.quick)
