"""Fine-tune tab: the note's transfer strategies trained side by side, live curves, Stop, downloads."""
from __future__ import annotations

import time
from pathlib import Path

import gradio as gr

from ... import budget
from ...errors import BadSetting
from ...train import estimate as estimates
from ...train import prepare
from ...train.finetune import LIMITS, FinetuneConfig, run, verdict
from ...i18n import Text, error, has, t
from ..figures.training import training_figure
from ...predict import classify
from ...models.transfer import STRATEGIES, load_export
from .. import disk, sharing
from ..progress import Steady, live, steadily, strip
from ..common import arch_choices, early, friendly, lang, on_gpu, payload_path
from .pretrain import stored_line

DATASETS = ("synthetic", "hymenoptera", "flowers", "upload")  # labels: finetune.dataset_<name>
PER_CLASS = ("5", "10", "25", "50", "all")  # the small-data knob's choices (FinetuneConfig.per_class; "all": None)
PRESETS = estimates.PRESETS  # labels: finetune.preset_<name>; "custom" when the settings match none
DEFAULTS = PRESETS[estimates.DEFAULT_PRESET]  # the page opens on the quick preset
DEFAULT_STRATEGIES = list(DEFAULTS["strategies"])
PRESET_KEYS = ("strategies", "arch", "epochs", "image_size", "batch_size", "lr", "per_class")  # what a preset sets
RESULT_COLUMNS = ("strategy", "pretrained", "trainable", "seconds", "best", "final")  # headers: finetune.col_<name>
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


def name(strategy: str, L: str) -> str:
    """A strategy as the page names it: its code in English, the note's words in Chinese."""
    return t(f"finetune.name_{strategy}", L)


def names_list(strategies, L: str) -> str:
    """**a**, **b**, **c** (Chinese: **a**与**b**与**c**)."""
    out = ""
    for s in strategies:
        out = f"**{name(s, L)}**" if not out else t("finetune.names_and", L, a=out, b=f"**{name(s, L)}**")
    return out


def curves_figure(history: dict, L: str, num_classes: int | None = None, n_val: int | None = None):
    """The curves, with the chance line (1 / classes) and each accuracy's ± 1 standard error band (n_val images)."""
    names = {s: name(s, L) for s in STRATEGIES}
    return training_figure(history, lang=L, names=names, chance=1 / num_classes if num_classes else None,
                           n_val=n_val, se_label=t("finetune.plot_se", L))


def run_info(ev) -> dict:
    """From a run's ``start`` event: its classes and validation images, for the chance line and the error band."""
    params = getattr(ev.message, "params", None) or {}
    return {k: params[p] for k, p in (("num_classes", "classes"), ("n_val", "n_val")) if isinstance(params.get(p), int)}


def val_se(acc: float, info: dict) -> float:
    """The standard error of a validation accuracy measured on the run's ``n_val`` images (0 when unknown)."""
    from ...train.finetune import binomial_se
    return binomial_se(acc, info.get("n_val", 0))


def weights_word(source: str, L: str) -> str:
    """A weight source (``imagenet``, ``builtin-source``, ``random``) in a word, for the results table."""
    return t(f"finetune.weights_{source}", L) if source in ("imagenet", "builtin-source", "random") else source


def source_line(arch, strategies, allow_download: bool, L: str) -> str:
    """What the pretrained strategies will start from, said before Start (never downloads to find out); while the
    server finds out whether ImageNet weights can be had, or prepares the built-in source (``resnet.train.prepare``),
    how far it is and what a run started now would start from."""
    from ...weights import pretrained_source
    from ...models.resnet import ARCHS
    if arch not in ARCHS:
        return ""
    if strategies and not any(STRATEGIES[s].pretrained for s in strategies if s in STRATEGIES):
        return t("finetune.source_scratch_only", L)
    try:
        source = pretrained_source(arch, allow_download=allow_download)
    except Exception:  # the line is advice; the run itself says what it started from
        return ""
    title = ARCHS[arch].title
    prep = prepare.status()
    if prep.arch == arch and prep.state == "checking":
        return t("finetune.source_checking", L, arch=title)
    if prep.arch == arch and prep.state == "preparing" and source == "random":
        if prep.seconds_left is None:
            return t("finetune.source_preparing_start", L, arch=title, fraction=prep.fraction)
        return t("finetune.source_preparing", L, arch=title, fraction=prep.fraction,
                 time=show_time(prep.seconds_left, L))
    key = {"imagenet": "imagenet", "builtin-source": "builtin"}.get(source, "random")
    return t(f"finetune.source_{key}", L, arch=title)


def final_status(result, cfg, L: str) -> str:
    """The finished (or stopped) run in words: which weights the pretrained strategies started from, and "Best"
    only when ``verdict`` finds the leader ahead by more than the noise; otherwise which strategies are tied."""
    source = getattr(result, "source", "imagenet" if result.pretrained else "random")
    pretrained_run = any(STRATEGIES[s.strategy].pretrained for s in result.summaries)
    prep = prepare.status()
    key = "finetune.random_start_preparing" if prep.arch == cfg.arch and prep.running else "finetune.random_start"
    banner = t(key, L, arch=cfg.arch) + "\n\n" if pretrained_run and source == "random" else ""
    if result.cancelled:
        return banner + t("finetune.status_stopped", L)
    if not result.summaries:
        return banner
    chance = getattr(result, "chance", 0.0) or 1 / max(len(result.classes), 1)
    by_name = {s.strategy: s for s in result.summaries}
    v = verdict(result.summaries)
    if len(result.summaries) == 1:
        s = result.summaries[0]
        status = t("finetune.status_single", L, seconds=result.seconds, name=name(s.strategy, L), acc=s.best_val_acc,
                   se=s.best_val_acc_se, chance=chance)
    elif v.best is not None:
        best = by_name[v.best]
        second = max((s for s in result.summaries if s.strategy != v.best), key=lambda s: s.best_val_acc)
        status = t("finetune.status_best", L, seconds=result.seconds, best=name(v.best, L), acc=best.best_val_acc,
                   se=best.best_val_acc_se, second=name(second.strategy, L), margin=v.margin, noise=v.noise,
                   chance=chance)
    else:
        status = t("finetune.status_tied", L, seconds=result.seconds, names=names_list(v.tied, L), margin=v.margin,
                   noise=v.noise, chance=chance)
    if pretrained_run:
        status += " " + t("finetune.status_source", L, source=t(f"finetune.source_name_{source}", L))
    return banner + status


def prepare_unit(ev, L: str) -> str:
    """What a "prepare" event counts, for the progress strip: megabytes of a download, else images."""
    key = getattr(ev.message, "key", "")
    return t("finetune.unit_mb" if key == "engine.downloading" else "finetune.unit_images", L)


def headers(L: str) -> list[str]:
    return [t(f"finetune.col_{c}", L) for c in RESULT_COLUMNS]


def translate_headers(request: gr.Request = None):
    """The empty results table with its headers in the visitor's language, when the page opens (a Dataframe's
    headers are plain text: the browser does not translate them)."""
    return results_table([], lang(request))


def results_table(summaries, L: str) -> dict:
    """One row per strategy: its starting weights by source, and its best validation accuracy ± standard error."""
    rows = [[name(s.strategy, L), weights_word(getattr(s, "source", "random"), L), f"{s.trainable_params:,}",
             f"{s.seconds:.1f}", f"{s.best_val_acc:.1%} ± {s.best_val_acc_se:.1%}", f"{s.final_val_acc:.1%}"]
            for s in summaries]
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


def to_per_class(value) -> int | None:
    """The small-data knob: a whole number of training images per class, or None for all of them."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "all", "none")):
        return None
    return to_int(value, "per_class")


def make_config(dataset, zip_file, strategies, arch, epochs, image_size, batch_size, lr, per_class=None,
                L: str = "en") -> FinetuneConfig:
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
                         lr=None if lr == 0 else lr, per_class=to_per_class(per_class))
    cfg = cfg.validated()  # duplicated strategies collapse to one run each
    budget.admit(cfg)  # memory and work, before any data or weights are loaded
    return cfg


def check_start(dataset, zip_file, strategies, arch, epochs, image_size, batch_size, lr, per_class, state,
                L: str) -> None:
    make_config(dataset, zip_file, strategies, arch, epochs, image_size, batch_size, lr, per_class, L)


def show_time(seconds: float, L: str) -> str:
    if seconds < 90:
        return t("finetune.seconds", L, s=max(1, round(seconds)))
    m, s = divmod(round(seconds), 60)
    return t("finetune.minutes", L, m=m, s=s)


def ahead_line(L: str, cfg: FinetuneConfig | None = None) -> str:
    """How many distinct runs are ahead of a new one; or that this exact run is already under way (Start joins it)
    or just finished (Start replays it): ``resnet.train.jobs`` shares identical runs."""
    known = None
    if cfg is not None:
        try:
            known = sharing.JOBS.known(cfg.key())
        except Exception:  # noqa: BLE001 - the key needs the weights' identity; without it, count the runs ahead
            known = None
    if known == "cached":
        return t("finetune.shared_cached", L)
    if known in ("waiting", "running"):
        return t("finetune.shared_live", L)
    n = sharing.JOBS.ahead()
    return t("finetune.ahead_none", L) if n == 0 else t("finetune.ahead_one", L) if n == 1 else \
        t("finetune.ahead_many", L, n=n)


def estimate_text(dataset, strategies, arch, epochs, image_size, batch_size, lr, per_class, L: str) -> str:
    """Before Start: how long the run should take on this server (``resnet.train.estimate``: measured once per
    arch, size and device, then arithmetic) and how many runs are ahead of it; or why it would be refused."""
    from ...errors import LabError
    from ...i18n import message
    from ...models.resnet import ARCHS
    try:
        cfg = make_config("synthetic" if dataset == "upload" else dataset, None, strategies, arch, epochs,
                          image_size, batch_size, lr, per_class, L)
    except LabError as e:
        return t("finetune.estimate_refused", L, reason=message(e, L).splitlines()[0])
    if dataset == "upload":
        return t("finetune.estimate_upload", L) + " " + ahead_line(L)
    e = estimates.estimate(cfg)
    if e is None:
        return t("finetune.estimate_unavailable", L) + " " + ahead_line(L)
    device = e.calibration.device.split(":")[0].upper()
    download = " " + t("finetune.estimate_download", L) if estimates.needs_download(cfg) else ""
    return t("finetune.estimate", L, time=show_time(e.seconds, L), n_train=e.n_train, n_val=e.n_val,
             arch=ARCHS[cfg.arch].title, size=cfg.image_size, device=device) + download + " " + ahead_line(L, cfg)


def matching_preset(strategies, arch, epochs, image_size, batch_size, lr, per_class) -> str:
    """The preset whose values the page shows, or "custom"."""
    here = dict(zip(PRESET_KEYS, (strategies, arch, epochs, image_size, batch_size, lr, per_class)))
    for preset, values in PRESETS.items():
        try:
            if all(_same(k, here[k], values[k]) for k in PRESET_KEYS):
                return preset
        except (TypeError, ValueError):
            continue
    return "custom"


def _same(key: str, a, b) -> bool:
    if key == "strategies":
        return set(a or ()) == set(b)
    if key == "arch":
        return a == b
    if key == "per_class":
        return to_per_class(a) == to_per_class(b)
    return float(a or 0) == float(b or 0)


def preset_values(preset: str) -> tuple:
    """The page's values for a preset, in ``PRESET_KEYS`` order (the per-class choice as the radio shows it)."""
    v = PRESETS[preset]
    return tuple(str(v[k]) if k == "per_class" and v[k] is not None else "all" if k == "per_class" else v[k]
                 for k in PRESET_KEYS)


def start_key(dataset, zip_file, strategies, arch, epochs, image_size, batch_size, lr, per_class, state,
              L: str) -> str:
    """The job key of a Start (``resnet.ui.sharing``): identical requests share one run."""
    return make_config(dataset, zip_file, strategies, arch, epochs, image_size, batch_size, lr, per_class, L).key()


def producer(cfg: FinetuneConfig):
    """The run itself, started once per distinct job by ``resnet.train.jobs``, in its own thread."""
    @on_gpu(duration=120)
    def events(cancel):
        yield from run(cfg, cancel=cancel)
    return events


def make_handlers(ctx, runs: Runs):
    @sharing.keyed(start_key)
    @friendly
    async def start(dataset, zip_file, strategies, arch, epochs, image_size, batch_size, lr, per_class, state,
                    request: gr.Request = None, progress=gr.Progress()):
        """Yields (status, curves, results, files, model choices, state) as training goes: the curves every epoch
        (the finished strategies' and the one training), the results table's rows as strategies finish. Progress goes
        to the tab's strip (``resnet.ui.progress``), never over these outputs."""
        steady = Steady(progress)
        outputs = steadily(updates(dataset, zip_file, strategies, arch, epochs, image_size, batch_size, lr, per_class,
                                   state, request, steady), steady)
        try:
            async for out in outputs:
                yield out
        finally:
            await outputs.aclose()

    async def updates(dataset, zip_file, strategies, arch, epochs, image_size, batch_size, lr, per_class, state,
                      request, progress):
        L = lang(request)
        cfg = make_config(dataset, zip_file, strategies, arch, epochs, image_size, batch_size, lr, per_class, L)
        session = getattr(request, "session_hash", None) or "anonymous"
        remove_run_dir(state)  # the previous run's downloads
        # Identical requests share one run: this subscribes to it (or to its replay), or starts it.
        sub = sharing.JOBS.subscribe(cfg.key(), producer(cfg), label="finetune")
        run_dir = runs.start(session, sub)
        state = {"dir": str(run_dir), "models": {}}
        history: dict[str, dict[str, list]] = {}  # the curves so far, in RunResult.history's layout
        info: dict = {}
        finished = []  # the strategies done so far (StrategySummary), in the results table while the run goes on
        total_steps, done_steps = None, 0
        unit = t("finetune.unit_steps", L)
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
                    info.update(run_info(ev))  # classes and validation images: chance line, error bands
                    yield shared + ev.message.render(L), skip, skip, skip, skip, skip
                elif ev.kind == "prepare" and not sub.behind:
                    progress((ev.step, ev.steps), desc=ev.message.render(L), unit=prepare_unit(ev, L))
                elif ev.kind == "step":
                    if total_steps is None:
                        total_steps = ev.steps * cfg.epochs * len(cfg.strategies)
                    done_steps += 1
                    if not sub.behind:
                        progress((min(done_steps, total_steps), total_steps),
                                 desc=t("finetune.progress_step", L, strategy=called, epoch=ev.epoch), unit=unit)
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
                                      acc=ev.val_acc, se=val_se(ev.val_acc, info), loss=ev.val_loss,
                                      speed=ev.images_per_s or 0),
                           await sharing.shared_plot(sub, ("curves", epochs_seen, L),
                                                     lambda: curves_figure(snapshot, L, **info)),
                           skip, skip, skip, skip)
                elif ev.kind == "strategy_done":
                    if ev.summary is not None:
                        finished.append(ev.summary)
                    if not sub.behind:
                        yield skip, skip, results_table(finished, L), skip, skip, skip
                elif ev.kind in ("done", "cancelled"):
                    result, over = ev.result, True  # shared: read it, never change it
                    files = []
                    for s in result.summaries:  # this visitor's own files (hard links to one written copy)
                        path = await sharing.aown_copy(sub, s.strategy, run_dir / f"{cfg.arch}-{s.strategy}.pth",
                                                       lambda dst, s=s: result.export(s.strategy, dst))
                        state["models"][s.strategy] = str(path)
                        files.append(str(path))
                    banner, status = "", final_status(result, cfg, L)  # the weights' source; Best or tied
                    notes = "\n".join(f"- {n.render(L)}" for n in result.notes)
                    choices = [(name(s, L), s) for s in state["models"]]  # the note's names in Chinese
                    if sub.replay:
                        status = t("jobs.replay", L, seconds=sub.original_seconds or 0.0) + "\n\n" + status
                    yield (banner + status + ("\n\n" + notes if notes else ""),
                           await sharing.shared_plot(sub, ("final", L), lambda: curves_figure(
                               result.history, L, len(result.classes), info.get("n_val")))
                           if result.summaries else skip,
                           results_table(result.summaries, L), files or None,
                           gr.update(choices=choices, value=choices[0][1] if choices else None), state)
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
        top = classify(model, path, top_k=min(5, len(model.categories) or 5))
        return {t(f"shape.{c}", L) if has(f"shape.{c}") else c: p for c, p in top}  # the built-in shapes translated

    return start, stop, try_model


def build(ctx) -> None:
    runs = Runs()
    start_fn, stop_fn, try_fn = make_handlers(ctx, runs)
    lo = {k: v[0] for k, v in LIMITS.items()}
    hi = {k: v[1] for k, v in LIMITS.items()}
    start_values = dict(zip(PRESET_KEYS, preset_values(estimates.DEFAULT_PRESET)))
    with gr.Tab(ctx("tab.finetune"), id="finetune"):
        gr.Markdown(ctx("finetune.intro"))
        state = gr.State(None, time_to_live=3600, delete_callback=remove_run_dir)
        with gr.Row():
            with gr.Column(scale=1):
                preset = gr.Radio([(ctx(f"finetune.preset_{p}"), p) for p in (*PRESETS, "custom")],
                                  value=estimates.DEFAULT_PRESET, label=ctx("finetune.preset"),
                                  info=ctx("finetune.preset_info"), elem_id="ft-preset")
                dataset = gr.Radio([(ctx(f"finetune.dataset_{d}"), d) for d in DATASETS], value="synthetic",
                                   label=ctx("finetune.dataset"), elem_id="ft-dataset")
                zip_file = gr.File(file_types=[".zip"], label=ctx("finetune.zip"), visible=False, elem_id="ft-zip")
                per_class = gr.Radio([(ctx("finetune.per_class_all") if v == "all" else v, v) for v in PER_CLASS],
                                     value=start_values["per_class"], label=ctx("finetune.per_class"),
                                     info=ctx("finetune.per_class_info"), elem_id="ft-per-class")
                strategies = gr.CheckboxGroup([(ctx(f"finetune.name_{n}"), n) for n in STRATEGIES],
                                              value=start_values["strategies"], label=ctx("finetune.strategies"),
                                              elem_id="ft-strategies")
                gr.Markdown(ctx("finetune.strategy_help"))
                arch = gr.Dropdown(arch_choices(), value=start_values["arch"], label=ctx("arch.depth"),
                                   elem_id="ft-arch")
                with gr.Row():
                    epochs = gr.Slider(lo["epochs"], hi["epochs"], value=start_values["epochs"], step=1,
                                       label=ctx("finetune.epochs"), elem_id="ft-epochs")
                    image_size = gr.Slider(lo["image_size"], hi["image_size"], value=start_values["image_size"],
                                           step=16, label=ctx("finetune.image_size"), elem_id="ft-size")
                with gr.Row():
                    batch_size = gr.Slider(lo["batch_size"], hi["batch_size"], value=start_values["batch_size"],
                                           step=1, label=ctx("finetune.batch_size"), elem_id="ft-batch")
                    lr = gr.Number(start_values["lr"], label=ctx("finetune.lr"), minimum=0, maximum=hi["lr"],
                                   elem_id="ft-lr")
                source = gr.Markdown(elem_id="ft-source")  # the weights' source, before Start
                estimate = gr.Markdown(elem_id="ft-estimate")  # the time it should take here, and runs ahead
                with gr.Row():
                    start = gr.Button(ctx("finetune.start"), variant="primary", elem_id="ft-start")
                    stop = gr.Button(ctx("finetune.stop"), variant="stop", elem_id="ft-stop")
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="ft-status")
                bar = strip("ft-progress")  # the run's progress: nothing covers the curves or the results
                curves = gr.Plot(label=ctx("finetune.curves"), elem_id="ft-curves")
                results = gr.Dataframe(label=ctx("finetune.results"), interactive=False,  # headers: on load
                                       elem_id="ft-results", wrap=True, column_widths=RESULT_WIDTHS,
                                       elem_classes=["table-fits"])
                ctx.on_load(translate_headers, None, results)
                files = gr.File(label=ctx("finetune.downloads"), file_count="multiple", interactive=False,
                                elem_id="ft-files")
        pretraining = _pretrain_section(ctx, arch)
        with gr.Group():
            gr.Markdown(ctx("finetune.try_title"))
            with gr.Row():
                try_image = gr.Image(type="filepath", label=ctx("finetune.try_image"), height=220,
                                     elem_id="ft-try-image")
                with gr.Column():
                    try_model = gr.Dropdown([], label=ctx("finetune.try_model"), elem_id="ft-try-model")
                    try_button = gr.Button(ctx("finetune.try_run"), elem_id="ft-try-run")
                try_label = gr.Label(num_top_classes=5, label=ctx("finetune.try_label"), elem_id="ft-try-label")
        ctx.copy_link("finetune")

        dataset.change(lambda d: gr.update(visible=d == "upload"), dataset, zip_file, api_visibility="private",
                       queue=False)
        settings = [strategies, arch, epochs, image_size, batch_size, lr, per_class]  # PRESET_KEYS' order

        # A preset sets the sliders; a slider moved by hand makes the preset "custom" (or the one it now matches).
        def apply_preset(preset):
            return preset_values(preset) if preset in PRESETS else tuple(gr.skip() for _ in settings)
        preset.input(apply_preset, preset, settings, api_name="finetune_preset", queue=False)
        gr.on([c.change for c in settings], matching_preset, settings, preset, api_visibility="private",
              queue=False)

        # Before Start: where the weights come from, and how long the run should take here.
        def show_source(arch, strategies, request: gr.Request = None):
            return source_line(arch, strategies, ctx.settings.allow_download, lang(request))

        @friendly
        def show_estimate(dataset, strategies, arch, epochs, image_size, batch_size, lr, per_class,
                          request: gr.Request = None):
            return estimate_text(dataset, strategies, arch, epochs, image_size, batch_size, lr, per_class,
                                 lang(request))

        source_inputs = [arch, strategies]
        estimate_inputs = [dataset, strategies, arch, epochs, image_size, batch_size, lr, per_class]
        ctx.on_load(show_source, source_inputs, source)
        ctx.on_load(show_estimate, estimate_inputs, estimate)
        gr.on([arch.change, strategies.change], show_source, source_inputs, source, api_name="finetune_source",
              **ctx.cheap)
        # A backbone just stored changes what the pretrained strategies start from.
        pretraining.event.then(show_source, source_inputs, source, api_visibility="private", **ctx.cheap)

        # While the server finds out whether ImageNet weights can be had, or prepares the built-in source by itself
        # (``resnet.train.prepare``), the line says how far it is, every few seconds; once it is over, the line says
        # what runs start from now, the pretraining section what is stored, and the timer stops.
        preparing = gr.Timer(PREPARE_REFRESH_S, active=prepare.status().running)

        def refresh_source(arch, strategies, request: gr.Request = None):
            L = lang(request)
            going = prepare.status().running
            stored = gr.skip() if going else stored_line(arch, L)
            return source_line(arch, strategies, ctx.settings.allow_download, L), stored, gr.Timer(active=going)
        preparing.tick(refresh_source, source_inputs,
                       [source, pretraining.status, preparing],
                       api_visibility="private", show_progress="hidden", **ctx.cheap)
        gr.on([c.change for c in estimate_inputs], show_estimate, estimate_inputs, estimate,
              api_name="finetune_estimate", trigger_mode="always_last", **ctx.cheap)

        run_event = start.click(start_fn, [dataset, zip_file, strategies, arch, epochs, image_size, batch_size, lr,
                                           per_class, state],
                                [status, curves, results, files, try_model, state], api_name="finetune",
                                preprocess=False, validator=early(check_start), **ctx.train, **live(bar))
        run_event.then(show_estimate, estimate_inputs, estimate, api_visibility="private", **ctx.cheap)  # replayable
        # The switch stops the training thread; ``cancels`` ends the event in the page (or drops it from the queue).
        stop.click(stop_fn, None, status, cancels=[run_event], api_name="stop_finetune", concurrency_limit=None,
                   queue=False)
        try_button.click(try_fn, [try_image, try_model, state], try_label, api_name="try_finetuned",
                         preprocess=False, **ctx.quick)


def _pretrain_section(ctx, arch):
    """The built-in pretraining source's section (``resnet.ui.tabs.pretrain``): button, progress, Stop. Returns it:
    its pretraining event's end means a backbone may have been stored; its status line says which."""
    from .pretrain import build_section
    return build_section(ctx, arch)
