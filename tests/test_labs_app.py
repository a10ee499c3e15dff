"""The Labs tab's endpoints, driven once each through gradio_client on the launched app (small settings)."""
import pytest
from gradio_client import Client, handle_file

pytestmark = pytest.mark.served

LAB_ENDPOINTS = ("/gradient_flow", "/training_race", "/deep_network", "/bn_lab", "/bn_batch_run", "/group_conv")


def test_lab_endpoints_are_named(client):
    names = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in LAB_ENDPOINTS:
        assert name in names, name


def test_gradient_flow_endpoint(client):
    plot, text = client.predict(["cifar20"], ["none", "bn"], 8, api_name="/gradient_flow")
    assert plot and "ResNet-20" in text and "plain-20" in text
    assert "without BatchNorm" in text and "with BatchNorm" in text


def test_training_race_endpoint_streams_to_the_end(client):
    # 11 steps: a setting no other test runs (test_safety runs 10). A run another test left in the replay cache would
    # come back as its last state only, with no intermediate figures to see.
    job = client.submit(11, 8, 0.05, api_name="/training_race")
    outputs = job.result(timeout=120)
    plot, text = outputs
    assert plot and "Finished" in text
    for name in ("plain-20", "plain-56", "ResNet-20", "ResNet-56"):
        assert name in text
    assert len(job.outputs()) >= 2  # intermediate figures came before the last one


def test_deep_network_endpoint(client):
    plot, text = client.predict(2, "bn", api_name="/deep_network")
    assert plot and "ResNet-1202" in text and "19.42 M" in text and "plain-1202" in text


def test_bn_lab_endpoint(client, photos):
    steps_plot, steps_text, te_plot, te_text, stats_plot, stats_text = client.predict(
        handle_file(str(photos["lion"])), "bn1", 3, 16, api_name="/bn_lab")
    assert steps_plot and te_plot and stats_plot
    assert "channel 3" in steps_text and "nn.BatchNorm2d" in steps_text
    assert "Evaluation mode says" in te_text
    # The test checkpoint is an untrained init: its running statistics are gathered before eval mode is used.
    assert "running statistics were gathered" in te_text
    assert "batches of 1" in stats_text and "Conv bias before BN" in stats_text


def test_bn_lab_shows_the_last_channel_of_layer4_and_refuses_a_channel_a_layer_lacks(client, photos):
    _, steps_text, *_ = client.predict(handle_file(str(photos["lion"])), "layer4.0.bn1", 511, 8, api_name="/bn_lab")
    assert "`layer4.0.bn1`, channel 511" in steps_text
    with pytest.raises(Exception) as e:
        client.predict(handle_file(str(photos["lion"])), "bn1", 100, 8, api_name="/bn_lab")
    assert "has 64 channels: choose a channel from 0 to 63" in str(e.value) and "Traceback" not in str(e.value)


def test_bn_batch_run_endpoint_streams_to_a_reading(client):
    job = client.submit(16, api_name="/bn_batch_run")
    plot, text = job.result(timeout=300)
    assert plot and "Finished" in text and "from **2** images" in text and "from **32** images" in text
    assert any(k in text for k in ("learned more slowly", "within noise", "did better"))


def test_architecture_starts_on_the_papers_block(client):
    params = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/layer_table"]["parameters"]
    assert [p.get("parameter_default") for p in params][-1] == "v1"
    _, summary, _ = client.predict("resnet50", 224, "v1", api_name="/layer_table")
    assert "3.86 G" in summary and "3.8 G" in summary


def test_group_conv_endpoint_and_a_bad_setting(client):
    cost_plot, block_plot, text = client.predict(64, 64, 8, 14, api_name="/group_conv")
    assert cost_plot and block_plot
    assert "**8 groups**" in text and "4,608" in text and "ResNeXt-50 32×4d" in text
    assert text.count("✓ match") == 3 and "**3 of 3**" in text and "14,450,688 ÷ 2 = 7,225,344" in text
    with pytest.raises(Exception) as e:
        client.predict(64, 64, 5, 14, api_name="/group_conv")
    message = str(e.value)
    assert "divide" in message and "Traceback" not in message


def test_a_chinese_browser_gets_the_labs_results_and_refusals_in_chinese(app_server):
    zh = Client(app_server, verbose=False, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    _, _, text = zh.predict(64, 64, 8, 14, api_name="/group_conv")
    assert "**8 组**" in text and "逐通道卷积" in text and "4,608" in text
    with pytest.raises(Exception) as e:  # refused before it queues, in the visitor's language
        zh.predict(5, 16, 0.05, api_name="/training_race")
    assert "训练步数必须在 10 到 600 之间" in str(e.value) and "Traceback" not in str(e.value)
