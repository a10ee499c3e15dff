"""The labs, each on its own: real networks, real images, numbers checked against PyTorch and formulas."""
import io
import math

import pytest
import torch
from torch import nn

from resnet.analysis import labs
from resnet.ui.figures import labs as plots_labs
from resnet.fonts import use_cjk_fallback
from resnet.i18n import table

pytestmark = pytest.mark.unit


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
    net = labs.lab_net("cifar1202")
    assert net.depth == 1202
    assert round(labs.count_params(net) / 1e6, 1) == 19.4
    assert len(labs.main_path_layers(net)) == 1202


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
    model = labs.lab_copy(labs.build_model("resnet18"))
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
    model = labs.lab_copy(labs.build_model("resnet18"))
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
        assert c.macs == c.formula_macs == c.params * size * size
    normal, grouped, _ = costs
    assert normal.params == groups * grouped.params and normal.macs == groups * grouped.macs


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
