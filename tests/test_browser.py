"""The app in a real browser (Debian's Chromium driven by Playwright), as a teacher would use it."""
import os
import shutil
from pathlib import Path

import pytest

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "assets" / "screenshots"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed (.ci/run installs it)")
# CI machines are busy: every expectation and action waits on its condition for up to a minute, never 5 s.
WAIT_MS = 60_000
playwright.expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        b.new_page = _patient(b.new_page)
        yield b
        b.close()


def _patient(new_page):
    """``browser.new_page`` whose pages wait up to ``WAIT_MS`` for every action and navigation."""
    def make(*args, **kwargs):
        page = new_page(*args, **kwargs)
        page.set_default_timeout(WAIT_MS)
        page.set_default_navigation_timeout(WAIT_MS)
        return page
    return make


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
    """Click a tab until the page says it is selected: a click that lands while the app is still starting
    (its first events running) can be lost, and then the tab's content never appears."""
    tab = page.get_by_role("tab", name=name)
    for _ in range(10):
        tab.click()
        try:
            playwright.expect(tab).to_have_attribute("aria-selected", "true", timeout=6_000)
            return
        except AssertionError:
            continue
    playwright.expect(tab).to_have_attribute("aria-selected", "true")


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


# TODO(fine-tune tab: resnet/ui/tabs/finetune.py and assets/i18n/finetune.json, the training-engine engineer's files):
# the English it still shows on a Chinese page is printed, not failed; set this to False once it is translated.
FINETUNE_TOLERATED = False

VISIBLE_TEXT = """() => {
    // Every visible text node and the text in visible inputs (a dropdown's choice, a number box), outside code.
    const out = [];
    const seen = el => el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true});
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) {
        const el = walker.currentNode.parentElement;
        const text = walker.currentNode.textContent.trim();
        if (text && el && !el.closest("code, pre, script, style") && seen(el)) out.push(text);
    }
    for (const el of document.querySelectorAll("input, textarea")) {
        if (!seen(el) || ["checkbox", "radio", "range", "file"].includes(el.type)) continue;
        for (const text of [el.value, el.placeholder]) if (text && text.trim()) out.push(text.trim());
    }
    return out;
}"""


def english_on_page(page) -> list[str]:
    """The visible texts that hold English words a Chinese page should not show (``resnet.i18n.foreign_words``:
    names, units, code and the glossary's kept terms are allowed)."""
    from resnet.i18n import foreign_words
    return sorted({text for text in page.evaluate(VISIBLE_TEXT) if foreign_words(text)})


def test_chinese_locale_shows_no_english(browser, app_server, tmp_path):
    """A Chinese browser opens every tab (and every lab's section): nothing visible is English, except names, units,
    code and the note's own kept terms."""
    page = browser.new_page(locale="zh-CN", viewport={"width": 1280, "height": 900})
    page.goto(app_server)
    playwright.expect(page.get_by_role("tab", name="网络结构")).to_be_visible(timeout=60_000)
    playwright.expect(page.get_by_role("tab", name="迁移学习")).to_be_visible()
    playwright.expect(page.locator("#arch-summary")).to_contain_text("参数量", timeout=60_000)
    playwright.expect(page.locator("#arch-table")).to_contain_text("层名")
    playwright.expect(page.locator("#arch-table")).to_contain_text("合计")
    playwright.expect(page.locator("#device-line")).to_contain_text("推理 fp32")
    shot(page, tmp_path, "architecture_zh")
    found, tolerated = {}, {}
    for tab in ("网络结构", "图像分类", "特征图", "迁移学习", "实验", "说明"):
        open_tab(page, tab)
        playwright.expect(page.get_by_role("tab", name=tab)).to_have_attribute("aria-selected", "true")
        if tab == "实验":
            for section in ("labs-deep", "labs-bn", "labs-group"):  # closed at first
                page.locator(f"#{section} .label-wrap").first.click()
            playwright.expect(page.locator("#labs-group-button")).to_be_visible()
        panel = page.locator("[role=tabpanel]:visible").first
        playwright.expect(panel).not_to_be_empty()  # the tab's panel is drawn before its words are read
        english = english_on_page(page)
        if english:
            (tolerated if tab == "迁移学习" and FINETUNE_TOLERATED else found)[tab] = english
    if tolerated:
        print(f"TODO (fine-tune tab): English on the Chinese page: {tolerated}")
    assert not found, found
    no_error_toast(page)
    page.close()
