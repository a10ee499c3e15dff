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
    page.wait_for_timeout(500)  # let results fade in (cosmetic: the assertions before a shot never sleep)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=path, full_page=False)
    if os.environ.get("RESNET_UPDATE_SCREENSHOTS") == "1":  # the README's copy: 960 px wide, 256 colours
        from PIL import Image
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as im:
            small = im.convert("RGB").resize((960, round(im.height * 960 / im.width)), Image.LANCZOS)
            small.quantize(256).save(SCREENSHOTS / path.name, optimize=True)
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
    playwright.expect(page.locator("#classify-info")).to_contain_text("with pretrained weights", timeout=60_000)
    playwright.expect(label).not_to_contain_text("Waiting", timeout=60_000)
    assert label.inner_text().strip()
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
    shot(page, tmp_path, "features")
    no_error_toast(page)
    page.close()


def set_slider(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_finetune_curves_then_stop(browser, app_server, tmp_path):
    page = browser.new_page(locale="en-US", viewport={"width": 1280, "height": 1100})
    page.goto(app_server)
    open_tab(page, "Fine-tune")
    # A quick first run: two cheap strategies, two epochs, small images.
    page.get_by_label("all", exact=True).uncheck()
    page.get_by_label("last", exact=True).uncheck()
    page.get_by_label("replace", exact=True).check()
    set_slider(page, "ft-epochs", 2)
    set_slider(page, "ft-size", 64)
    page.locator("#ft-start").click()
    status = page.locator("#ft-status")
    playwright.expect(status).to_contain_text("Best:", timeout=120_000)
    playwright.expect(page.locator("#ft-curves img, #ft-curves svg, #ft-curves canvas").first).to_be_visible()
    playwright.expect(page.locator("#ft-results")).to_contain_text("4,004")
    shot(page, tmp_path, "finetune")
    # A long run, stopped from the page once it is training.
    page.get_by_label("all", exact=True).check()
    set_slider(page, "ft-epochs", 40)
    page.locator("#ft-start").click()
    playwright.expect(status).to_contain_text("train loss", timeout=120_000)
    page.locator("#ft-stop").click()
    playwright.expect(status).to_contain_text("Stopped", timeout=60_000)
    no_error_toast(page)
    page.close()


def test_labs_gradient_flow(browser, app_server, tmp_path):
    page = browser.new_page(locale="en-US", viewport={"width": 1280, "height": 1100})
    page.goto(app_server)
    open_tab(page, "Labs")
    page.locator("#labs-flow-button").click()
    playwright.expect(page.locator("#labs-flow-text")).not_to_be_empty(timeout=120_000)
    playwright.expect(page.locator("#labs-flow-plot img").first).to_be_visible()
    shot(page, tmp_path, "labs")
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
