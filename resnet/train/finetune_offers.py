"""When the budget refuses a fine-tune: the settings to offer (a batch size, fewer epochs, a smaller image size, both
at once, a smaller network, fewer images or strategies) and the sentence that names the limit.

``fits(only=None, **change)`` is ``resnet.budget.admit``'s predicate: does the job with ``change`` meet every limit,
or at least ``only`` and those before it? A smaller image size is first searched with per-image counts scaled
from the run's own size (``profile=``: no meta pass per size), then confirmed with exact ones.
"""
from __future__ import annotations

from ..budget import MB, largest, show_bytes, show_macs
from ..errors import BudgetExceeded
from ..i18n import Text, error
from ..models.resnet import ARCHS
from ..profile import resnet_profile

# The one-off phases of ``finetune_cost`` that may be a run's largest, as the refusal names them.
PHASES = {"loading the weights": "budget.phase.loading", "stacking the decoded images": "budget.phase.stacking",
          "the feature cache pass": "budget.phase.cache"}


def epochs_text(n: int) -> Text:
    return Text("budget.offer.epochs.one" if n == 1 else "budget.offer.epochs", n=n)


def smaller_size(image_size: int, ok) -> int | None:
    """The largest image size below ``image_size``, a multiple of 16 as on the page's slider, that passes ``ok(size,
    guess)``: first by the scaled counts (no meta pass), then confirmed, stepping down, with exact ones."""
    sizes = [v for v in range(512, 31, -16) if v < image_size]  # descending
    start = next((i for i, v in enumerate(sizes) if ok(v, True)), len(sizes) - 1)
    if start > 0 and ok(sizes[start - 1], False):  # the guess was cautious: one size up fits too
        return sizes[start - 1]
    return next((v for v in sizes[start:] if ok(v, False)), None)


def offers(cfg, why: str, fits) -> tuple[list[Text], bool]:
    """What to offer, best first, and whether it meets every limit (else only the one named by ``why``)."""
    prof = resnet_profile(cfg.arch, cfg.image_size)

    def size_fits(only, **more):
        return lambda v, guess: fits(only, image_size=v, profile=prof.scaled(v / cfg.image_size) if guess else None,
                                     **more)

    def one_knob(only: str | None) -> list[Text]:
        out = []
        if why == "memory":
            bs = largest(1, cfg.batch_size - 1, lambda v: fits(only, batch_size=v))
            out += [Text("budget.offer.batch_size", n=bs)] if bs else []
        if why == "work":
            ep = largest(1, cfg.epochs - 1, lambda v: fits(only, epochs=v))
            out += [epochs_text(ep)] if ep else []
        size = smaller_size(cfg.image_size, size_fits(only))
        return out + ([Text("budget.offer.size", size=size)] if size else [])

    options = one_knob(None)
    every_limit = bool(options)  # an offer that meets every limit, or (below) one that meets this limit only
    options = options or one_knob(why)
    if not options and why in ("memory", "work"):  # no one knob is enough: a smaller size, then the most that fits
        knob, lo = ("batch_size", 2) if why == "memory" else ("epochs", 1)
        size = smaller_size(cfg.image_size, size_fits(why, **{knob: lo}))
        best = size and largest(lo, getattr(cfg, knob), lambda v: fits(why, image_size=size, **{knob: v}))
        if best:
            offer = Text("budget.offer.batch_size", n=best) if knob == "batch_size" else epochs_text(best)
            options.append(Text("budget.offer.at_size", offer=offer, size=size))
    if not options:
        smaller = next((ARCHS[a].title for a in ARCHS if a != cfg.arch and fits(None, arch=a)), None)
        every_limit = smaller is not None
        options.append(Text("budget.offer.arch", title=smaller) if smaller else
                       Text("budget.offer.fewer_images") if cfg.image_counts() else Text("budget.offer.fewer_strategies"))
    return options, every_limit


def refusal(cfg, why: str, cost, budget, fits: Text) -> Exception:
    """The ``BudgetExceeded`` for a fine-tune over the limit ``why`` ("memory", "data" or "work")."""
    title = ARCHS[cfg.arch].title
    counts = cfg.image_counts()
    n_images = sum(counts) if counts else None
    images = Text("budget.images.one" if n_images == 1 else "budget.images", n=n_images)
    if why == "memory":
        need, limit = (cost.memory, budget.memory) if cost.memory > budget.memory else (cost.host, budget.host)
        where = Text("budget.where.step") if cost.what.startswith("training") else \
            Text(PHASES[cost.what]) if cost.what in PHASES else Text("budget.phase.other", phase=cost.what)
        key = "budget.finetune.memory_data" if counts and cost.data > 0.25 * need else "budget.finetune.memory"
        return error(BudgetExceeded, key, title=title, size=cfg.image_size, batch=cfg.batch_size, images=images,
                     need=show_bytes(need), where=where, limit=show_bytes(limit), fits=fits)
    if why == "data":
        return error(BudgetExceeded, "budget.finetune.data", images=images, size=cfg.image_size,
                     need=f"{cost.data / MB:,.0f} MB", limit=f"{cfg.max_decoded_mb:,} MB", fits=fits)
    n_s = len(cfg.strategies)
    return error(BudgetExceeded, "budget.finetune.work", title=title, size=cfg.image_size,
                 epochs=epochs_text(cfg.epochs), images=images, need=show_macs(cost.work),
                 limit=show_macs(budget.work), fits=fits,
                 strategies=Text("budget.strategies.one" if n_s == 1 else "budget.strategies", n=n_s))
