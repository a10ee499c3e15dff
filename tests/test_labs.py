"""The labs, each on its own: real networks, real images, numbers checked against PyTorch and formulas."""
import dataclasses
import io
import math

import pytest
import torch
from torch import nn

from torch.utils.flop_counter import FlopCounterMode

from resnet.analysis import labs
from resnet.errors import BadSetting
from resnet.models.resnet import build_model
from resnet.ui.tabs import labs as labs_tab
from resnet.ui.figures import labs as plots_labs
from resnet.fonts import use_cjk_fallback
from resnet.i18n import table



def test_shapes_dataset_is_deterministic_and_balanced():
    x1, y1 = labs.shapes_dataset(64, 32, 0)
    labs.shapes_dataset.cache_clear()
    x2, y2 = labs.shapes_dataset(64, 32, 0)
    assert x1.shape == (64, 3, 32, 32) and torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.bincount(y1).tolist() == [8] * len(labs.SHAPES)
    assert not torch.equal(labs.shapes_dataset(64, 32, 1)[0], x1)


@pytest.mark.parametrize("name", ["cifar20", "cifar56", "resnet18", "resnet34"])
def test_main_path_has_the_named_number_of_weighted_layers(name):
    depth = labs.net_depth(name)
    for residual in (True, False):
        assert len(labs.main_path_layers(labs.lab_net(name, residual))) == depth


def test_cifar_net_shapes_and_projection_shortcuts():
    net = labs.lab_net("cifar20")
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    downsamples = [n for n, m in net.named_modules() if n.endswith("downsample")]
    assert downsamples == ["layer2.0.downsample", "layer3.0.downsample"]  # only where the shape changes
    assert not any("downsample" in n for n, _ in labs.lab_net("cifar20", False).named_modules())


def test_plain_first_layer_gradient_vanishes_at_depth_56():
    """Same seed, same batch: the plain net's first layer gets at least 10× less gradient."""
    profiles = labs.gradient_flow(("cifar56",), ("none",), batch_size=8)
    plain = next(p for p in profiles if not p.residual)
    res = next(p for p in profiles if p.residual)
    assert res.layers == plain.layers and len(plain.norms) == 56
    assert res.first >= 10 * plain.first
    assert labs.gradient_ratio(profiles, "cifar56", "none") >= 10
    # The faded signal starves every layer of the plain net, not only the first.
    assert max(plain.norms) < 1e-3 * min(res.norms)
    # Deterministic: the same call gives the same numbers.
    again = labs.gradient_flow(("cifar56",), ("none",), batch_size=8)
    assert [p.norms for p in again] == [p.norms for p in profiles]


def test_with_batchnorm_the_plain_gradient_grows_towards_the_input():
    """What the paper itself says: with BN the plain net's gradients do not vanish; here they grow towards
    the input, and more steeply than the residual net's."""
    profiles = labs.gradient_flow(("cifar56",), ("bn",), batch_size=8)
    plain = next(p for p in profiles if not p.residual)
    res = next(p for p in profiles if p.residual)
    assert plain.first > plain.last
    assert plain.first / plain.last > 10 * (res.first / res.last)


def test_resnet1202_parameter_count():
    net = labs.lab_net("cifar1202", device="meta")  # the same net, weightless: building its 19 M weights takes long
    assert net.depth == 1202
    assert round(labs.count_params(net) / 1e6, 1) == 19.4
    assert len(labs.main_path_layers(net)) == 1202


@pytest.mark.slow  # trains or starts a process for a while: the slow tier
def test_resnet1202_forward_and_backward_reach_the_first_layer():
    r = labs.deep_network("cifar1202", batch_size=2)
    assert r.residual.seconds < 60
    assert math.isfinite(r.residual.loss)
    assert math.isfinite(r.residual.first) and r.residual.first > 0
    assert labs.first_finite_fraction(r.residual) == 1.0
    # Without shortcuts, the first layer gets no usable gradient (it overflows or vanishes).
    plain = r.plain.first
    assert not (math.isfinite(plain) and 0 < plain < 1e6 * r.residual.first)


def test_bn_steps_equal_batchnorm2d(photos):
    model = labs.lab_copy(build_model("resnet18"))
    labs.illustrate_affine(model)
    x = labs.image_tensor(photos["cheetah"], 96)
    features, bn = labs.bn_input(model, x, "layer1.0.bn1")
    s = labs.bn_steps(features, bn, channel=5)
    reference = nn.BatchNorm2d(bn.num_features, eps=bn.eps)
    reference.load_state_dict(bn.state_dict())
    expected = reference.train()(features)[:, 5]
    assert s.max_abs_diff < 1e-4
    assert torch.allclose(s.y, expected, atol=1e-4)
    assert s.count == features[:, 5].numel()
    assert s.mean == pytest.approx(float(features[:, 5].mean()), abs=1e-5)
    assert s.var == pytest.approx(float(features[:, 5].var(unbiased=False)), rel=1e-4)
    assert s.gamma != 1.0 and s.beta != 0.0  # the scale-and-shift step is visible
    for a, b, c in s.samples:
        assert b == pytest.approx((a - s.mean) / math.sqrt(s.var + s.eps), abs=1e-4)
        assert c == pytest.approx(s.gamma * b + s.beta, abs=1e-4)
    assert int(bn.num_batches_tracked) == 0  # the model's own layer was not touched


def test_conv_bias_before_batchnorm_is_cancelled():
    check = labs.bias_cancellation()
    assert check.bias_norm > 1
    assert check.max_abs_diff < 1e-5
    assert check.bias_grad_norm < 1e-5 * check.weight_grad_norm
    assert check.running_mean_shift < 1e-5  # the bias only moves BN's running mean
    # Without the BatchNorm, the same bias does change the output: the check is not vacuous.
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    nn.init.normal_(conv.bias)
    x = torch.randn(2, 3, 8, 8)
    assert (conv(x) - nn.functional.conv2d(x, conv.weight, padding=1)).abs().max() > 0.1


def test_train_mode_depends_on_the_batch_and_eval_mode_does_not(photos):
    model = labs.lab_copy(build_model("resnet18"))
    pool = labs.image_pool([photos["lion"], photos["bus"], photos["tower"]], 16, size=64)
    assert labs.ensure_statistics(model, pool) and not labs.ensure_statistics(model, pool)
    x = labs.image_tensor(photos["cheetah"], 64)
    te = labs.train_vs_eval(model, x, pool, [f"c{i}" for i in range(1000)])
    assert te.distance["eval"] == 0
    assert te.distance["train_1"] > 0.01 and te.distance["train_batch"] > 0.01
    assert te.logit_change["eval"] == 0 and te.logit_change["train_1"] > 0.05
    with torch.no_grad():
        model.eval()
        alone, in_batch = model(x), model(torch.cat([x, pool[:7]]))[:1]
    assert torch.allclose(alone, in_batch, atol=1e-4)  # eval mode: the batch does not matter


def test_batch_statistics_get_closer_with_bigger_batches():
    torch.manual_seed(0)
    feats = torch.randn(128, 4, 1, 1) * 0.5 + torch.randn(128, 4, 8, 8)
    bs = labs.batch_statistics(feats, (1, 4, 16, 64), draws=64)
    assert bs.sizes == [1, 4, 16, 64]
    assert all(a > b for a, b in zip(bs.mean_error, bs.mean_error[1:]))
    assert bs.mean_error[0] / bs.mean_error[-1] > 4  # roughly 1/√b: 8× from 1 to 64


@pytest.mark.parametrize("cin,cout,groups,size", [(128, 128, 32, 28), (64, 256, 8, 14), (32, 64, 32, 7), (3, 6, 3, 5)])
def test_group_conv_counts_equal_the_formula(cin, cout, groups, size):
    costs = labs.conv_costs(cin, cout, groups, size)
    assert [c.kind for c in costs] == ["normal", "grouped", "depthwise"]
    for c in costs:
        assert c.params == c.formula_params == 9 * (c.cin // c.groups) * c.cout
        assert c.flops == 2 * c.formula_macs and c.macs == c.formula_macs == c.params * size * size
        assert c.matches
        # The measured FLOPs are PyTorch's own counter's, on a real conv with real numbers (not the meta device).
        conv = nn.Conv2d(c.cin, c.cout, 3, padding=1, groups=c.groups, bias=False)
        with FlopCounterMode(display=False) as counter:
            conv(torch.zeros(1, c.cin, size, size))
        assert counter.get_total_flops() == c.flops
    normal, grouped, _ = costs
    assert normal.params == groups * grouped.params and normal.macs == groups * grouped.macs


def test_group_conv_text_compares_each_row_and_reports_a_mismatch():
    costs = labs.conv_costs(64, 64, 8, 14)
    text = labs_tab.compare_text(costs, "en")
    assert text.count("✓ match") == 3 and "mismatch" not in text and "**3 of 3**" in text
    assert "14,450,688 ÷ 2 = 7,225,344 | 7,225,344" in text  # measured FLOPs, halved, beside the formula
    # A count that disagrees with the formula is reported as such, with both numbers.
    off = dataclasses.replace(costs[1], flops=costs[1].flops + 2)
    text = labs_tab.compare_text([costs[0], off, costs[2]], "en")
    assert text.count("✓ match") == 2 and "✗ mismatch" in text and "**2 of 3**" in text
    assert f"{off.flops:,} ÷ 2 = {off.macs:,} | {off.formula_macs:,}" in text
    assert "✗ 不一致" in labs_tab.compare_text([off], "zh-CN")


def test_group_conv_rejects_groups_that_do_not_divide():
    with pytest.raises(ValueError, match="divide"):
        labs.conv_costs(64, 64, 5, 8)


def test_resnet50_block_vs_resnext50_block():
    r, x = (labs.block_cost(a) for a in labs.BLOCK_PAIR)
    assert r.model_params == 25_557_032 and x.model_params == 25_028_904  # torchvision's published sizes
    assert round(r.model_macs / 1e9, 2) == 4.09 and round(x.model_macs / 1e9, 2) == 4.23
    assert r.layers[1][0] == "3×3, 64→64" and x.layers[1][0] == "3×3, 128→128, 32 groups"
    assert r.block_params == 69_632 and x.block_params == 70_144  # the same budget
    assert x.layers[1][1] * 8 == r.layers[1][1]  # twice the width, 32 groups: 4/32 of the 3×3's params


def test_training_race_yields_curves_as_it_trains():
    updates = list(labs.training_race(6, batch_size=8, every=2, nets=(("cifar20", False), ("cifar20", True))))
    assert [u.step for u in updates] == [2, 4, 6] and updates[-1].done
    assert set(updates[-1].losses) == {"plain-20", "ResNet-20"}
    assert all(len(v) == 3 and all(math.isfinite(x) for x in v) for v in updates[-1].losses.values())


def test_figures_draw_in_both_languages():
    use_cjk_fallback()  # as the app does
    profiles = labs.gradient_flow(("cifar20",), ("none", "bn"), batch_size=8)
    costs = labs.conv_costs(32, 32, 4, 8)
    blocks = [labs.block_cost(a) for a in labs.BLOCK_PAIR]
    for L in ("en", "zh-CN"):
        for fig in (plots_labs.gradient_flow_figure(profiles, L), plots_labs.conv_cost_figure(costs, L),
                    plots_labs.group_block_figure(blocks, costs[1], L)):
            fig.savefig(io.BytesIO(), format="png")


def test_keys_built_at_run_time_exist():
    keys = set(table())
    for k in labs.SETTINGS:
        assert f"labs.setting.{k}" in keys
    for k in labs.MODES:
        assert f"labs.mode.{k}" in keys
    for k in ("normal", "grouped", "depthwise"):
        assert f"labs.conv.{k}" in keys


def test_bn_channel_reaches_every_channel_of_the_chosen_layer():
    assert labs_tab.BN_CHANNELS == {"bn1": 64, "layer1.0.bn1": 64, "layer2.0.bn1": 128, "layer3.0.bn1": 256,
                                    "layer4.0.bn1": 512}
    assert labs_tab.bn_channel("layer4.0.bn1", 511) == 511
    slider = labs_tab.channel_slider("layer4.0.bn1", 300)
    assert slider.maximum == 511 and slider.value == 300
    slider = labs_tab.channel_slider("bn1", 300)  # back to a 64-channel layer: the value follows the maximum
    assert slider.maximum == 63 and slider.value == 63
    with pytest.raises(BadSetting, match="has 64 channels: choose a channel from 0 to 63"):
        labs_tab.bn_channel("bn1", 100)
    # The lab itself shows channel 511 of layer4's BatchNorm input.
    model = labs.lab_copy(build_model("resnet18"))
    features, bn = labs.bn_input(model, torch.rand(1, 3, 64, 64), "layer4.0.bn1")
    assert labs.bn_steps(features, bn, 511).channel == 511


def test_group_batchnorm_takes_its_statistics_from_groups_of_images():
    torch.manual_seed(0)
    x = torch.randn(8, 4, 5, 5) * 3 + 1
    plain = nn.BatchNorm2d(4)
    for g, expected in ((8, plain(x)), (0, plain(x)),
                        (2, torch.cat([nn.BatchNorm2d(4)(chunk) for chunk in x.split(2)]))):
        bn = labs.group_batchnorm(nn.Sequential(nn.BatchNorm2d(4)), g)[0]
        assert isinstance(bn, labs.GroupBatchNorm) and bn.group == g
        assert torch.allclose(bn(x), expected, atol=1e-5)
        assert int(bn.num_batches_tracked) == 1  # one running-statistics update per step, as nn.BatchNorm2d
    bn.eval()
    assert torch.allclose(bn(x), nn.functional.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                                          eps=bn.eps))


@pytest.mark.slow  # trains or starts a process for a while: the slow tier
def test_bn_batch_run_at_its_defaults_shows_what_its_text_says():
    """The lab's default run (80 steps): BN statistics from 2 images learn more slowly than from 32, by more than
    the noise, so the text says so."""
    updates = list(labs.bn_batch_run(labs_tab.DEFAULTS["bn_train_steps"], every=8))
    u = updates[-1]
    assert u.done and u.recorded_steps == list(range(8, 81, 8)) and set(u.loss) == {2, 32}
    assert u.val_count == labs.BN_RUN_VAL and u.chance == 1 / len(labs.SHAPES)
    se = math.sqrt(sum(a * (1 - a) for a in (u.val_acc[2][-1], u.val_acc[32][-1])) / u.val_count)
    assert u.loss[2][-1] > u.loss[32][-1]
    assert u.val_acc[32][-1] - u.val_acc[2][-1] > 2 * se
    text = labs_tab.bn_run_text(u, "en")
    assert "learned more slowly" in text and "within noise" not in text
    assert "学得更慢" in labs_tab.bn_run_text(u, "zh-CN")
    for L in ("en", "zh-CN"):
        plots_labs.bn_run_figure(u, labs.BN_RUN_BATCH, L).savefig(io.BytesIO(), format="png")


def _race(final: dict, mid: dict) -> labs.RaceUpdate:
    titles = ("plain-20", "plain-56", "ResNet-20", "ResNet-56")
    return labs.RaceUpdate(20, 20, 1.0, {k: [2.0, mid[k], final[k]] for k in titles}, [5, 10, 20], done=True)


def test_race_reading_says_what_the_curves_show():
    level = _race({"plain-20": 0.5, "plain-56": 1.5, "ResNet-20": 0.41, "ResNet-56": 0.40},
                  {"plain-20": 1.2, "plain-56": 1.7, "ResNet-20": 0.8, "ResNet-56": 1.0})
    text = labs_tab.race_reading(level, "en")
    assert "plain-56 ends **+1.00** above plain-20" in text and "level with it or below" in text
    assert "still +0.20 behind" in text
    behind = _race({"plain-20": 0.5, "plain-56": 1.5, "ResNet-20": 0.3, "ResNet-56": 0.5},
                   {"plain-20": 1.2, "plain-56": 1.7, "ResNet-20": 0.8, "ResNet-56": 1.0})
    text = labs_tab.race_reading(behind, "en")
    assert "ResNet-56 ends +0.20 above ResNet-20" in text and "has not caught up" in text
    assert "level" not in text and "no longer hurts" not in text
    no_degradation = _race({"plain-20": 0.5, "plain-56": 0.4, "ResNet-20": 0.3, "ResNet-56": 0.5},
                           {"plain-20": 1.2, "plain-56": 1.7, "ResNet-20": 0.8, "ResNet-56": 1.0})
    text = labs_tab.race_reading(no_degradation, "en")
    assert "does not show degradation" in text and "not clearly less" in text
    assert "NaN" not in labs_tab.race_reading(level, "zh-CN")


@pytest.mark.slow  # trains or starts a process for a while: the slow tier
def test_the_race_at_its_defaults_shows_what_the_text_says():
    """The explanation's claims, at the tab's defaults: plain-56 ends well above plain-20 (degradation), ResNet-56
    far below plain-56 and close to ResNet-20 (its gap less than half the plain nets')."""
    d = labs_tab.DEFAULTS
    *_, u = labs.training_race(d["race_steps"], batch_size=d["race_batch"], lr=d["race_lr"], every=6)
    f = u.final()
    plain_gap, res_gap = f["plain-56"] - f["plain-20"], f["ResNet-56"] - f["ResNet-20"]
    assert plain_gap > 0.5
    assert f["ResNet-56"] < f["plain-56"] - 0.5 and abs(res_gap) < plain_gap / 2
    assert f["plain-56"] < math.log(8) - 0.3  # plain-56 does leave chance level (ln 8): it learns, but behind
    assert "the degradation problem" in labs_tab.race_reading(u, "en")


def _profile(residual: bool, norms) -> labs.GradientProfile:
    return labs.GradientProfile("cifar1202", residual, "none", [str(i) for i in range(len(norms))], list(norms),
                                0.0, 0, 0.0)


def test_deep_reading_explains_overflow_and_zero_gradients():
    n = 1202
    none = labs.DeepResult(n, _profile(True, [math.nan] * n), _profile(False, [0.0] * n), 2, 32)
    text = labs_tab.deep_reading(none, "en")
    assert "neither net trains" in text and "600 blocks" in text and "exactly 0" in text and "both together" in text
    bn = labs.DeepResult(n, _profile(True, [1.0] * n), _profile(False, [math.inf] * 945 + [1.0] * (n - 945)), 2, 32)
    text = labs_tab.deep_reading(bn, "en")
    assert "945 of its 1202 layers" in text and "exploding" in text
    assert labs_tab.deep_reading(labs.DeepResult(n, _profile(True, [1.0] * n), _profile(False, [1.0] * n), 2, 32),
                                 "en") == ""
    use_cjk_fallback()
    for L in ("en", "zh-CN"):  # no line to draw: the figure says what happened, in words
        fig = plots_labs.deep_figure(none, L)
        words = " ".join(t.get_text() for t in fig.axes[0].texts)
        assert "ResNet-1202" in words and "plain-1202" in words
        fig.savefig(io.BytesIO(), format="png")


def test_architecture_summary_speaks_of_the_1x1_stride_only_for_bottleneck_nets():
    from resnet.ui.tabs.architecture import show_layer_table
    _, r50, _ = show_layer_table("resnet50", 224, "v1")
    assert "3.86 G" in r50 and "3.8 G" in r50 and "first 1×1 conv" in r50 and "v1.5" not in r50
    _, r18, _ = show_layer_table("resnet18", 224, "v1")
    _, r18b, _ = show_layer_table("resnet18", 224, "v1.5")
    assert r18 == r18b and "first 1×1" not in r18 and "the same network" in r18 and "1.8 G" in r18
