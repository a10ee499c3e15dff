"""The Fine-tune tab's words: the strategies' names, the results table, the curves, and the lines around a run
(where the weights come from, how long it should take, and the verdict once it is over)."""
from __future__ import annotations

from ...errors import LabError
from ...i18n import message, t
from ...models.resnet import ARCHS
from ...models.transfer import STRATEGIES
from ...train import estimate as estimates
from ...train import prepare
from ...train.finetune import FinetuneConfig, binomial_se, verdict
from ...weights import pretrained_source
from .. import sharing
from ..common import duration_text
from ..figures.training import training_figure
from .finetune_request import FinetuneRequest

RESULT_COLUMNS = ("strategy", "pretrained", "trainable", "seconds", "best", "final")  # headers: finetune.col_<name>


def name(strategy: str, L: str) -> str:
    """A strategy as the page names it: its code in English, the note's words in Chinese."""
    return t(f"finetune.name_{strategy}", L)


def names_list(strategies, L: str) -> str:
    """The names in bold, joined the language's own way (``finetune.names_and``: **a**, **b**, **c** in English)."""
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
    return binomial_se(acc, info.get("n_val", 0))


def weights_word(source: str, L: str) -> str:
    """A weight source (``imagenet``, ``builtin-source``, ``random``) in a word, for the results table."""
    return t(f"finetune.weights_{source}", L) if source in ("imagenet", "builtin-source", "random") else source


def source_line(arch, strategies, allow_download: bool, L: str) -> str:
    """What the pretrained strategies will start from, said before Start (never downloads to find out); while the
    server finds out whether ImageNet weights can be had, or prepares the built-in source (``resnet.train.prepare``),
    how far it is and what a run started now would start from."""
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
                 time=duration_text(prep.seconds_left, L))
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


def results_table(summaries, L: str) -> dict:
    """One row per strategy: its starting weights by source, and its best validation accuracy ± standard error."""
    rows = [[name(s.strategy, L), weights_word(getattr(s, "source", "random"), L), f"{s.trainable_params:,}",
             f"{s.seconds:.1f}", f"{s.best_val_acc:.1%} ± {s.best_val_acc_se:.1%}", f"{s.final_val_acc:.1%}"]
            for s in summaries]
    return {"headers": headers(L), "data": rows}


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


def estimate_text(req: FinetuneRequest, L: str) -> str:
    """Before Start: how long the run should take on this server (``resnet.train.estimate``: measured once per
    arch, size and device, then arithmetic) and how many runs are ahead of it; or why it would be refused."""
    try:
        cfg = req.as_estimated().config(L)
    except LabError as e:
        return t("finetune.estimate_refused", L, reason=message(e, L).splitlines()[0])
    if req.dataset == "upload":
        return t("finetune.estimate_upload", L) + " " + ahead_line(L)
    e = estimates.estimate(cfg)
    if e is None:
        return t("finetune.estimate_unavailable", L) + " " + ahead_line(L)
    device = e.calibration.device.split(":")[0].upper()
    download = " " + t("finetune.estimate_download", L) if estimates.needs_download(cfg) else ""
    return t("finetune.estimate", L, time=duration_text(e.seconds, L), n_train=e.n_train, n_val=e.n_val,
             arch=ARCHS[cfg.arch].title, size=cfg.image_size, device=device) + download + " " + ahead_line(L, cfg)
