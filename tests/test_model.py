"""Our ResNet against torchvision's: same keys, same shapes, same logits, same parameter counts."""
import pytest
import torch
import torchvision
from torchvision.models import get_model_weights

import resnet
from resnet.models.resnet import BasicBlock, Bottleneck

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("arch", list(resnet.ARCHS))
def test_state_dict_round_trip_and_logits_match_torchvision(arch):
    torch.manual_seed(0)
    theirs = torchvision.models.get_model(arch).eval()
    ours = resnet.build_model(arch).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.load_state_dict(ours.state_dict(), strict=True)  # and back: keys and shapes identical
    # Random BN statistics so that the test exercises them (fresh ones are 0/1).
    with torch.no_grad():
        for m in theirs.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.0)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 32, 32)  # small: every layer still runs (conv5_x at 1 × 1), at a quarter of the work
    with torch.inference_mode():
        diff = (ours(x) - theirs(x)).abs().max().item()
    assert diff <= 1e-4, diff


@pytest.mark.parametrize("arch", list(resnet.ARCHS))
def test_parameter_count_equals_torchvision_metadata(arch):
    n = sum(p.numel() for p in resnet.build_model(arch).parameters())
    assert n == get_model_weights(arch).DEFAULT.meta["num_params"]


def test_blocks_follow_the_paper():
    m = resnet.build_model("resnet34")
    assert all(isinstance(b, BasicBlock) for b in m.layer1) and len(m.layer3) == 6
    m = resnet.build_model("resnet152")
    assert [len(getattr(m, f"layer{i}")) for i in range(1, 5)] == [3, 8, 36, 3]
    assert all(isinstance(b, Bottleneck) for b in m.layer4)
    # conv → BN: no conv feeding a BatchNorm has a bias.
    assert all(c.bias is None for c in m.modules() if isinstance(c, torch.nn.Conv2d))
    x = resnet.build_model("resnext50_32x4d").layer1[0].conv2
    assert x.groups == 32 and x.in_channels == 128


def test_stride_in_1x1_moves_the_stride():
    v1 = resnet.build_model("resnet50", stride_in_1x1=True).layer2[0]
    v15 = resnet.build_model("resnet50").layer2[0]
    assert v1.conv1.stride == (2, 2) and v1.conv2.stride == (1, 1)
    assert v15.conv1.stride == (1, 1) and v15.conv2.stride == (2, 2)
    # Same weights either way: the paper's v1 loads torchvision's checkpoint too.
    resnet.build_model("resnet50", stride_in_1x1=True).load_state_dict(torchvision.models.resnet50().state_dict())


def test_zero_init_residual_makes_blocks_identity_like():
    m = resnet.build_model("resnet18", zero_init_residual=True).eval()
    block = m.layer1[0]
    x = torch.rand(1, 64, 8, 8)  # non-negative, so the final ReLU keeps it
    with torch.inference_mode():
        assert torch.equal(block(x.clone()), x)
    assert all(b.bn3.weight.abs().sum() == 0 for b in resnet.build_model("resnet50", zero_init_residual=True).layer1)


def test_plain_network_has_no_shortcut():
    m = resnet.build_model("resnet18", residual=False).eval()
    block = m.layer1[0]
    with torch.no_grad():
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()
    with torch.inference_mode():
        assert block(torch.rand(1, 64, 8, 8)).abs().sum() == 0  # residual branch zero → nothing passes


def test_unknown_arch_is_a_clear_error():
    with pytest.raises(ValueError, match="resnet18"):
        resnet.build_model("resnet19")


def test_feature_info_names_the_papers_points():
    m = resnet.build_model("resnet50", 10)
    info = {f.name: (f.channels, f.reduction) for f in m.feature_info}
    assert list(info) == ["conv1", "pool", "conv2_x", "conv3_x", "conv4_x", "conv5_x", "avgpool", "fc"]
    assert info["conv1"] == (64, 2) and info["conv2_x"] == (256, 4) and info["conv5_x"] == (2048, 32)
    assert info["avgpool"] == (2048, None) and info["fc"] == (10, None)
    assert [f.channels for f in resnet.build_model("resnet18").feature_info][2:6] == [64, 128, 256, 512]
    assert m.feature_info[2].modules == ("layer1",)  # torchvision's attribute names stay (state_dict keys)


def test_forward_intermediates_is_the_forward_pass():
    torch.manual_seed(0)
    m = resnet.build_model("resnet18").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        every = m.forward_intermediates(x)
        assert list(every) == [f.name for f in m.feature_info]
        assert {k: tuple(v.shape[1:]) for k, v in every.items()} == {
            "conv1": (64, 32, 32), "pool": (64, 16, 16), "conv2_x": (64, 16, 16), "conv3_x": (128, 8, 8),
            "conv4_x": (256, 4, 4), "conv5_x": (512, 2, 2), "avgpool": (512,), "fc": (1000,)}
        assert torch.equal(every["fc"], m(x)) and torch.equal(every["conv5_x"], m.forward_features(x))
        by_hand = m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))))
        assert torch.equal(every["conv3_x"], by_hand)
        # Stop after the last point asked for, or run on and hand back the logits too.
        assert list(m.forward_intermediates(x, ("conv2_x", "conv1"))) == ["conv1", "conv2_x"]
        late = m.forward_intermediates(x, ("conv2_x",), stop_early=False)
        assert list(late) == ["conv2_x", "fc"] and torch.equal(late["fc"], every["fc"])
        # Resume from a point: the rest of the walk.
        rest = m.forward_intermediates(every["conv4_x"], ("avgpool", "fc"), after="conv4_x")
        assert torch.equal(rest["fc"], every["fc"]) and torch.equal(rest["avgpool"], every["avgpool"])
    with pytest.raises(ValueError, match="unknown stage layer3"):
        m.forward_intermediates(x, ("layer3",))
    with pytest.raises(ValueError, match="not after"):
        m.forward_intermediates(x, ("conv2_x",), after="conv4_x")
    assert not any(mod._forward_hooks or mod._forward_pre_hooks for mod in m.modules())


def test_the_bottleneck_width_formula_serves_the_model_the_table_and_the_drawing():
    from resnet.models.resnet import bottleneck_width
    from resnet.ui.figures.blocks import block_layers
    for arch, width in (("resnet50", 64), ("resnext50_32x4d", 128), ("wide_resnet50_2", 128),
                        ("resnext101_32x8d", 256)):
        spec = resnet.ARCHS[arch]
        assert bottleneck_width(64, spec.groups, spec.width_per_group) == width
        assert resnet.build_model(arch, device="meta").layer1[0].conv2.out_channels == width
        assert resnet.layer_table(arch)[2]["block"].startswith(f"[1×1, {width}; 3×3, {width}")
        assert str(width) in block_layers(arch)[0][1]  # the drawing's first 1×1 conv
