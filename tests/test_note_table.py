"""The note's table of five depths (``resnet.analysis.note_table``): its FLOPs row, torchvision's published GFLOPS,
the blocks as ``layer_table`` writes them; the bottleneck beside a basic block counted on the real modules; the
command line and the Architecture tab's ``/note_table``."""
import json
import subprocess
import sys

import pytest
import torch
from torchvision.models import get_model_weights

from resnet import layer_table
from resnet.analysis.note_table import (NOTE_ARCHS, block_comparison, block_facts, block_sentence, cell_lines,
                                        note_table)
from resnet.errors import BadSetting
from resnet.models.resnet import BasicBlock, Bottleneck

# The note's FLOPs row, as the note prints it (the paper's Table 1).
NOTE_ROW = {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 3.8, "resnet101": 7.6, "resnet152": 11.3}
LAYER_ROWS = ["conv1", "pool", "conv2_x", "conv3_x", "conv4_x", "conv5_x", "fc"]


@pytest.mark.unit
def test_v1_reproduces_the_notes_flops_row():
    table = note_table(v1=True)
    assert table.archs == tuple(NOTE_ROW) and table.titles[2] == "ResNet-50"
    for arch, paper in NOTE_ROW.items():
        # The paper rounded loosely (3.66 → 3.6, 7.57 → 7.6): every count is within 0.1 G of its number.
        assert abs(table.gmacs[arch] - paper) < 0.1, arch
    rows = {r.name: r for r in table.rows}
    assert rows["flops_note"].cells == tuple(f"{NOTE_ROW[a]}×10^9" for a in NOTE_ROW)
    assert rows["flops"].cells == tuple(f"{table.gmacs[a]:.2f}×10^9" for a in NOTE_ROW)


@pytest.mark.unit
def test_v15_gives_torchvisions_published_gflops_and_params():
    table = note_table(v1=False)
    for arch in NOTE_ARCHS:
        meta = get_model_weights(arch).IMAGENET1K_V1.meta
        assert round(table.gmacs[arch], 3) == meta["_ops"], arch  # published with three decimals
        assert table.params[arch] == meta["num_params"], arch
    # The bottleneck depths cost more in v1.5 (the stride moved to the 3×3), the basic ones the same.
    v1 = note_table(v1=True)
    assert table.gmacs["resnet18"] == v1.gmacs["resnet18"] and table.gmacs["resnet50"] > v1.gmacs["resnet50"]


@pytest.mark.unit
@pytest.mark.parametrize("v1", [True, False])
def test_rows_are_layer_tables_in_the_notes_order(v1):
    table = note_table(v1=v1)
    assert [r.name for r in table.rows] == [*LAYER_ROWS, "params", "flops", "flops_note"]
    for i, arch in enumerate(NOTE_ARCHS):
        lt = layer_table(arch, stride_in_1x1=v1)
        for row, measured in zip(table.rows, lt):
            assert row.cells[i] == measured["block"] and row.output_size == "{}×{}".format(*measured["output_size"])
    conv2 = table.rows[2]
    assert conv2.output_size == "56×56"
    assert conv2.cells[0] == "[3×3, 64; 3×3, 64] × 2" and conv2.cells[4] == "[1×1, 64; 3×3, 64; 1×1, 256] × 3"
    assert cell_lines(table.rows[4].cells[4]) == ["1×1, 256", "3×3, 256", "1×1, 1024", "× 36"]


@pytest.mark.unit
def test_text_and_markdown_show_every_row():
    table = note_table()
    text, md = table.text(), table.markdown()
    for word in ("conv5_x", "ResNet-152", "× 36", "1.8×10^9", "11.3×10^9", "3.86×10^9", "average pool"):
        assert word in text and word in md, word
    assert md.count("\n") == len(table.rows) + 1


@pytest.mark.unit
def test_the_block_comparison_counts_the_real_modules():
    blocks = block_comparison(256, 56)
    assert [b.kind for b in blocks] == ["basic", "bottleneck", "basic_inner"]
    direct = [BasicBlock(256, 256), Bottleneck(256, 64), BasicBlock(64, 64)]  # real modules, on the CPU
    x = {256: torch.randn(1, 256, 56, 56), 64: torch.randn(1, 64, 56, 56)}
    from torch.utils.flop_counter import FlopCounterMode
    for b, module in zip(blocks, direct):
        assert b.params == sum(p.numel() for p in module.parameters()), b.kind
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            module.eval()(x[b.channels])
        assert b.flops == counter.get_total_flops() == 2 * b.macs, b.kind
        assert b.macs == sum(m for _, _, m in b.layers)
    assert blocks[1].block == "[1×1, 64; 3×3, 64; 1×1, 256]" and blocks[0].block == "[3×3, 256; 3×3, 256]"
    facts = block_facts(blocks)
    assert facts.params_ratio == blocks[0].params / blocks[1].params > 10
    assert facts.macs_ratio == blocks[0].macs / blocks[1].macs > 10
    assert 0.9 < facts.inner_macs_ratio < 1  # about what ResNet-34's 64-channel block costs
    sentence = block_sentence(blocks)
    assert f"1/{facts.macs_ratio:.0f}" in sentence and f"{note_table().gmacs['resnet50']:.2f} G" in sentence
    assert "瓶颈块" in block_sentence(blocks, "zh-CN")


@pytest.mark.unit
@pytest.mark.parametrize("width,size", [(30, 56), (0, 56), (256, 0), (True, 56)])
def test_the_block_comparison_refuses_bad_settings(width, size):
    with pytest.raises(BadSetting):
        block_comparison(width, size)


def run_cli(*args) -> str:
    done = subprocess.run([sys.executable, "-m", "resnet", "table", *args], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow  # starts processes that import torch: the slow tier, as test_summary's CLI test
def test_cli_note_table_text_and_json():
    text = run_cli("--note")
    assert "FLOPs (note)" in text and "1.8×10^9" in text and "11.3×10^9" in text and "3.86×10^9" in text
    assert "bottleneck" in text and "1/17" in text
    data = json.loads(run_cli("--note", "--v15", "--json"))
    assert data["v1"] is False and round(data["gmacs"]["resnet50"], 1) == 4.1
    assert [r["name"] for r in data["rows"]][-3:] == ["params", "flops", "flops_note"]
    assert data["rows"][2]["cells"][2] == "[1×1, 64; 3×3, 64; 1×1, 256] × 3"
    assert data["block_comparison"]["blocks"][1]["params"] == 70_400
    done = subprocess.run([sys.executable, "-m", "resnet", "table"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "--note" in done.stderr  # a network's table still needs the network


@pytest.mark.served
def test_the_architecture_tab_serves_the_notes_table(client):
    value, plot, sentence = client.predict("v1", api_name="/note_table")
    assert value["headers"][2:] == ["ResNet-18", "ResNet-34", "ResNet-50", "ResNet-101", "ResNet-152"]
    rows = {r[0]: r for r in value["data"]}
    assert all(len(r) == 7 for r in value["data"])
    assert rows["FLOPs (note)"][2:] == ["1.8×10⁹", "3.6×10⁹", "3.8×10⁹", "7.6×10⁹", "11.3×10⁹"]
    assert rows["conv4_x"][6].split("\n") == ["1×1, 256", "3×3, 256", "1×1, 1024", "× 36"]
    assert plot is not None and "ResNet-50" in sentence
    value, _, _ = client.predict("v1.5", api_name="/note_table")
    assert {r[0]: r for r in value["data"]}["FLOPs"][4] == "4.09×10⁹"
