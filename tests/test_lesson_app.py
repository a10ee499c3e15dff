"""The Lesson tab on the launched app: through gradio_client (refusals, one run for a class) and in Chromium, every
step in English and in Chinese: the takeaway hidden until the run ends, the run's plot shown, the takeaway quoting
this run's numbers (read back through the API, a replay of the same run) and comparing the prediction."""
import math
import re
import threading
import time

import pytest

from resnet.i18n import t
from resnet.lesson import STEPS, choice_text
from resnet.train.jobs import JOBS
from resnet.ui.tabs.lesson import step_key
from test_links import browser  # noqa: F401  (tests/ is on the path: one Chromium per module, as there)

WAIT_MS = 60_000
RUN_MS = 900_000  # a lesson run on a busy 2-core machine (the transfer step trains three ways)
SEEN = """(running) => {
    // Whether the status says the run is going, and whether the takeaway is on screen, read at one moment.
    const status = document.querySelector("#lesson-status"), see = document.querySelector("#lesson-takeaway");
    return {running: !!status && status.innerText.includes(running),
            takeaway: !!see && see.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})};
}"""


def refused(client, *args) -> str:
    with pytest.raises(Exception) as e:
        client.predict(*args, api_name="/lesson_run")
    message = str(e.value)
    assert "Traceback" not in message and "/tmp" not in message
    return message


@pytest.mark.served
def test_a_run_needs_a_committed_prediction_a_real_step_and_one_of_its_answers(client):
    assert "Commit your prediction" in refused(client, 1, None)
    assert "99" in refused(client, 99, "same")  # the step list refuses it (Gradio's own check on the choices)
    assert "not one of this step's answers" in refused(client, 1, "<script>")
    assert "Choose or type your prediction" in refused(client, 2, "many")
    with pytest.raises(Exception, match="Choose or type"):
        client.predict(1, None, None, api_name="/lesson_commit")


@pytest.mark.served
def test_a_class_pressing_run_together_costs_one_run_and_each_gets_its_own_comparison(app_server):
    """Three students, three different predictions, the same step at the same moment: the server runs it once (a
    later press replays it), and each takeaway compares that student's own prediction."""
    from gradio_client import Client
    step = next(i for i, s in enumerate(STEPS, 1) if s.id == "gradient")
    JOBS.forget()
    before = JOBS.stats()["runs"]
    answers = ("plain_less", "same", "plain_more")
    results = {}

    def press(answer):
        results[answer] = Client(app_server, verbose=False).predict(step, answer, api_name="/lesson_run")
    threads = [threading.Thread(target=press, args=(a,)) for a in answers]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=600)
    assert set(results) == set(answers)
    assert JOBS.stats()["runs"] - before == 1
    numbers = [r[3] for r in results.values()]
    assert numbers[0] == numbers[1] == numbers[2]
    truth = STEPS[step - 1].truth(numbers[0])
    for answer, (_plot, _status, see, _numbers) in results.items():
        see = see["value"] if isinstance(see, dict) else see
        assert see.split("\n\n")[1].startswith("✓" if answer == truth else "✗")
        assert choice_text(STEPS[step - 1], answer, "en") in see


@pytest.mark.browser
def test_stop_ends_a_lesson_run_in_the_page_without_a_takeaway(browser, app_server):
    """Stop mid-run (the transfer step: the longest, and not run yet in this server, so it cannot be a replay): the
    page says it stopped, shows no takeaway, and the run is not kept as if it had finished."""
    from playwright.sync_api import expect
    number = next(i for i, s in enumerate(STEPS, 1) if s.id == "transfer")
    step = STEPS[number - 1]
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        page.goto(f"{app_server}?tab=lesson&step={number}")
        # The step is on the page before its choice is clicked (a click before the page's load events end is undone).
        expect(page.locator("#lesson-explain")).to_contain_text(t(f"lesson.{step.id}.title", "en"))
        said = choice_text(step, step.choices[0], "en")
        page.locator("#lesson-choice").get_by_text(said, exact=True).click()
        page.locator("#lesson-commit").click()
        expect(page.locator("#lesson-committed")).to_contain_text(said)
        expect(page.locator("#lesson-run")).to_be_enabled()
        page.locator("#lesson-run").click()
        status = page.locator("#lesson-status")
        expect(status).to_contain_text(t("lesson.running", "en", status="").split()[0], timeout=RUN_MS)
        page.locator("#lesson-stop").click()
        expect(status).to_contain_text(t("jobs.stopped", "en"))
        expect(page.locator("#lesson-takeaway")).to_be_hidden()
        expect(page.locator("#lesson-progress [data-testid=status-tracker]")).to_have_class(re.compile(r"\bhide\b"))
        assert JOBS.known(step_key(step)) != "cached"
    finally:
        context.close()


def quoted(step, n: dict) -> list[str]:
    """Numbers of this run the takeaway must quote, formatted as the takeaway formats them."""
    if step.id == "table":
        return [f"{n['resnet34']['gmacs']:.2f}", f"{n['resnet50']['gmacs']:.2f}"]
    if step.id == "bottleneck":
        return [f"{n['basic']['params']:,}", f"{n['bottleneck']['params']:,}"]
    if step.id in ("degradation", "residual", "bn_on_off"):
        a, b = {"degradation": ("plain-20", "plain-56"), "residual": ("ResNet-20", "ResNet-56"),
                "bn_on_off": ("ResNet-20", "ResNet-20 (no BN)")}[step.id]
        values = [n["final"][a], n["final"][b]]
        return [f"{v:.3f}" for v in values] if all(isinstance(v, float) and math.isfinite(v) for v in values) else []
    if step.id == "gradient":
        return [f"{n['none']['ratio']:.3g}" if 1e-3 <= abs(n["none"]["ratio"]) < 1e4 else f"{n['none']['ratio']:.2e}"]
    if step.id == "deep":
        return [str(n["residual"]["layers"])]
    if step.id == "bn_batch":
        return [f"{n['2']['acc']:.1%}", f"{n['32']['acc']:.1%}"]
    if step.id == "transfer":
        return [f"{s['best_val_acc']:.0%}" for s in n["summaries"]]
    if step.id == "group_conv":
        return [f"{n['grouped']['params']:,}"]
    raise KeyError(step.id)


@pytest.mark.browser
@pytest.mark.timeout(3600)  # English runs all ten steps (minutes on a busy 2-core machine); Chinese replays them
@pytest.mark.parametrize("L", ["en", "zh-CN"])
def test_every_lesson_step_in_the_browser_predict_run_see(browser, app_server, client, L):
    """English first: every step runs; Chinese then replays the same runs (the runs are shared across languages)."""
    from playwright.sync_api import expect
    context = browser.new_context(locale=L, extra_http_headers={"Accept-Language": f"{L},en;q=0.5"},
                                  viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        for number, step in enumerate(STEPS, 1):
            started = time.perf_counter()
            page.goto(f"{app_server}?tab=lesson&step={number}")
            expect(page.locator("#lesson-explain")).to_contain_text(t(f"lesson.{step.id}.title", L))
            takeaway = page.locator("#lesson-takeaway")
            expect(takeaway).to_be_hidden()
            if step.numeric:
                answer = 10.0
                page.locator("#lesson-number input").fill("10")
                said = "10"
            else:
                answer = step.choices[0]
                said = choice_text(step, answer, L)
                page.locator("#lesson-choice").get_by_text(said, exact=True).click()
            page.locator("#lesson-commit").click()
            expect(page.locator("#lesson-committed")).to_contain_text(said)
            run = page.locator("#lesson-run")
            expect(run).to_be_enabled()
            run.click()
            # While it runs (or, for the instant steps, until it ends) the takeaway stays hidden.
            status = page.locator("#lesson-status")
            expect(status).to_contain_text(re.compile(r"\S"), timeout=RUN_MS)
            # Both read at one moment: a replay ends at once, so two separate reads could straddle its end.
            seen = page.evaluate(SEEN, t("lesson.running", L, status="").split()[0])
            assert not (seen["running"] and seen["takeaway"]), (step.id, L, seen)
            expect(takeaway).to_be_visible(timeout=RUN_MS)
            expect(page.locator("#lesson-plot img").first).to_be_visible()
            text = takeaway.inner_text()
            # The same run, read back through the API (a replay): its numbers are the ones the takeaway quotes.
            *_, numbers = client.predict(number, str(answer), api_name="/lesson_run")
            for value in quoted(step, numbers):
                assert value in text, (step.id, L, value, text)
            truth = step.truth(numbers)
            right = (abs(answer - truth) <= 0.25 * abs(truth)) if step.numeric else answer == truth
            compared = next(line for line in text.splitlines() if said in line)  # the prediction, compared
            assert compared.startswith("✓" if right else "✗"), (step.id, text)
            assert t(f"lesson.{step.id}.claim", L)[:20] in text
            print(f"lesson step {number} ({step.id}, {L}): {time.perf_counter() - started:.0f} s")
    finally:
        context.close()
