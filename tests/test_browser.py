"""The app in a real browser (Debian's Chromium driven by Playwright), as a teacher would use it."""
import os
import shutil
from pathlib import Path

import pytest

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "assets" / "screenshots"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


def shot(page, tmp_path: Path, name: str) -> Path:
    """Save a screenshot in the test's folder; RESNET_UPDATE_SCREENSHOTS=1 also refreshes the README's copies."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=path, full_page=False)
    if os.environ.get("RESNET_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SCREENSHOTS / path.name)
    assert path.stat().st_size > 10_000  # a real rendering, not a blank page
    return path


def no_error_toast(page) -> None:
    """Nothing on the page failed: Gradio shows any server error as a red toast."""
    errors = page.locator(".toast-body.error")
    assert errors.count() == 0, errors.first.inner_text()


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def choose(page, elem_id: str, option: str) -> None:
    """Pick ``option`` in a Gradio dropdown."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def test_architecture_and_classify(browser, app_server, photos, tmp_path):
    page = browser.new_page(locale="en-US", viewport={"width": 1280, "height": 1000})
    page.goto(app_server)
    table = page.locator("#arch-table")
    playwright.expect(table).to_contain_text("conv5_x", timeout=60_000)
    playwright.expect(page.locator("#arch-summary")).to_contain_text("ResNet-50")
    shot(page, tmp_path, "architecture")
    choose(page, "arch-depth", "ResNet-152")
    playwright.expect(page.locator("#arch-summary")).to_contain_text("ResNet-152", timeout=60_000)
    playwright.expect(table).to_contain_text("× 36")

    open_tab(page, "Classify")
    page.locator("#classify-image input[type=file]").set_input_files(str(photos["grace_hopper"]))
    page.locator("#classify-button").click()
    label = page.locator("#classify-label")
    playwright.expect(page.locator("#classify-info")).to_contain_text("pretrained ImageNet weights", timeout=60_000)
    playwright.expect(label).not_to_contain_text("Waiting", timeout=60_000)
    assert label.inner_text().strip()
    page.wait_for_timeout(500)  # let the result fade in before the screenshot (the assertions above do not sleep)
    shot(page, tmp_path, "classify")
    no_error_toast(page)
    page.close()


def test_feature_maps(browser, app_server, tmp_path):
    page = browser.new_page(locale="en-US", viewport={"width": 1280, "height": 1100})
    page.goto(app_server)
    open_tab(page, "Feature maps")
    page.locator("#features-button").click()  # the default example photo
    info = page.locator("#features-info")
    playwright.expect(info).to_contain_text("512×7×7", timeout=120_000)
    playwright.expect(page.locator("#features-grid img, #features-grid canvas, #features-grid svg").first).to_be_visible()
    page.wait_for_timeout(500)
    shot(page, tmp_path, "features")
    no_error_toast(page)
    page.close()


def test_chinese_locale_shows_chinese_labels(browser, app_server, tmp_path):
    page = browser.new_page(locale="zh-CN", viewport={"width": 1280, "height": 900})
    page.goto(app_server)
    playwright.expect(page.get_by_role("tab", name="网络结构")).to_be_visible(timeout=60_000)
    playwright.expect(page.get_by_role("tab", name="迁移学习")).to_be_visible()
    playwright.expect(page.locator("#arch-summary")).to_contain_text("参数", timeout=60_000)
    shot(page, tmp_path, "architecture_zh")
    page.close()
