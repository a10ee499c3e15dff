"""Where and in what precision training runs: bf16 on CPUs that compute it natively, only where it pays."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from resnet import build_model
from resnet import device as devices


CPU = torch.device("cpu")


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Force the CPU bf16 decision either way (RESNET_CPU_BF16), restoring the cached answer afterwards."""
    def force(on: bool):
        monkeypatch.setenv("RESNET_CPU_BF16", "1" if on else "0")
        devices.cpu_bf16_native.cache_clear()
    yield force
    monkeypatch.delenv("RESNET_CPU_BF16", raising=False)
    devices.cpu_bf16_native.cache_clear()


def test_cpu_bf16_only_for_large_inputs_and_never_for_inference(cpu_bf16):
    cpu_bf16(True)
    assert devices.amp_dtype(CPU, 128) is torch.bfloat16 and devices.amp_dtype(CPU) is torch.bfloat16
    assert devices.amp_dtype(CPU, devices.CPU_BF16_MIN_SIZE - 1) is None and devices.amp_dtype(CPU, 8) is None
    assert devices.uses_channels_last(CPU, 128) and not devices.uses_channels_last(CPU, 32)
    assert not devices.uses_channels_last(CPU, 128, amp=False)
    served = devices.prepare(build_model("resnet18"), CPU, amp=False)
    assert served.conv1.weight.is_contiguous()
    trained = devices.prepare(build_model("resnet18"), CPU, 128)
    assert trained.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = devices.layout(torch.zeros(2, 3, 128, 128), CPU, 128)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert devices.describe(CPU, 128).endswith("fp32 inference, bf16 mixed training")
    assert devices.describe(CPU, 32).endswith("fp32 inference, fp32 training")
    assert not devices.grad_scaler(CPU).is_enabled()
    cpu_bf16(False)
    assert devices.amp_dtype(CPU, 224) is None and not devices.uses_channels_last(CPU, 224)


@pytest.mark.slow  # trains or starts a process for a while: the slow tier
def test_a_bf16_training_step_on_the_cpu_learns(cpu_bf16):
    """The mixed-precision path really trains: loss on a fixed batch drops over a few steps, weights stay fp32."""
    cpu_bf16(True)
    torch.manual_seed(0)
    net = devices.prepare(build_model("resnet18", num_classes=2), CPU, 96)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x, y = devices.layout(torch.randn(8, 3, 96, 96), CPU, 96), torch.tensor([0, 1] * 4)
    losses = []
    for _ in range(6):
        with devices.autocast(CPU, 96):
            logits = net(x)
        assert logits.dtype is torch.bfloat16
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert net.fc.weight.dtype is torch.float32 and losses[-1] < losses[0] * 0.5, losses
