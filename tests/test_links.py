"""Shareable links (``resnet.ui.links``): ``?tab=<id>&<parameter>=<value>…`` restores a tab and its settings in a real
browser (Debian's Chromium driven by Playwright), a value that does not fit is ignored with a notice, and a tab's
Copy-link button gives a link that restores the same settings. Plus the query ↔ values conversion on a small app."""
import re
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import gradio as gr
import pytest

from resnet.i18n import t
from resnet.ui import links

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WAIT_MS = 60_000  # every expectation and action waits on its condition for up to a minute


# ---- the conversion, on a small app built like the real one ------------------------------------------------------

def _small_app():
    with gr.Blocks() as demo:
        with gr.Tabs():
            with gr.Tab("A", id="alpha"):
                mode = gr.Radio([("First", "one"), ("Second", "two")], value="one")
                picks = gr.CheckboxGroup(["all", "last", "head"], value=["all"])
                epochs = gr.Slider(1, 100, value=5, step=1)
                size = gr.Slider(32, 512, value=128, step=16)
                lr = gr.Number(0.05, minimum=0.001, maximum=1)
                count = gr.Number(3, precision=0, minimum=1)
                name = gr.Dropdown(["resnet18", "resnet50"], value="resnet18")
                target = gr.Dropdown(["top class", "tench"], value="top class", allow_custom_value=True)
                flag = gr.Checkbox(False)
                image = gr.Image(type="filepath")
                state = gr.State(None)
                later = gr.Dropdown([])  # choices only after a run: not linkable
                other_epochs = gr.Slider(1, 10, value=2, step=1)
                out = gr.Textbox()

                def main(mode, picks, epochs, image, size, lr, state, request: gr.Request = None):
                    return ""

                def second(count, name, target, flag, epochs, later):
                    return ""

                def third(name, epochs):  # the plain names are taken: reached as third.epochs
                    return ""

                gr.Button().click(second, [count, name, target, flag, epochs, later], out, api_name="second")
                gr.Button().click(main, [mode, picks, epochs, image, size, lr, state], out, api_name="alpha")
                gr.Button().click(third, [name, other_epochs], out, api_name="third")
                gr.Button().click(lambda m: "", [mode], out, api_name="hidden", api_visibility="private")
                preset = gr.Radio(["quick", "custom"], value="quick")  # a shortcut the visitor's own choice runs
                preset.input(lambda preset: 3, preset, epochs, api_name="preset")
            with gr.Tab("B", id="beta"):
                gr.Markdown("nothing to set")
    return demo, dict(mode=mode, picks=picks, epochs=epochs, size=size, lr=lr, count=count, name=name, target=target,
                      flag=flag, other_epochs=other_epochs)


@pytest.mark.unit
def test_the_query_names_come_from_the_handlers_and_values_convert_both_ways():
    demo, c = _small_app()
    tabs = links.collect(demo)
    assert list(tabs) == ["alpha", "beta"] and tabs["beta"].fields == []
    alpha = tabs["alpha"]
    # The endpoint named like the tab first, then the page's order; files, images, state, empty choices and a
    # preset (its settings are in the link) are out.
    assert [f.name for f in alpha.fields] == ["mode", "picks", "epochs", "size", "lr", "count", "name", "target",
                                              "flag", "third.epochs"]
    lookup = alpha.lookup()
    assert lookup["second.epochs"].component is c["epochs"] and lookup["alpha.epochs"].component is c["epochs"]
    assert lookup["third.epochs"].component is c["other_epochs"]

    values = [["last", "head"] if f.name == "picks" else None for f in alpha.fields]
    values[[f.name for f in alpha.fields].index("epochs")] = 3.0
    values[[f.name for f in alpha.fields].index("target")] = "great white shark"
    values[[f.name for f in alpha.fields].index("flag")] = True
    query = links.to_query(alpha, values)
    assert query == "tab=alpha&picks=last,head&epochs=3&target=great%20white%20shark&flag=true"

    params = {k: v[0] for k, v in parse_qs(query).items()}
    found = links.from_query(params, tabs)
    assert found.tab == "alpha" and found.notes == []
    assert found.values == {c["picks"]._id: ["last", "head"], c["epochs"]._id: 3,
                            c["target"]._id: "great white shark", c["flag"]._id: True}
    assert type(found.values[c["epochs"]._id]) is int

    good = {"mode": "two", "size": "64", "lr": "0.01", "count": "7", "name": "resnet50", "picks": "",
            "third.epochs": "10", "flag": "false"}
    found = links.from_query({"tab": "alpha", **good, "__theme": "dark", "view": "api"}, tabs)
    assert found.notes == []  # Gradio's own parameters are not the link's business
    assert found.values == {c["mode"]._id: "two", c["size"]._id: 64, c["lr"]._id: 0.01, c["count"]._id: 7,
                            c["name"]._id: "resnet50", c["picks"]._id: [], c["other_epochs"]._id: 10,
                            c["flag"]._id: False}


@pytest.mark.unit
def test_values_that_do_not_fit_are_ignored_with_a_reason():
    demo, c = _small_app()
    tabs = links.collect(demo)
    bad = {"mode": "three", "picks": "all,nope", "epochs": "0", "size": "100", "lr": "nan", "count": "2.5",
           "name": "resnet999", "flag": "maybe", "target": "x" * 500, "bogus": "1"}
    found = links.from_query({"tab": "alpha", **bad, "epochs2": "3"}, tabs)
    assert found.tab == "alpha" and found.values == {}
    why = {n.params.get("name", "").strip("`"): n for n in found.notes}
    assert set(why) == {*bad, "epochs2"}
    assert why["mode"].params["why"].key == "links.why.choices" and "two" in str(why["mode"])
    assert why["picks"].params["why"].key == "links.why.choices"
    assert why["epochs"].params["why"].key == "links.why.range" and "from 1 to 100" in str(why["epochs"])
    assert why["size"].params["why"].key == "links.why.step"  # 32 + 16k
    assert why["lr"].params["why"].key == "links.why.number"
    assert why["count"].params["why"].key == "links.why.whole"
    assert why["flag"].params["why"].key == "links.why.bool"
    assert why["target"].params["why"].key == "links.why.long"
    assert why["bogus"].key == "links.unknown"
    for note in found.notes:  # every reason reads in both languages
        assert note.render("en") and note.render("zh-CN") != note.render("en")

    assert links.from_query({"tab": "gamma", "epochs": "3"}, tabs).notes[0].key == "links.bad_tab"
    assert links.from_query({"epochs": "3"}, tabs).notes[0].key == "links.no_tab"
    assert links.from_query({}, tabs) == links.Restored(None, {}, [])
    assert links.from_query({"tab": "Beta"}, tabs).tab == "beta"
    text = links.notice_text(found.notes, "zh-CN")
    assert text.startswith("⚠ " + t("links.ignored", "zh-CN"))


# ---- in a real browser -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (.ci/run installs it)")
    playwright.expect.set_options(timeout=WAIT_MS)
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


def _page(browser, locale: str = "en-US"):
    page = browser.new_page(locale=locale, viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    page.set_default_navigation_timeout(WAIT_MS)
    return page


def _expect():
    from playwright.sync_api import expect
    return expect


def _selected(page, name: str) -> None:
    _expect()(page.get_by_role("tab", name=name)).to_have_attribute("aria-selected", "true")


def _copy_link(page, tab: str) -> str:
    """Press the tab's Copy-link button; the link it shows."""
    page.locator(f"#link-copy-{tab}").click()
    box = page.locator(f"#link-text-{tab} textarea, #link-text-{tab} input").first
    _expect()(box).to_have_value(re.compile(f"[?&]tab={tab}(&|$)"))
    return box.input_value()


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def _finetune_values(page) -> dict:
    strategies = page.locator("#ft-strategies")
    return {"epochs": page.locator("#ft-epochs input[type=number]").input_value(),
            "image_size": page.locator("#ft-size input[type=number]").input_value(),
            "arch": page.locator("#ft-arch input").input_value(),
            "checked": [s for s in ("all", "last", "head", "replace", "scratch")
                        if strategies.get_by_label(t(f"finetune.name_{s}", "en"), exact=True).is_checked()]}


def _expect_finetune(page, epochs: str, image_size: str, arch: str, checked: list[str]) -> None:
    expect = _expect()
    expect(page.locator("#ft-epochs input[type=number]")).to_have_value(epochs)
    expect(page.locator("#ft-size input[type=number]")).to_have_value(image_size)
    expect(page.locator("#ft-arch input")).to_have_value(arch)
    for s in ("all", "last", "head", "replace", "scratch"):
        box = page.locator("#ft-strategies").get_by_label(t(f"finetune.name_{s}", "en"), exact=True)
        (expect(box).to_be_checked() if s in checked else expect(box).not_to_be_checked())


@pytest.mark.browser
def test_a_finetune_link_restores_its_settings(browser, app_server):
    page = _page(browser)
    page.goto(app_server + "?tab=finetune&arch=resnet34&epochs=3&image_size=64&strategies=head,scratch")
    _selected(page, "Fine-tune")
    _expect_finetune(page, "3", "64", "ResNet-34", ["head", "scratch"])
    _expect()(page.locator("#link-notice")).to_be_hidden()  # nothing was ignored
    # The link on the page is the same experiment (and the address bar shows it too, once the page has read it).
    link = _query(_copy_link(page, "finetune"))
    assert {k: link[k] for k in ("tab", "arch", "epochs", "image_size", "strategies")} == \
        {"tab": "finetune", "arch": "resnet34", "epochs": "3", "image_size": "64", "strategies": "head,scratch"}
    page.close()


@pytest.mark.browser
def test_a_labs_link_restores_its_settings(browser, app_server):
    page = _page(browser)
    page.goto(app_server + "?tab=labs&steps=50&training_race.batch_size=24&lr=0.2&nets=cifar20,resnet18"
              "&setting=none&cin=64&groups=8")
    _selected(page, "Labs")
    link = _query(_copy_link(page, "labs"))  # what the page holds, read in the browser
    assert {k: link.get(k) for k in ("steps", "training_race.batch_size", "lr", "nets", "setting", "cin", "groups")} \
        == {"steps": "50", "training_race.batch_size": "24", "lr": "0.2", "nets": "cifar20,resnet18",
            "setting": "none", "cin": "64", "groups": "8"}
    assert link["batch_size"] != "24"  # the gradient-flow section's batch size is another setting
    page.close()


@pytest.mark.browser
def test_a_value_that_does_not_fit_is_ignored_with_a_notice(browser, app_server):
    expect = _expect()
    page = _page(browser)
    page.goto(app_server + "?tab=finetune&epochs=999&arch=resnet50&strategies=all,bogus&colour=red")
    _selected(page, "Fine-tune")
    notice = page.locator("#link-notice")
    expect(notice).to_be_visible()
    for word in ("epochs", "999", "strategies", "bogus", "colour"):
        expect(notice).to_contain_text(word)
    expect(page.locator("#ft-arch input")).to_have_value("ResNet-50")  # what fits is still applied
    assert page.locator("#ft-epochs input[type=number]").input_value() != "999"
    assert page.locator(".toast-body.error").count() == 0

    zh = _page(browser, locale="zh-CN")  # an unknown tab, on a Chinese page: the notice in Chinese, no error
    zh.goto(app_server + "?tab=nowhere&epochs=3")
    expect(zh.locator("#link-notice")).to_contain_text(t("links.ignored", "zh-CN"))
    expect(zh.locator("#link-notice")).to_contain_text("nowhere")
    expect(zh.locator("#lesson-explain")).to_contain_text(t("lesson.table.title", "zh-CN"))  # the first tab, as usual
    assert zh.locator(".toast-body.error").count() == 0
    zh.close()
    page.close()


@pytest.mark.browser
def test_copy_link_gives_a_link_that_restores_the_same_settings(browser, app_server):
    expect = _expect()
    page = _page(browser)
    page.goto(app_server)
    tab = page.get_by_role("tab", name="Fine-tune")
    for _ in range(10):  # a click that lands while the page starts can be lost
        tab.click()
        try:
            expect(tab).to_have_attribute("aria-selected", "true", timeout=6_000)
            break
        except AssertionError:
            continue
    box = page.locator("#ft-epochs input[type=number]")
    box.fill("7")
    box.press("Enter")
    page.locator("#ft-strategies").get_by_label(t("finetune.name_scratch", "en"), exact=True).check()
    page.locator("#ft-arch input").click()
    page.get_by_role("option", name="ResNet-34", exact=True).click()
    expect(page.locator("#ft-arch input")).to_have_value("ResNet-34")
    expect(page.locator("#ft-strategies").get_by_label(t("finetune.name_scratch", "en"), exact=True)).to_be_checked()
    before = _finetune_values(page)
    assert before["epochs"] == "7" and "scratch" in before["checked"]
    page.wait_for_url("**epochs=7**")  # the address bar follows the settings
    link = _copy_link(page, "finetune")
    assert _query(link)["epochs"] == "7" and _query(link)["arch"] == "resnet34"

    again = _page(browser)
    again.goto(link)
    _selected(again, "Fine-tune")
    _expect_finetune(again, before["epochs"], before["image_size"], before["arch"], before["checked"])
    expect(again.locator("#link-notice")).to_be_hidden()
    assert _query(_copy_link(again, "finetune")) == _query(link)
    again.close()
    page.close()


@pytest.mark.unit
def test_the_apps_tabs_link_their_api_parameters(app_env):
    """The real app: every tab has its Copy-link button, and each linked setting is named as ``gradio_client`` names
    the parameter of the endpoint it feeds (the Fine-tune tab's are the agreed ones)."""
    from resnet.ui import create_app
    demo, _ = create_app()
    tabs = links.collect(demo)
    assert list(tabs) == ["lesson", "architecture", "classify", "features", "finetune", "labs", "about"]
    names = {tab: [f.name for f in tl.fields] for tab, tl in tabs.items()}
    assert {"dataset", "strategies", "arch", "epochs", "image_size", "batch_size", "lr", "per_class"} <= \
        set(names["finetune"])
    assert {"arch", "image_size", "version"} <= set(names["architecture"])
    assert "step" in names["lesson"] and "answer" not in names["lesson"]  # a link opens a step, never commits
    assert {"steps", "training_race.batch_size", "lr", "nets"} <= set(names["labs"])
    api = {fn.api_name: fn for fn in links.named_events(demo)}
    for tl in tabs.values():
        for f in tl.fields:
            fn = api[f.endpoint]
            assert f.name.split(".")[-1] == links.parameter_names(fn)[fn.inputs.index(f.component)]
            assert links.tab_of(f.component) is tl.tab
    copy = [b for b in demo.blocks.values() if isinstance(b, gr.Button) and (b.elem_id or "").startswith("link-copy-")]
    assert sorted(links.tab_of(b).id for b in copy) == sorted(tabs)
