"""The app in Chinese, in a real browser: a zh-CN Chromium opens every tab, runs each tab's cheap default action
(the layer table, classifying an example, feature maps, two labs, a tiny fine-tune started from the page) and finds
no English on the page, only names, units and code (``resnet.i18n.foreign_words``; the ImageNet class names the
network answers with are its own vocabulary). Words inside plots are images here: ``test_i18n``'s
``test_every_figure_draws_its_words_in_chinese`` draws each figure in Chinese and reads its texts."""
import re
import shutil
from pathlib import Path

import pytest

playwright = pytest.importorskip("playwright.sync_api")
from test_i18n import english_in  # noqa: E402  (tests/ is on the path: the glossary's own checker)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed (.ci/run installs it)")]
WAIT_MS = 60_000  # every expectation and action waits on its condition up to a minute (busy CI machines)
playwright.expect.set_options(timeout=WAIT_MS)
CJK = re.compile(r"[\u4e00-\u9fff]")
# Gradio's own words that its front end writes in English whatever the language and no translation reaches (the
# status tracker of a running event; a toast's title is its type, capitalised): not the app's to translate.
GRADIO_UNTRANSLATED = re.compile(r"^((processing|queue: \d+/\d*) \||Error|Warning|Info)$")

VISIBLE_TEXT = """() => {
    // Every visible text node and the text of visible inputs (a dropdown's choice, a number box), outside code.
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


@pytest.fixture(scope="module")
def zh_page(app_server):
    """One Chinese browser tab on the launched app (Accept-Language and navigator.language zh-CN)."""
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        context = browser.new_context(locale="zh-CN", extra_http_headers={"Accept-Language": "zh-CN,zh;q=0.9"},
                                      viewport={"width": 1280, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.set_default_navigation_timeout(WAIT_MS)
        page.goto(app_server)
        yield page
        browser.close()


@pytest.fixture(scope="module")
def class_names() -> frozenset[str]:
    from resnet.weights import categories
    return frozenset(categories())


def english_on_page(page, class_names) -> dict[str, list[str]]:
    """Visible text → the English words in it. A text that is an ImageNet class (the top-5, the Grad-CAM target) is
    the network's own vocabulary; a Chinese sentence may quote one."""
    found = {}
    for text in page.evaluate(VISIBLE_TEXT):
        if text in class_names or GRADIO_UNTRANSLATED.match(text):
            continue
        words = english_in(text, class_names if CJK.search(text) else frozenset())
        if words:
            found[text] = words
    return found


def open_tab(page, name: str) -> None:
    """Click a tab until the page says it is selected (a click while the app starts can be lost)."""
    tab = page.get_by_role("tab", name=name)
    for _ in range(10):
        tab.click()
        try:
            playwright.expect(tab).to_have_attribute("aria-selected", "true", timeout=6_000)
            break
        except AssertionError:
            continue
    playwright.expect(tab).to_have_attribute("aria-selected", "true")
    playwright.expect(page.locator("[role=tabpanel]:visible").first).not_to_be_empty()


def no_error_toast(page) -> None:
    errors = page.locator(".toast-body.error")
    assert errors.count() == 0, errors.first.inner_text()


def set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def check(page, tab: str, class_names, found: dict) -> None:
    english = english_on_page(page, class_names)
    if english:
        found.setdefault(tab, {}).update(english)


def test_every_tab_in_chinese_after_its_default_action(zh_page, class_names, photos, tmp_path):
    from resnet.ui.tabs.labs import LIMITS as LAB_LIMITS
    page, found = zh_page, {}
    t = __import__("resnet.i18n", fromlist=["t"]).t

    # Lesson (the first tab): its first step, in Chinese.
    playwright.expect(page.locator("#lesson-explain")).to_contain_text(t("lesson.table.title", "zh-CN"))
    check(page, "lesson", class_names, found)

    # Architecture: the layer table and its totals (drawn on load).
    open_tab(page, t("tab.architecture", "zh-CN"))
    playwright.expect(page.locator("#arch-table")).to_contain_text("层名")
    playwright.expect(page.locator("#arch-summary")).to_contain_text("参数量")
    playwright.expect(page.locator("#device-line")).to_contain_text("推理")
    check(page, "architecture", class_names, found)

    # Classify: an example photo, classified.
    open_tab(page, t("tab.classify", "zh-CN"))
    page.locator("#classify-image input[type=file]").set_input_files(str(photos["grace_hopper"]))
    page.locator("#classify-button").click()
    playwright.expect(page.locator("#classify-info")).to_contain_text("ResNet-18")
    check(page, "classify", class_names, found)

    # Feature maps: the default example photo.
    open_tab(page, t("tab.features", "zh-CN"))
    page.locator("#features-button").click()
    playwright.expect(page.locator("#features-info")).to_contain_text("Grad-CAM", timeout=120_000)
    check(page, "features", class_names, found)

    # Fine-tune: a tiny run started from the page (two cheap strategies, one epoch, small images).
    open_tab(page, t("tab.finetune", "zh-CN"))
    check(page, "finetune (before Start)", class_names, found)
    # A refusal made deep in the data layer (a broken zip), shown on the page in Chinese.
    dataset = page.locator("#ft-dataset")
    dataset.get_by_label(t("finetune.dataset_upload", "zh-CN"), exact=True).check()
    broken = tmp_path / "损坏的数据.zip"  # the visitor's own file name is theirs, not the page's
    broken.write_bytes(b"these bytes are not a zip archive")
    page.locator("#ft-zip input[type=file]").set_input_files(str(broken))
    playwright.expect(page.locator("#ft-zip")).to_contain_text("损坏的数据")
    page.locator("#ft-start").click()
    toast = page.locator(".toast-body.error").first
    playwright.expect(toast).to_contain_text("ZIP 压缩包", timeout=120_000)
    check(page, "finetune (a broken zip)", class_names, found)
    toast.locator("[data-testid=toast-close]").click()
    playwright.expect(page.locator(".toast-body.error")).to_have_count(0)
    dataset.get_by_label(t("finetune.dataset_synthetic", "zh-CN"), exact=True).check()
    strategies = page.locator("#ft-strategies")
    for name in ("all", "last", "scratch"):
        box = strategies.get_by_label(t(f"finetune.name_{name}", "zh-CN"), exact=True)
        if box.is_checked():
            box.uncheck()
    for name in ("head", "replace"):
        box = strategies.get_by_label(t(f"finetune.name_{name}", "zh-CN"), exact=True)
        if not box.is_checked():
            box.check()
    set_number(page, "ft-epochs", 1)
    set_number(page, "ft-size", 64)
    page.locator("#ft-start").click()
    results = page.locator("#ft-results")
    playwright.expect(results).to_contain_text(t("finetune.name_head", "zh-CN"), timeout=180_000)
    playwright.expect(results).to_contain_text(t("finetune.name_replace", "zh-CN"))
    playwright.expect(page.locator("#ft-status")).to_contain_text("完成")
    # Try the fine-tuned model on a picture: it answers with the built-in set's classes, by their Chinese names.
    page.locator("#ft-try-image input[type=file]").set_input_files(str(photos["cheetah"]))
    page.locator("#ft-try-run").click()
    playwright.expect(page.locator("#ft-try-label")).to_contain_text(t("shape.circle", "zh-CN"), timeout=120_000)
    check(page, "finetune (after a run)", class_names, found)

    # Labs: gradient flow (open at first), a short training race, the BatchNorm lab and the group-convolution lab.
    open_tab(page, t("tab.labs", "zh-CN"))
    page.locator("#labs-flow-button").click()
    playwright.expect(page.locator("#labs-flow-text")).not_to_be_empty(timeout=120_000)
    steps = page.locator("#labs-race-steps input[type=number]")  # (a block "with the text" was the whole section)
    steps.fill(str(LAB_LIMITS["race_steps"][0]))
    steps.press("Enter")
    page.locator("#labs-race-button").click()
    race_over = t("labs.race.done", "zh-CN", seconds=0).split("0")[-1][:4]  # "秒完成。": the race is over
    playwright.expect(page.locator("#labs-race-text")).to_contain_text(race_over, timeout=180_000)
    playwright.expect(page.locator("#labs-race-text")).to_contain_text("普通网络")
    for section in ("labs-deep", "labs-bn", "labs-group"):  # closed at first: open them to read their words
        page.locator(f"#{section} .label-wrap").first.click()
    page.locator("#labs-bn-button").click()
    playwright.expect(page.locator("#labs-bn-batch")).not_to_be_empty(timeout=120_000)
    page.locator("#labs-group-button").click()
    playwright.expect(page.locator("#labs-group-text")).not_to_be_empty(timeout=120_000)
    check(page, "labs", class_names, found)

    # About: text only.
    open_tab(page, t("tab.about", "zh-CN"))
    check(page, "about", class_names, found)

    no_error_toast(page)

    assert not found, "\n".join(f"{tab}: {texts}" for tab, texts in found.items())
