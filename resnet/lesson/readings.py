"""What a lesson step's run showed, in words chosen by its numbers, beside the student's prediction and the claim of
the note or the paper. Every sentence here quotes this run: nothing is said before the run that shows it."""
from __future__ import annotations

import math

from ..i18n import t
from .steps import LOSS_TIE, Step, close_enough


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return "∞" if value > 0 else "NaN"
    return f"{value:.3g}" if 1e-3 <= abs(value) < 1e4 else f"{value:.2e}"


def _space(L: str) -> str:
    """Between two sentences: a space in English, nothing in Chinese."""
    return "" if L.startswith("zh") else " "


def answer_text(step: Step, answer, L: str) -> str:
    """A committed answer as the page shows it."""
    if step.numeric:
        return f"{float(answer):,.4g}"
    return choice_text(step, answer, L)


def choice_text(step: Step, choice: str, L: str) -> str:
    if step.id == "transfer" and choice != "tie":
        return t(f"strategy.{choice}.title", L)
    return t(f"lesson.{step.id}.choice.{choice}", L)


def verdict_line(step: Step, answer, truth, L: str) -> str:
    """"You predicted X; this run says Y." — right or not."""
    if step.numeric:
        right = close_enough(float(answer), float(truth))
        said = f"{float(truth):,.4g}"
    else:
        right = answer == truth
        said = choice_text(step, truth, L)
    key = "lesson.right" if right else "lesson.wrong"
    return t(key, L, answer=answer_text(step, answer, L), truth=said)


def _race(n: dict, a: str, b: str, L: str, key: str) -> str:
    final = n["final"]
    if not (math.isfinite(final[a]) and math.isfinite(final[b])):
        return t("lesson.race_nan", L)
    gap = final[b] - final[a]
    variant = "level" if abs(gap) <= LOSS_TIE else ("deeper_worse" if gap > 0 else "deeper_better")
    return t(f"lesson.{key}.see.{variant}", L, a=final[a], b=final[b], gap=abs(gap), steps=n["steps"])


def reading(step: Step, n: dict, L: str) -> str:
    """The takeaway of this run's numbers."""
    sid = step.id
    if sid == "table":
        m34, m50 = n["resnet34"]["gmacs"], n["resnet50"]["gmacs"]
        return t("lesson.table.see", L, m18=n["resnet18"]["gmacs"], m34=m34, m50=m50, m101=n["resnet101"]["gmacs"],
                 m152=n["resnet152"]["gmacs"], ratio=m50 / m34, p34=n["resnet34"]["params_m"],
                 p50=n["resnet50"]["params_m"])
    if sid == "bottleneck":
        basic, bott, inner = n["basic"], n["bottleneck"], n["basic_inner"]
        return t("lesson.bottleneck.see", L, basic=basic["params"], bottleneck=bott["params"],
                 ratio=basic["params"] / bott["params"], basic_g=basic["macs"] / 1e9, bottleneck_g=bott["macs"] / 1e9,
                 inner=inner["params"], inner_g=inner["macs"] / 1e9)
    if sid == "degradation":
        return _race(n, "plain-20", "plain-56", L, "degradation")
    if sid == "residual":
        return _race(n, "ResNet-20", "ResNet-56", L, "residual")
    if sid == "bn_on_off":
        return _race(n, "ResNet-20", "ResNet-20 (no BN)", L, "bn_on_off")
    if sid == "gradient":
        none, bn = n["none"]["ratio"], n["bn"]["ratio"]
        first = t("lesson.gradient.see.fades" if none > 3 else "lesson.gradient.see.no_fade", L, ratio=_fmt(none))
        key = "bn_grows" if bn < 1 / 3 else ("bn_healthy" if bn <= 3 else "bn_fades")
        return first + _space(L) + t(f"lesson.gradient.see.{key}", L, ratio=_fmt(bn))
    if sid == "deep":
        res, plain = n["residual"], n["plain"] or {"bad": 0, "zero": 0, "layers": 0}
        key = "lesson.deep.see.ok" if res["bad"] == res["zero"] == 0 else "lesson.deep.see.broken"
        return t(key, L, depth=n["depth"], layers=res["layers"], bad=res["bad"] + res["zero"],
                 plain_bad=plain["bad"], plain_zero=plain["zero"])
    if sid == "bn_batch":
        a, b = n["2"]["acc"], n["32"]["acc"]
        truth = step.truth(n)
        return t(f"lesson.bn_batch.see.{truth}", L, small=a, large=b, count=n["val_count"])
    if sid == "transfer":
        return _transfer(step, n, L)
    if sid == "group_conv":
        normal, grouped = n["normal"], n["grouped"]
        return t("lesson.group_conv.see", L, normal=normal["params"], grouped=grouped["params"],
                 groups=grouped["groups"], ratio=normal["params"] / grouped["params"],
                 depthwise=n["depthwise"]["params"])
    raise KeyError(sid)


def _transfer(step: Step, n: dict, L: str) -> str:
    rows = sorted(n.get("summaries", []), key=lambda s: -s["best_val_acc"])
    if not rows:
        return t("lesson.transfer.see.none", L)
    scores = ("，" if L.startswith("zh") else ", ").join(f"{t('strategy.' + row['strategy'] + '.title', L)} **{row['best_val_acc']:.0%}**"
                       for row in rows)
    truth = step.truth(n)
    key = "lesson.transfer.see.tie" if truth == "tie" else "lesson.transfer.see.best"
    text = t(key, L, scores=scores, best=choice_text(step, truth, L) if truth != "tie" else "",
             chance=n.get("chance", 0.0))
    if not n.get("pretrained", True):
        text += _space(L) + t("lesson.transfer.see.random", L)
    return text


def takeaway(step: Step, n: dict, answer, L: str) -> str:
    """The whole "see" block: the prediction against the run, what the run shows, and the claim it tests."""
    parts = ["#### " + t("lesson.see", L), verdict_line(step, answer, step.truth(n), L), reading(step, n, L),
             t(f"lesson.{step.id}.claim", L)]
    return "\n\n".join(parts)
