"""The built-in source, prepared by the server itself: a first Start that teaches, offline too.

    prepare.start("resnet18")     # at the app's start-up: returns at once, the rest happens in the background
    prepare.status()              # Status(state="preparing", fraction=0.4, seconds_left=130.0, ...)

In a thread, ``start`` finds out once whether ImageNet weights of the arch can be had here: on disk, or a download
that a ``HEAD`` request says would work (``weights.probe_imagenet``; a refused or timed-out request means no, and
is remembered, so runs stop waiting for a download). When they cannot, and no built-in source backbone is stored
yet, it pretrains one with exactly the recipe ``python -m resnet pretrain`` uses by default (``recipe``), stored
where ``finetune`` finds it, in a child process that runs on one thread at the lowest priority (``nice`` 19): the
server's own work (a classification, a fine-tune) always comes first, and the child only takes what is left. The
child reports its progress and the time left (from ``estimate.estimate_pretrain``, timed in the child, then from
its own pace) as JSON lines; ``status()`` says where it stands. It ends with the server (its stdin closes).

``RESNET_PREPARE_SOURCE=0`` turns it off; ``RESNET_PREPARE_EPOCHS`` and ``RESNET_PREPARE_PER_CLASS`` shrink the
recipe (a test's preparation takes seconds).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .. import config, weights
from .pretrain import DEFAULTS, PretrainConfig

log = logging.getLogger("resnet.prepare")
NICE = 19             # the lowest priority: the server's own jobs always come first
THREADS = 1           # torch threads of the child: one core at most
REPORT_S = 0.5        # the child reports its progress at most this often
STATES = ("idle", "checking", "off", "not-needed", "preparing", "ready", "failed", "stopped")


@dataclass(frozen=True)
class Status:
    """Where the preparation stands. ``state``: idle (never started) | checking (finding out whether ImageNet weights
    can be had) | off (the setting) | not-needed (``reason``: "imagenet" on disk or downloadable, "stored" a backbone
    already there) | preparing | ready (``file`` stored) | failed (``reason``: the operator's sentence) | stopped."""

    state: str = "idle"
    arch: str | None = None
    fraction: float = 0.0              # of the preparation's work done, 0 … 1
    seconds_left: float | None = None  # None: not estimated yet
    seconds: float = 0.0               # since the preparation began
    file: str | None = None            # the stored backbone's file name (never its folder)
    reason: str = ""

    @property
    def running(self) -> bool:
        return self.state in ("checking", "preparing")


def recipe(arch: str) -> PretrainConfig:
    """The preparation's pretraining: ``python -m resnet pretrain``'s defaults for ``arch`` (the recipe whose transfer
    margins tests/test_pretrain.py checks), unless ``RESNET_PREPARE_EPOCHS`` / ``RESNET_PREPARE_PER_CLASS`` say
    otherwise."""
    return PretrainConfig(arch=arch, image_size=DEFAULTS["image_size"],
                          epochs=config.get("RESNET_PREPARE_EPOCHS") or DEFAULTS["epochs"],
                          per_class=config.get("RESNET_PREPARE_PER_CLASS") or DEFAULTS["per_class"]).validated()


class Preparation:
    """One background preparation per process (``PREPARATION``); ``start`` again once one has ended checks again."""

    def __init__(self):
        self._lock = threading.Lock()
        self._status = Status()
        self._proc: subprocess.Popen | None = None
        self._stopping = False
        self._reported = time.monotonic()  # when the child last said how long is left

    def status(self) -> Status:
        with self._lock:
            s = self._status
        if s.state == "preparing" and s.seconds_left is not None:  # the time left goes on falling between reports
            return replace(s, seconds_left=max(0.0, s.seconds_left - (time.monotonic() - self._reported)))
        return s

    def _set(self, **changes) -> None:
        with self._lock:
            self._status = replace(self._status, **changes)
            self._reported = time.monotonic()

    def start(self, arch: str) -> Status:
        """Find out, in the background, whether ``arch`` needs the built-in source, and prepare it if so."""
        with self._lock:
            if self._status.running:
                return self._status
            self._status, self._stopping, self._reported = Status("checking", arch), False, time.monotonic()
        threading.Thread(target=self._check, args=(arch,), name="prepare-source", daemon=True).start()
        return self.status()

    def _check(self, arch: str) -> None:
        try:
            if weights.probe_imagenet(arch):  # on disk (nothing asked), else a HEAD request
                return self._set(state="not-needed", reason="imagenet")
            if weights.find_source(arch):
                return self._set(state="not-needed", reason="stored")
            if not config.get("RESNET_PREPARE_SOURCE"):
                return self._set(state="off", reason="setting")
            self._prepare(recipe(arch), weights.source_folder())
        except Exception as e:  # noqa: BLE001 - a background task: the log says why, the page says it failed
            log.exception("preparing the built-in source failed")
            self._set(state="failed", reason=f"{type(e).__name__}: {e}")

    def _prepare(self, cfg: PretrainConfig, folder: Path) -> None:
        log.info("no ImageNet weights for %s here and none can be downloaded: preparing the built-in source into %s "
                 "in the background", cfg.arch, folder)
        package_root = str(Path(__file__).resolve().parents[2])  # the child imports this very package
        env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS),
               "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
        spec = json.dumps({**cfg.to_dict(), "folder": str(folder)})
        t0 = time.monotonic()
        with self._lock:
            if self._stopping:
                self._status = replace(self._status, state="stopped")
                return
            self._proc = proc = subprocess.Popen(
                [sys.executable, "-c", "from resnet.train.prepare import child; child()", spec],
                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self._status = replace(self._status, state="preparing")
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("kind") == "progress":
                self._set(fraction=msg["fraction"], seconds_left=msg.get("left"), seconds=time.monotonic() - t0)
            elif msg.get("kind") == "done":
                self._set(state="ready", fraction=1.0, seconds_left=0.0, seconds=time.monotonic() - t0,
                          file=msg["file"])
                log.info("the built-in source is ready: %s (%.0f s)", msg["file"], time.monotonic() - t0)
            elif msg.get("kind") == "failed":
                self._set(state="failed", reason=msg.get("reason", ""))
        code = proc.wait()
        if self.status().state == "preparing":
            self._set(state="stopped" if self._stopping else "failed", reason=f"the preparation exited ({code})")

    def stop(self) -> None:
        """End a preparation under way (its child process stops; nothing is stored)."""
        with self._lock:
            self._stopping = True
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    def wait(self, timeout: float) -> Status:
        """The status once it is no longer running, or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.status().running and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.status()


PREPARATION = Preparation()


def start(arch: str) -> Status:
    return PREPARATION.start(arch)


def status() -> Status:
    return PREPARATION.status()


# ---------------------------------------------------------------- the child process

class Progress:
    """The share of a pretraining's work done, and the time left, from its events: the estimate's parts (painting
    the first pictures, then each epoch) weigh the events, and once some work is done the pace measured so far
    scales what the estimate says is left."""

    def __init__(self, cfg: PretrainConfig, total_s: float | None = None, prepare_s: float | None = None,
                 started: float | None = None):
        n_val, n_train = cfg.val_per_class * cfg.num_classes, cfg.per_class * cfg.num_classes
        painted = n_val + n_train * (cfg.epochs if cfg.fresh else 1)
        self.total = total_s or 1.0
        first = (n_val + n_train) / painted  # the painting before the first epoch, of all the painting
        self.first = (prepare_s * first if prepare_s is not None and total_s else 0.1 * self.total)
        self.epoch = (self.total - self.first) / cfg.epochs
        self.estimated = total_s is not None
        self.started = time.monotonic() if started is None else started
        self.done = 0.0

    def update(self, ev) -> float:
        """The share done after event ``ev`` (a ``pretrain`` event)."""
        if ev.kind == "prepare" and ev.steps:
            self.done = max(self.done, self.first * ev.step / ev.steps)
        elif ev.kind == "step" and ev.steps:
            self.done = self.first + self.epoch * (ev.epoch - 1 + ev.step / ev.steps)
        elif ev.kind == "epoch":
            self.done = self.first + self.epoch * ev.epoch
        return self.fraction

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total)

    def left(self, now: float | None = None) -> float | None:
        """Seconds left: the estimate's, at the pace measured so far once a twentieth is done; None without an
        estimate until an epoch is done."""
        elapsed = (time.monotonic() if now is None else now) - self.started
        rest = self.total - self.done
        if self.fraction >= 0.05 and elapsed > 0:
            return rest * elapsed / self.done
        return rest if self.estimated else None


def _say(**msg) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def _end_with_parent() -> None:
    """The child ends when the server does: its stdin (a pipe from the server) closes."""
    def watch():
        sys.stdin.read()
        os._exit(0)
    threading.Thread(target=watch, daemon=True).start()


def child(argv: list[str] | None = None) -> None:
    """The child process: ``python -c "from resnet.train.prepare import child; child()" '<PretrainConfig as JSON>'``.
    Lowest priority, one thread; JSON lines on stdout (progress, then done or failed)."""
    import torch

    from .estimate import estimate_pretrain
    from .pretrain import pretrain
    _end_with_parent()
    try:
        os.nice(NICE)
    except (AttributeError, OSError):  # not on this system: one thread still leaves the other cores free
        pass
    torch.set_num_threads(THREADS)
    spec = json.loads((argv or sys.argv[1:])[0])
    cfg = PretrainConfig(**spec).validated()
    try:
        try:
            e = estimate_pretrain(cfg)  # timed here: one thread at low priority, as the pretraining will run
            progress = Progress(cfg, e.seconds, e.parts["prepare"])
        except Exception:  # noqa: BLE001 - the progress without a time left is still progress
            progress = Progress(cfg)
        _say(kind="progress", fraction=0.0, left=progress.left())
        last = 0.0
        for ev in pretrain(**cfg.to_dict()):
            progress.update(ev)
            now = time.monotonic()
            if ev.kind == "epoch" or now - last >= REPORT_S:
                last = now
                _say(kind="progress", fraction=progress.fraction, left=progress.left(now))
            if ev.kind == "done":
                r = ev.result
                _say(kind="done", file=r.file, val_acc=r.val_acc, seconds=r.seconds)
            elif ev.kind == "cancelled":
                _say(kind="failed", reason="cancelled")
    except Exception as e:  # noqa: BLE001 - said to the parent, which logs it
        _say(kind="failed", reason=f"{type(e).__name__}: {e}")
        raise SystemExit(1)
