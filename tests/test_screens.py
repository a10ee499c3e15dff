"""The page as a class sees it, in a real browser (Debian's Chromium driven by Playwright): the curves of a run stay
in view and change while it trains (its progress is drawn in a strip of its own, ``resnet.ui.progress``), and every
tab fits a phone's width, in English and in Chinese."""
import re
import shutil
from pathlib import Path

import pytest

from resnet.i18n import t

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed (.ci/run installs it)")]
WAIT_MS = 60_000  # every expectation and action waits on its condition up to a minute (busy CI machines)
RUN_MS = 300_000  # a run's next figure: a busy 2-core machine may be slow
playwright.expect.set_options(timeout=WAIT_MS)
TABS = ("lesson", "architecture", "classify", "features", "finetune", "labs", "about")
PHONE = {"width": 390, "height": 844}
HIDDEN = re.compile(r"\bhide\b")  # the class of Gradio's status tracker when no event of its component runs

ON_TOP = """(sel) => {
    // The element at the centre of ``sel``'s box, seen from the user's side: ``sel`` itself or something inside it,
    // unless something else (a progress overlay) covers it.
    const el = document.querySelector(sel);
    el.scrollIntoView({block: "center"});
    const r = el.getBoundingClientRect();
    const top = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
    return {covered: !(top && (top === el || el.contains(top))), top: top ? top.outerHTML.slice(0, 160) : null};
}"""


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


def new_page(browser, locale: str = "en-US", viewport=None, **options):
    context = browser.new_context(locale=locale, extra_http_headers={"Accept-Language": f"{locale},zh;q=0.9"
                                                                     if locale.startswith("zh") else locale},
                                  viewport=viewport or {"width": 1280, "height": 1100}, **options)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.set_default_navigation_timeout(WAIT_MS)
    return page


def set_slider(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def image_src(page, sel: str) -> str:
    return page.evaluate("(sel) => document.querySelector(sel).src", sel)


def visible_and_changing(page, plot: str) -> None:
    """Mid-run, the plot's image is the element on top at its centre (no overlay covers it), and a later figure of
    the same run replaces it; on top again then."""
    img = f"{plot} img"
    page.wait_for_selector(img, timeout=RUN_MS)
    seen = page.evaluate(ON_TOP, img)
    assert not seen["covered"], f"the plot is covered mid-run by {seen['top']}"
    first = image_src(page, img)
    page.wait_for_function("([sel, first]) => { const i = document.querySelector(sel); return i && i.src !== first; }",
                           arg=[img, first], timeout=RUN_MS)
    seen = page.evaluate(ON_TOP, img)
    assert not seen["covered"], f"the plot is covered mid-run by {seen['top']}"


def progress_shown(page, strip: str) -> None:
    """The run's progress is shown in its strip (Gradio's tracker there is not hidden)."""
    playwright.expect(page.locator(f"{strip} [data-testid=status-tracker]")).not_to_have_class(HIDDEN)


# ---------------------------------------------------------------------------- watch it learn

def test_the_finetune_curves_and_results_stay_in_view_and_change_while_it_trains(browser, app_server):
    page = new_page(browser)
    page.goto(f"{app_server}?tab=finetune")
    page.locator("#ft-start").wait_for()
    # head (features cached: quick) then scratch (long enough to be watched, then stopped): a run of this test alone.
    strategies = page.locator("#ft-strategies")
    for name in ("all", "last", "replace"):
        strategies.get_by_label(t(f"finetune.name_{name}", "en"), exact=True).uncheck()
    for name in ("head", "scratch"):
        strategies.get_by_label(t(f"finetune.name_{name}", "en"), exact=True).check()
    set_slider(page, "ft-epochs", 40)
    set_slider(page, "ft-size", 32)
    page.locator("#ft-start").click()
    status = page.locator("#ft-status")
    playwright.expect(status).to_contain_text("scratch", timeout=RUN_MS)  # head is done, scratch is training
    progress_shown(page, "#ft-progress")
    visible_and_changing(page, "#ft-curves")
    # The finished strategy's row is in the results table while the other one trains, and nothing covers it.
    results = page.locator("#ft-results")
    playwright.expect(results).to_contain_text("4,004")  # head's trainable parameters
    assert not page.evaluate(ON_TOP, "#ft-results")["covered"]
    assert "Done in" not in status.inner_text()  # all of that mid-run
    page.locator("#ft-stop").click()
    playwright.expect(status).to_contain_text("Stopped")
    playwright.expect(page.locator("#ft-progress [data-testid=status-tracker]")).to_have_class(HIDDEN)  # empty again
    page.context.close()


def test_the_race_curves_stay_in_view_and_change_while_it_trains(browser, app_server):
    page = new_page(browser)
    page.goto(f"{app_server}?tab=labs")
    page.locator("#labs-race-button").wait_for()
    steps = page.locator("#labs-race-steps input[type=number]")
    steps.fill("300")  # a race of this test alone, long enough to be watched, then stopped
    steps.press("Enter")
    page.locator("#labs-race-button").click()
    progress_shown(page, "#labs-race-progress")
    visible_and_changing(page, "#labs-race-plot")
    playwright.expect(page.locator("#labs-race-text")).to_contain_text("Training…")  # mid-run
    page.locator("#labs-race-stop").click()
    playwright.expect(page.locator("#labs-race-text")).to_contain_text(t("jobs.stopped", "en"))
    playwright.expect(page.locator("#labs-race-progress [data-testid=status-tracker]")).to_have_class(HIDDEN)
    page.context.close()


# ---------------------------------------------------------------------------- a phone is a first-class screen

FITS = """() => {
    // Whether the page scrolls sideways, and the elements that stick out of the viewport (outermost only).
    const W = window.innerWidth, out = [];
    for (const el of document.querySelectorAll(".gradio-container *")) {
        const r = el.getBoundingClientRect();
        if (!r.width || !el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})) continue;
        if (r.right <= W + 1 && r.left >= -1) continue;
        // Gradio's copy of the tab bar that it measures, off screen; a running event's moving ETA bar (clipped).
        if (el.closest(".visually-hidden, [data-testid=status-tracker]")) continue;
        const p = el.parentElement.getBoundingClientRect();
        if (p.right > W + 1 || p.left < -1) continue;
        const name = `${el.tagName}#${el.id}.${String(el.className).slice(0, 40)}`;
        out.push(`${name} ${Math.round(r.left)}…${Math.round(r.right)}`);
    }
    return {scroll: document.documentElement.scrollWidth, width: W, outside: out.slice(0, 8)};
}"""
MARKERS = {"lesson": "#lesson-explain h3", "architecture": "#arch-table", "classify": "#classify-button",
           "features": "#features-button", "finetune": "#ft-start", "labs": "#labs-flow-button",
           "about": "#tabs [role=tabpanel] h2"}


@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_every_tab_fits_a_phone(browser, app_server, locale):
    """At 390 × 844, no tab makes the page scroll sideways, nothing sticks out of the screen, the layer table's last
    column (multiply-adds) is on screen, and the block drawing takes the screen's width instead of sitting beside
    the text."""
    page = new_page(browser, locale, PHONE, is_mobile=True, has_touch=True)
    problems = {}
    for tab in TABS:
        page.goto(f"{app_server}?tab={tab}")
        page.locator(MARKERS[tab]).first.wait_for(state="visible")
        if tab == "architecture":
            playwright.expect(page.locator("#arch-table")).to_contain_text("conv5_x")
            header = page.locator("#arch-table [role=columnheader]").last
            playwright.expect(header).to_contain_text("FLOPs" if locale.startswith("zh") else "multiply-adds")
            box = header.bounding_box()
            assert 0 <= box["x"] and box["x"] + box["width"] <= PHONE["width"], f"{locale}: the last column is at {box}"
            diagram = page.locator("#arch-diagram")
            playwright.expect(diagram.locator("img")).to_be_visible()
            assert diagram.bounding_box()["width"] >= 0.85 * PHONE["width"], "the block drawing is a thumbnail"
        fits = page.evaluate(FITS)
        if fits["scroll"] > fits["width"] or fits["outside"]:
            problems[tab] = fits
    page.context.close()
    assert not problems, problems
