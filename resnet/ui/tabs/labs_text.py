"""The Labs tab's words: each lab's numbers as lines, and its reading, the sentence chosen by what the run showed
(never said before the run that shows it)."""
from __future__ import annotations

import math

from ...analysis import labs
from ...i18n import t
from ..figures import labs as plots


def sci(v: float) -> str:
    if v == 0:
        return "0"
    if not math.isfinite(v):
        return "∞" if v > 0 else "NaN"
    return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 else f"{v:.2e}"


def flow_reading(profiles: list, L: str) -> list[str]:
    """What the run shows, from its numbers, for each setting's deepest pair: the plain net's first layer starved
    (vanishing), flooded (growing towards the input), or level with the residual net's (within a factor of 10)."""
    readings = []
    for setting in dict.fromkeys(p.setting for p in profiles):
        deepest = max((p for p in profiles if p.setting == setting), key=lambda p: len(p.norms)).net
        by = {p.residual: p for p in profiles if p.net == deepest and p.setting == setting}
        ratio = labs.gradient_ratio(profiles, deepest, setting)  # residual / plain, first layer
        names = dict(setting=t(f"labs.setting.{setting}", L), res=by[True].title,
                     plain=plots.net_name(by[False].title, L))
        if math.isnan(ratio):  # an overflowed gradient: the plot's red band says it
            continue
        if ratio > 10:
            readings.append(t("labs.flow.reading_vanish", L, ratio=sci(ratio), **names))
        elif ratio < 0.1:
            readings.append(t("labs.flow.reading_grow", L, ratio=sci(1 / ratio if ratio else math.inf), **names))
        else:
            readings.append(t("labs.flow.reading_close", L, **names))
    return readings


def race_reading(update: labs.RaceUpdate, L: str) -> str:
    """What the finished race's curves show, from their numbers: the plain nets' gap (degradation) and the
    residual nets' gap, at the end and half-way."""
    final = update.final()
    titles = ("plain-20", "plain-56", "ResNet-20", "ResNet-56")
    if not all(k in final for k in titles):
        return ""
    if not all(math.isfinite(final[k]) for k in titles):
        return t("labs.race.reading_nan", L)
    mid = (len(update.recorded_steps) - 1) // 2
    plain_gap = final["plain-56"] - final["plain-20"]
    res_gap = final["ResNet-56"] - final["ResNet-20"]
    mid_gap = update.losses["ResNet-56"][mid] - update.losses["ResNet-20"][mid]
    lines = ["**" + t("labs.race.reading", L) + "**",
             t("labs.race.reading_plain" if plain_gap > 0 else "labs.race.reading_plain_none", L, gap=plain_gap)]
    if res_gap <= 0.05:  # level within a hair of smoothed loss, or below
        key = "labs.race.reading_res_level"
    elif plain_gap > 0 and res_gap < plain_gap / 2:
        key = "labs.race.reading_res_behind"
    else:
        key = "labs.race.reading_res_unclear"
    lines.append(t(key, L, gap=res_gap, plain_gap=plain_gap, mid=update.recorded_steps[mid], mid_gap=mid_gap))
    if key == "labs.race.reading_res_level" and mid_gap > 0:
        lines[-1] += ("" if L.startswith("zh") else " ") + t("labs.race.reading_caught_up", L,
                                                            mid=update.recorded_steps[mid], mid_gap=mid_gap)
    return "\n\n".join(lines)


def deep_reading(r: labs.DeepResult, L: str) -> str:
    """What happened to each net's gradients, said from the counts: overflow, exactly zero, or fine."""
    def counts(p):
        bad = sum(not math.isfinite(v) for v in p.norms)
        return bad, sum(v == 0 for v in p.norms), len(p.norms)
    res_bad, res_zero, n = counts(r.residual)
    plain_bad, plain_zero, _ = counts(r.plain)
    if res_bad == res_zero == 0 and plain_bad:
        return t("labs.deep.reading_bn", L, bad=plain_bad, depth=n)
    if res_bad == n and plain_zero == n:
        return t("labs.deep.reading_none", L, depth=n, blocks=(r.depth - 2) // 2)
    return ""


def steps_text(s: labs.BNSteps, layer: str, illustrative: bool, L: str) -> str:
    rows = "\n".join(f"| {a:.4f} | {b:.4f} | {c:.4f} |" for a, b, c in s.samples)
    text = t("labs.bn.steps", L, layer=layer, channel=s.channel, m=s.count, mean=s.mean, var=s.var, eps=s.eps,
             gamma=s.gamma, beta=s.beta, diff=sci(s.max_abs_diff))
    text += f"\n\n| x | x̂ | y |\n|---:|---:|---:|\n{rows}"
    if illustrative:
        text += "\n\n" + t("labs.bn.illustrative", L)
    return text


def train_eval_text(te: labs.TrainEval, pretrained: bool, gathered: bool, L: str) -> str:
    text = t("labs.bn.train_eval", L, eval=te.top1["eval"], train_1=te.top1["train_1"],
             tv_1=te.distance["train_1"], train_batch=te.top1["train_batch"], tv_batch=te.distance["train_batch"],
             z_1=te.logit_change["train_1"], z_batch=te.logit_change["train_batch"])
    if not pretrained:
        text += "\n\n" + t("labs.bn.random_weights", L)
    if gathered:
        text += " " + t("labs.bn.gathered", L)
    return text


def batch_text(bs: labs.BatchStats, L: str) -> str:
    return t("labs.bn.batch", L, small=bs.sizes[0], small_err=bs.mean_error[0], big=bs.sizes[-1],
             big_err=bs.mean_error[-1], small_std=bs.std_error[0], big_std=bs.std_error[-1])


def bias_text(b: labs.BiasCheck, L: str) -> str:
    return t("labs.bn.bias", L, diff=sci(b.max_abs_diff), bias=b.bias_norm, bias_grad=sci(b.bias_grad_norm),
             weight_grad=sci(b.weight_grad_norm))


def bn_run_text(u: labs.BNRunUpdate, L: str) -> str:
    """The run's end, from its numbers: loss and accuracy of both nets, and which learned more (beyond noise)."""
    small, big = min(u.loss), max(u.loss)
    sl, bl = u.loss[small][-1], u.loss[big][-1]
    sa, ba = u.val_acc[small][-1], u.val_acc[big][-1]
    se = math.sqrt((sa * (1 - sa) + ba * (1 - ba)) / u.val_count)  # standard error of the difference
    text = t("labs.bn.run_done", L, steps=u.steps, seconds=u.seconds, small=small, big=big, small_loss=sl,
             big_loss=bl, small_acc=sa, big_acc=ba, chance=u.chance, n=u.val_count, se=se)
    if ba - sa > 2 * se and bl < sl:
        key = "labs.bn.run_worse"
    elif sa - ba > 2 * se and sl < bl:
        key = "labs.bn.run_better"
    else:
        key = "labs.bn.run_tied"
    return text + "\n\n" + t(key, L, small=small, big=big)


def compare_text(costs: list[labs.ConvCost], L: str) -> str:
    """Each conv's measured counts beside the formula's, row by row, and how many rows agree."""
    rows = [t("labs.group.compare_head", L), "|---|---:|---:|---:|---:|---|"]
    for c in costs:
        rows.append(f"| {t(f'labs.conv.{c.kind}', L)} (g={c.groups}) | {c.params:,} | {c.formula_params:,} | "
                    f"{c.flops:,} ÷ 2 = {c.macs:,} | {c.formula_macs:,} | "
                    f"{t('labs.group.match' if c.matches else 'labs.group.mismatch', L)} |")
    agree = sum(c.matches for c in costs)
    return "\n".join(rows) + "\n\n" + t("labs.group.compare_verdict", L, agree=agree, rows=len(costs))
