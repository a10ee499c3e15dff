"""Our ResNet against torchvision's: same keys, same shapes, same logits, same parameter counts."""
import pytest
import torch
import torchvision
from torchvision.models import get_model_weights

import resnet
from resnet.model import BasicBlock, Bottleneck

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
    x = torch.randn(2, 3, 64, 64)
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
