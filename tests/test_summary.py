"""The layer table: the note's output sizes and FLOPs row, torchvision's published GFLOPS."""
import json
import subprocess
import sys

import pytest
from torchvision.models import get_model_weights

import resnet
from resnet.analysis.summary import totals


NOTE_GMACS = {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 3.8, "resnet101": 7.6, "resnet152": 11.3}


@pytest.mark.parametrize("arch", list(NOTE_GMACS))
def test_paper_v1_reproduces_the_notes_flops_row(arch):
    t = totals(resnet.layer_table(arch, stride_in_1x1=True))
    assert abs(t["macs"] / 1e9 - NOTE_GMACS[arch]) <= 0.1


@pytest.mark.parametrize("arch", list(resnet.ARCHS))
def test_default_matches_torchvision_published_ops_and_params(arch):
    meta = get_model_weights(arch).DEFAULT.meta
    t = totals(resnet.layer_table(arch))
    assert abs(t["macs"] / 1e9 - meta["_ops"]) / meta["_ops"] <= 0.01
    assert t["params"] == meta["num_params"]


def test_rows_and_output_sizes_at_224():
    table = resnet.layer_table("resnet50")
    assert [r["name"] for r in table] == ["conv1", "pool", "conv2_x", "conv3_x", "conv4_x", "conv5_x", "fc"]
    assert [r["output_size"] for r in table] == [(112, 112), (56, 56), (56, 56), (28, 28), (14, 14), (7, 7), (1, 1)]
    assert table[2]["block"] == "[1×1, 64; 3×3, 64; 1×1, 256] × 3"
    assert table[1]["params"] == 0 and table[1]["macs"] == 0
    assert set(table[0]) == {"name", "output_size", "block", "params", "macs"}


@pytest.mark.parametrize("size,expected", [(160, [80, 40, 40, 20, 10, 5]), (97, [49, 25, 25, 13, 7, 4])])
def test_output_sizes_at_other_inputs(size, expected):
    table = resnet.layer_table("resnet18", size)
    assert [r["output_size"][0] for r in table[:6]] == expected


def test_block_text_for_basic_and_grouped_blocks():
    assert resnet.layer_table("resnet34")[3]["block"] == "[3×3, 128; 3×3, 128] × 4"
    assert resnet.layer_table("resnext50_32x4d")[2]["block"] == "[1×1, 128; 3×3, 128, C=32; 1×1, 256] × 3"


def test_bad_image_size_is_refused():
    with pytest.raises(ValueError, match="at least 32"):
        resnet.layer_table("resnet18", 16)


@pytest.mark.slow  # trains or starts a process for a while: the slow tier
def test_cli_table_json_and_text():
    # Both commands at once: each spends most of its time importing torch on one core.
    json_run, text_run = (subprocess.Popen([sys.executable, "-m", "resnet", "table", *args], stdout=subprocess.PIPE,
                                           text=True)
                          for args in (["resnet18", "--json"], ["resnet152", "--stride-in-1x1"]))
    out, text = json_run.communicate(timeout=120)[0], text_run.communicate(timeout=120)[0]
    assert json_run.returncode == 0 and text_run.returncode == 0
    data = json.loads(out)
    assert data["rows"][0]["output_size"] == [112, 112]
    assert data["totals"]["params"] == 11_689_512
    assert "conv4_x" in text and "× 36" in text and "paper: 11.3 G" in text


@pytest.mark.parametrize("arch", ["resnet18", "resnext50_32x4d"])
def test_counted_macs_equal_torchs_flop_counter(arch):
    """Our hook count agrees with torch.utils.flop_counter (2 FLOPs per multiply-add) on every row."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from resnet.analysis.summary import _rows
    model = resnet.build_model(arch).eval()
    table = resnet.layer_table(arch, 128)
    x = torch.zeros(1, 3, 128, 128)
    with torch.inference_mode():
        for row, (name, modules, _) in zip(table, _rows(model, arch, False)):
            counter = FlopCounterMode(display=False)
            with counter:
                for m in modules:
                    x = m(x)
            assert row["name"] == name and row["macs"] == counter.get_total_flops() // 2


def test_layer_table_is_exact_while_other_threads_compute():
    """A server computes tables while other users run models: counts must not include their work,
    and their autograd must keep working (a process-wide FLOP-counting mode broke both)."""
    import threading
    import torch
    from resnet.analysis.summary import _measure
    _measure.cache_clear()
    alone = resnet.layer_table("resnet18", 96)
    model = resnet.build_model("resnet18")
    stop, errors = threading.Event(), []

    def busy():
        try:
            while not stop.is_set():
                x = torch.randn(2, 3, 32, 32, requires_grad=True)
                (g,) = torch.autograd.grad(model(x).sum(), x)
                assert g.shape == x.shape
        except Exception as e:  # pragma: no cover - the failure being tested for
            errors.append(e)

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        tables = []
        for _ in range(3):
            _measure.cache_clear()  # measure again each time, with the other thread running
            tables.append(resnet.layer_table("resnet18", 96))
    finally:
        stop.set()
        worker.join()
    assert not errors and all(t == alone for t in tables)


def test_layer_table_is_counted_on_the_meta_device():
    """ResNet-152 at 1024 px, cold: no real forward pass (that took seconds and about a gigabyte). Every tensor
    any operation makes while the table is computed lives on the meta device: no activation memory at all."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    from resnet.analysis.summary import _measure

    class Devices(TorchDispatchMode):
        seen: set = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.seen.update(t.device.type for t in tree_leaves(out) if hasattr(t, "device"))
            return out

    _measure.cache_clear()
    table = resnet.layer_table("resnet152", 1024)  # its time is bench/'s; what makes it quick is checked here
    assert table[-2]["output_size"] == (32, 32) and totals(table)["params"] == 60_192_808
    _measure.cache_clear()
    with Devices() as mode:
        assert resnet.layer_table("resnet152", 1024) == table
    assert mode.seen == {"meta"}
