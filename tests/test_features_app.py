"""The served /feature_maps endpoint, driven through gradio_client: outputs arrive, errors are sentences."""
import pytest
from gradio_client import Client, handle_file
from PIL import Image

pytestmark = pytest.mark.served


def test_feature_maps_for_a_real_photo(client, photos):
    grid, cam, info = client.predict(handle_file(str(photos["cheetah"])), "resnet18", "conv1", 8, "top class",
                                     api_name="/feature_maps")
    assert grid["type"] == "matplotlib" and grid["plot"].startswith("data:image/")
    assert Image.open(cam).size == (224, 224)
    for shape in ("64×112×112", "64×56×56", "128×28×28", "256×14×14", "512×7×7"):
        assert shape in info
    assert "**conv1**" in info and "Grad-CAM for **" in info
    assert "untrained network" not in info  # resnet18 has the test's checkpoint


def test_a_chosen_class_and_a_deeper_stage(client, photos):
    _, cam, info = client.predict(handle_file(str(photos["lion"])), "resnet18", "conv5_x", 64, "tiger",
                                  api_name="/feature_maps")
    assert "**tiger** (class 292" in info and "**conv5_x**" in info
    assert Image.open(cam).mode == "RGB"


def test_random_weights_are_flagged(client, photos):
    _, _, info = client.predict(handle_file(str(photos["bus"])), "resnet34", "conv3_x", 4, "top class",
                                api_name="/feature_maps")
    assert "untrained network" in info and "means nothing" in info and "weights fetch resnet34" in info


@pytest.mark.parametrize("args,expected", [
    (("resnet18", "conv2_x", 16, "unicorn-dragon"), "Unknown class"),
    (("resnet18", "conv9_x", 16, "top class"), "Unknown stage"),
    (("resnet18", "conv2_x", 500, "top class"), "between 4 and 64"),
])
def test_bad_settings_get_a_sentence(client, photos, args, expected):
    with pytest.raises(Exception) as e:
        client.predict(handle_file(str(photos["tower"])), *args, api_name="/feature_maps")
    assert expected in str(e.value) and "Traceback" not in str(e.value)


def test_a_text_file_renamed_jpg_is_refused_clearly(client, tmp_path, photos):
    bad = tmp_path / "holiday.jpg"
    bad.write_text("this is a text file, not a photo\n" * 5)
    with pytest.raises(Exception) as e:
        client.predict(handle_file(str(bad)), "resnet18", "conv2_x", 16, "top class", api_name="/feature_maps")
    message = str(e.value)
    assert "not an image" in message and "Traceback" not in message and len(message) < 500
    grid, _, _ = client.predict(handle_file(str(photos["grace_hopper"])), "resnet18", "conv2_x", 4, "top class",
                                api_name="/feature_maps")
    assert grid["type"] == "matplotlib"  # the server keeps serving


def test_a_chinese_browser_gets_the_stage_table_and_errors_in_chinese(app_server, photos):
    zh = Client(app_server, verbose=False, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    _, _, info = zh.predict(handle_file(str(photos["cheetah"])), "resnet18", "conv1", 4, "top class",
                            api_name="/feature_maps")
    assert "| 阶段 |" in info and "边缘、色块" in info and "Grad-CAM 针对" in info
    with pytest.raises(Exception) as e:
        zh.predict(handle_file(str(photos["tower"])), "resnet18", "conv2_x", 16, "unicorn-dragon",
                   api_name="/feature_maps")
    assert "未知的类别" in str(e.value) and "Traceback" not in str(e.value)
