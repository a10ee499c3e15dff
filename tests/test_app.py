"""The served app, driven through gradio_client: layer table, classify, and clear errors."""
import pytest
from gradio_client import Client, handle_file

from resnet.weights import categories

pytestmark = pytest.mark.served


def test_named_endpoints_exist(client):
    names = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ("/layer_table", "/classify", "/feature_maps", "/finetune"):
        assert name in names, name


def test_layer_table_for_two_depths(client):
    table, summary, figure = client.predict("resnet18", 224, "v1", api_name="/layer_table")
    rows = table["data"]
    assert table["headers"] == ["layer", "output size", "block", "params", "multiply-adds"]
    assert [r[0] for r in rows] == ["conv1", "pool", "conv2_x", "conv3_x", "conv4_x", "conv5_x", "fc", "total"]
    assert rows[2][1] == "56×56" and rows[2][2] == "[3×3, 64; 3×3, 64] × 2"
    assert rows[-1][3] == "11.69 M" and "1.8 G" in summary
    table, summary, _ = client.predict("resnet152", 160, "v1.5", api_name="/layer_table")
    rows = table["data"]
    assert rows[4][2].endswith("× 36") and rows[5][1] == "5×5" and "60.19 M" in rows[-1][3]
    assert "v1.5" in summary


def test_classify_a_real_photo_with_the_test_checkpoint(client, photos, weights_dir):
    label, info = client.predict(handle_file(str(photos["grace_hopper"])), "resnet18", api_name="/classify")
    names = set(categories())
    confidences = label["confidences"]
    assert len(confidences) == 5 and all(c["label"] in names for c in confidences)
    assert [c["confidence"] for c in confidences] == sorted((c["confidence"] for c in confidences), reverse=True)
    checkpoint = next(weights_dir.glob("resnet18-*.pth")).name
    assert "pretrained weights" in info and checkpoint in info
    assert str(weights_dir) not in info and "ImageNet" not in info  # a test-made file is not called ImageNet's


def test_classify_without_weights_says_so(client, photos):
    label, info = client.predict(handle_file(str(photos["bus"])), "resnet34", api_name="/classify")
    assert len(label["confidences"]) == 5
    assert "random weights" in info and "weights fetch resnet34" in info


@pytest.mark.parametrize("content,expected", [(b"", "empty"), (b"plain text, not a picture" * 4, "not an image"),
                                              (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "")])
def test_bad_uploads_get_a_sentence_and_the_server_keeps_serving(client, tmp_path, photos, content, expected):
    bad = tmp_path / "upload.jpg"
    bad.write_bytes(content)
    with pytest.raises(Exception) as e:
        client.predict(handle_file(str(bad)), "resnet18", api_name="/classify")
    message = str(e.value)
    assert expected in message and "Traceback" not in message and len(message) < 500
    label, _ = client.predict(handle_file(str(photos["cheetah"])), "resnet18", api_name="/classify")
    assert len(label["confidences"]) == 5


def test_a_chinese_browser_gets_the_tables_results_and_errors_in_chinese(app_server, photos):
    """Server-made text follows the browser's Accept-Language, from the same string table as the page."""
    zh = Client(app_server, verbose=False, headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"})
    table, summary, _ = zh.predict("resnet50", 224, "v1.5", api_name="/layer_table")
    assert table["headers"] == ["层名", "输出尺寸", "结构", "参数量", "乘加次数（即表中的 FLOPs）"]
    assert table["data"][-1][0] == "合计" and "参数量" in summary and "torchvision" in summary
    _, info = zh.predict(handle_file(str(photos["bus"])), "resnet34", api_name="/classify")
    assert "没有预训练权重" in info and "weights fetch resnet34" in info
    with pytest.raises(Exception) as e:
        zh.predict(None, "resnet18", api_name="/classify")
    assert "请先上传一张图片" in str(e.value) and "Traceback" not in str(e.value)
    with pytest.raises(Exception) as e:  # a budget sentence, made below the UI, in the visitor's language
        zh.predict(64, 64, 5, 14, api_name="/group_conv")
    assert "必须同时整除" in str(e.value)
