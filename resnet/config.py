"""Every ``RESNET_*`` setting, parsed in one place and tolerantly.

A setting is read from the environment each time it is asked for (tests and operators may change it while
the process runs). A malformed value logs one warning and falls back to the default: a typo in a Space's
settings must never break a request. ``SETTINGS`` is also the table the README shows (``markdown_table``).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger("resnet.config")


@dataclass(frozen=True)
class Setting:
    name: str
    kind: type            # int, float, bool or str
    default: object       # None: unset / decided at run time (the doc says how)
    doc: str
    minimum: float | None = None


def _gpu() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch is a dependency
        return False


SETTINGS: dict[str, Setting] = {s.name: s for s in [
    Setting("RESNET_WEIGHTS_DIR", str, None, "a folder holding torchvision checkpoint files, looked at before the "
            "hub cache (each is checked against the hash in its file name)"),
    Setting("RESNET_WEIGHTS_BASE_URL", str, None, "an `https` mirror holding torchvision's file names"),
    Setting("RESNET_ALLOW_DOWNLOAD", bool, True, "0: never download weights or data sets from the app"),
    Setting("RESNET_DOWNLOAD_TIMEOUT_S", float, 30.0, "connect and read timeout of every download", 1),
    Setting("RESNET_DOWNLOAD_RETRY_S", float, 60.0, "after a failed download, wait this long (doubling per "
            "failure, at most an hour) before trying again", 0),
    Setting("RESNET_PREPARE_SOURCE", bool, True, "1: when the Fine-tune tab's default depth has no ImageNet weights "
            "and none can be downloaded (found out once, at start-up), the server pretrains the built-in source by "
            "itself, in the background at low priority, as `python -m resnet pretrain` does; 0: never"),
    Setting("RESNET_PREPARE_EPOCHS", int, None, "epochs of that preparation (default: the command's)", 1),
    Setting("RESNET_PREPARE_PER_CLASS", int, None, "pictures per source class of that preparation (default: the "
            "command's; a test's tiny recipe sets both)", 2),
    Setting("RESNET_DEFAULT_ARCH", str, "resnet18", "the depth the Classify and Feature maps tabs start with"),
    Setting("RESNET_MODEL_CACHE_MB", int, 1200, "memory the shared model cache may hold (least recently used "
            "dropped first)", 1),
    Setting("RESNET_TRAIN_CONCURRENCY", int, None, "distinct training-type runs (fine-tune, training race, "
            "ResNet-1202) computing at once; others wait their turn, and identical requests share one run (default 1 "
            "on CPU, 2 on GPU)", 1),
    Setting("RESNET_REPLAY_CACHE_ENTRIES", int, 32, "finished runs (fine-tunes and labs) kept to answer the same "
            "request again at once, replayed; least recently used dropped first (0: none)", 0),
    Setting("RESNET_REPLAY_CACHE_MB", int, 512, "memory those finished runs may hold together (a fine-tune keeps "
            "its trained models)", 0),
    Setting("RESNET_QUICK_CONCURRENCY", int, 4, "quick jobs (classify, feature maps, the short labs) running at "
            "once, across all endpoints together", 1),
    Setting("RESNET_TORCH_THREADS", int, None, "torch's intra-op threads (default: the cores divided among the "
            "jobs that may run at once, at least 1)", 1),
    Setting("RESNET_MAX_QUEUE", int, 128, "counted requests (jobs, and subscriptions to a shared run) waiting or "
            "running before new ones are told the queue is full; cheap answers (the layer table, estimates) are never "
            "counted", 1),
    Setting("RESNET_JOBS_PER_SESSION", int, 2, "what one open page may hold: queued or running jobs (a subscription to "
            "a run the server already has counts a quarter)", 1),
    Setting("RESNET_JOBS_PER_ADDRESS", int, 2, "the same, for all the requests of one client address that come from "
            "no open page together (scripts, API calls); pages behind one address (a class behind a school NAT) each "
            "have their own share", 1),
    Setting("RESNET_PAGES_PER_ADDRESS", int, 64, "open pages of one client address that each get a share", 1),
    Setting("RESNET_RUNS_PER_ADDRESS", int, 4, "distinct training runs (not subscriptions) one client address may "
            "have waiting or running", 1),
    Setting("RESNET_MAX_ROOMS", int, 20, "live classes (rooms, each with its join code and teacher link) the server "
            "holds at once; a new one first ends those idle too long", 1),
    Setting("RESNET_ROOM_IDLE_S", float, 7200.0, "a room with no change and no student's heartbeat for this many "
            "seconds ends, and its code stops working", 60),
    Setting("RESNET_TRUST_PROXY", bool, None, "take the client address from X-Forwarded-For (default: on in a "
            "Hugging Face Space, where every request comes through its proxy)"),
    Setting("RESNET_MAX_FILE_MB", int, 100, "largest upload (a student's ResNet-34 checkpoint is about 82 MiB, "
            "a ResNet-50 one about 90 MiB)", 1),
    Setting("RESNET_MAX_IMAGE_PIXELS", int, 40_000_000, "larger images are refused before decoding", 1),
    Setting("RESNET_MAX_DATASET_MB", int, 1536, "memory a fine-tune may use for its decoded images; larger data "
            "sets are refused before decoding", 1),
    Setting("RESNET_MEMORY_BUDGET_MB", int, None, "memory one job may plan to use (default: 60 % of the memory "
            "available when the job is checked, GPU memory on a GPU)", 1),
    Setting("RESNET_WORK_BUDGET_TMACS", float, None, "multiply-adds (in 10¹² units) one job may plan to do (default: "
            "60 on a CPU, 2000 on a GPU)", 0.001),
    Setting("RESNET_DISK_BUDGET_MB", int, 2048, "disk for fine-tune runs and uploads together; oldest removed "
            "first", 1),
    Setting("RESNET_DEVICE", str, None, "force `cpu`, `cuda` or `mps` (auto: CUDA > MPS > CPU)"),
    Setting("RESNET_CPU_BF16", bool, None, "`1`/`0` forces bf16 autocast for fine-tuning on the CPU on or off "
            "(auto: on where the CPU has AMX or AVX512-BF16)"),
    Setting("RESNET_DATA_DIR", str, None, "where downloaded data sets are kept (default `~/.cache/resnet-lab`)"),
    Setting("RESNET_HYMENOPTERA_URL", str, None, "an `https` mirror of the ants/bees zip"),
    Setting("RESNET_HYMENOPTERA_SHA256", str, None, "the ants/bees zip's SHA-256 (else the first download's is "
            "recorded and later copies checked against it)"),
    Setting("RESNET_FLOWERS_URL", str, None, "an `https` mirror of the flower_photos archive (the same file: its "
            "published SHA-256 is checked)"),
    Setting("RESNET_FLOWERS_SHA256", str, None, "the flower_photos archive's SHA-256, only for a mirror serving "
            "a different copy"),
]}

_warned: set[tuple[str, str]] = set()
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _warn(name: str, raw: str, why: str) -> None:
    if (name, raw) not in _warned:
        _warned.add((name, raw))
        log.warning("ignoring %s=%r (%s); using its default", name, raw, why)


def get(name: str):
    """The setting's value: the environment's if it parses, else the default (``None``: decide at run time)."""
    s = SETTINGS[name]
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return s.default
    raw = raw.strip()
    if s.kind is str:
        return raw
    if s.kind is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        _warn(name, raw, "not 0 or 1")
        return s.default
    try:
        value = s.kind(float(raw)) if s.kind is int and "." in raw else s.kind(raw)
    except (TypeError, ValueError, OverflowError):
        _warn(name, raw, f"not a {s.kind.__name__}")
        return s.default
    if value != value or value in (float("inf"), float("-inf")) or (s.minimum is not None and value < s.minimum):
        _warn(name, raw, f"below {s.minimum}" if value == value else "not a number")
        return s.default
    return value


def train_concurrency() -> int:
    return get("RESNET_TRAIN_CONCURRENCY") or (2 if _gpu() else 1)


def trust_proxy() -> bool:
    value = get("RESNET_TRUST_PROXY")
    return bool(os.environ.get("SPACE_ID")) if value is None else value


def markdown_table() -> str:
    """The README's table of settings."""
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    for s in SETTINGS.values():
        default = "auto" if s.default is None and s.kind is not str else (
            "unset" if s.default is None else ("1" if s.default is True else "0" if s.default is False else s.default))
        rows.append(f"| `{s.name}` | {default} | {s.doc} |")
    return "\n".join(rows)
