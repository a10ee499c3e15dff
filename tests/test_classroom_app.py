"""A live class in Chromium: a teacher's page and two students' pages on the launched app. The students follow a step
change, one breaks away and snaps back; a student's page cannot drive the room (no key, a wrong key, a raw HTTP
call); the students' predictions reach the teacher's screen and not the other student's, and the reveal shows the
class's answers on the students' screens."""
import re
import shutil
import uuid
from pathlib import Path

import httpx
import pytest

from resnet.classroom import ROOMS
from resnet.i18n import t
from resnet.lesson import STEPS, choice_text

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WAIT_MS = 60_000
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed (.ci/run installs it)")]


def title(number: int) -> str:
    return t(f"lesson.{STEPS[number - 1].id}.title", "en")


def dependency(url: str, api_name: str) -> int:
    deps = httpx.get(f"{url}config", timeout=60).json()["dependencies"]
    return next(d["id"] for d in deps if d.get("api_name") == api_name)


def raw_move(url: str, code: str, key: str, step: int) -> None:
    """What a stranger can send without the page: the "moved" event, straight into the queue, under a new session."""
    body = {"data": [step, code, key], "fn_index": dependency(url, "moved"), "session_hash": uuid.uuid4().hex,
            "event_data": None, "trigger_id": None}
    httpx.post(f"{url}gradio_api/queue/join", json=body, timeout=60)
    with httpx.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": body["session_hash"]},
                      timeout=60) as r:
        for line in r.iter_lines():
            if "process_completed" in line:
                break


@pytest.mark.timeout(1800)
def test_a_teacher_leads_two_students(app_server, monkeypatch):
    playwright = pytest.importorskip("playwright.sync_api")
    expect = playwright.expect
    expect.set_options(timeout=WAIT_MS)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])

        def page(path: str):
            pg = browser.new_context(locale="en", viewport={"width": 1280, "height": 900}).new_page()
            pg.set_default_timeout(WAIT_MS)
            pg.goto(app_server + path)
            return pg
        teacher = page("?tab=lesson")
        teacher.locator("#class-section").get_by_text(t("class.title", "en")).click()
        teacher.locator("#class-start").click()
        expect(teacher.locator("#class-info")).to_contain_text("Class ")
        code = re.search(r"Class (\w{6})", teacher.locator("#class-info").inner_text()).group(1)
        assert code in ROOMS.codes()
        expect(teacher.locator("#class-info img")).to_be_visible()  # the QR code of the students' link
        expect(teacher.locator("#class-teacher-link")).to_contain_text("teacher link")
        # The teacher's own link takes the class back (a reload, another browser); its Copy link never holds the key.
        teacher.goto(teacher.locator("#class-teacher-link a").first.get_attribute("href"))
        expect(teacher.locator("#class-line")).to_contain_text(f"Class {code} · step 1")
        teacher.locator("#link-copy-lesson").click()
        copied = teacher.locator("#link-text-lesson textarea, #link-text-lesson input").first
        expect(copied).to_have_value(re.compile(f"room={code}"))
        assert "key=" not in copied.input_value()
        teacher.locator("#class-projector").click()  # the projector: the teacher's own link off the wall
        expect(teacher.locator("#class-teacher-link")).to_be_hidden()
        expect(teacher.locator("#class-info img")).to_be_visible()

        students = [page(f"?tab=lesson&room={code}") for _ in range(2)]
        for s in students:
            expect(s.locator("#class-line")).to_contain_text("following the teacher (step 1)")
        expect(teacher.locator("#class-line")).to_contain_text("2 joined")

        # The teacher moves on: both students follow.
        teacher.get_by_role("button", name=t("lesson.next", "en")).click()
        for s in students:
            expect(s.locator("#lesson-explain")).to_contain_text(title(2))

        # A dropped connection rejoins by itself: the second student's network goes away and comes back, and the
        # next step change reaches that page as well.
        students[1].context.set_offline(True)
        students[1].wait_for_timeout(4000)
        students[1].context.set_offline(False)
        students[1].wait_for_timeout(1000)
        teacher.get_by_role("button", name=t("lesson.prev", "en")).click()
        for s in students:
            expect(s.locator("#lesson-explain")).to_contain_text(title(1), timeout=120_000)
        teacher.get_by_role("button", name=t("lesson.next", "en")).click()
        for s in students:
            expect(s.locator("#lesson-explain")).to_contain_text(title(2))

        # One student breaks away; the teacher moves on; only the other follows; then the first snaps back.
        first, second = students
        first.locator("#class-explore").click()
        expect(first.locator("#class-line")).to_contain_text("exploring")
        teacher.get_by_role("button", name=t("lesson.next", "en")).click()
        expect(second.locator("#lesson-explain")).to_contain_text(title(3))
        expect(first.locator("#lesson-explain")).to_contain_text(title(2))
        first.locator("#class-snap-back").click()
        expect(first.locator("#lesson-explain")).to_contain_text(title(3))

        # A student's page cannot drive: moving by hand only takes that student away; a raw call with no key or a
        # wrong key moves nothing.
        second.get_by_role("button", name=t("lesson.next", "en")).click()
        expect(second.locator("#class-line")).to_contain_text("exploring")
        for key in ("", "not-the-key"):
            raw_move(app_server, code, key, 7)
        room = ROOMS.get(code)
        assert room.position.step == 3
        expect(first.locator("#lesson-explain")).to_contain_text(title(3))
        second.locator("#class-snap-back").click()
        expect(second.locator("#lesson-explain")).to_contain_text(title(3))

        # Both students predict; the teacher sees the count and the answers, the other student neither.
        step = STEPS[2]
        for s, choice in zip(students, step.choices[:2]):
            s.locator("#lesson-choice").get_by_text(choice_text(step, choice, "en"), exact=True).click()
            s.locator("#lesson-commit").click()
            expect(s.locator("#lesson-committed")).to_contain_text(choice_text(step, choice, "en"))
        expect(teacher.locator("#class-line")).to_contain_text("2 answered")
        expect(teacher.locator("#class-line")).to_contain_text(choice_text(step, step.choices[1], "en") + ": █ 1")
        expect(first.locator("#class-line")).to_contain_text("2 answered")
        assert choice_text(step, step.choices[1], "en") not in first.locator("#class-line").inner_text()

        # The teacher reveals: the class's answers, without names, on the students' screens.
        teacher.locator("#class-reveal").click()
        for s in students:
            expect(s.locator("#class-line")).to_contain_text(choice_text(step, step.choices[0], "en") + ": █ 1")

        # The class pools its runs: at the BatchNorm step each student gets group sizes to run (real runs, fewer
        # steps than the lesson's), and every result lands in one class plot on all three screens.
        from resnet.classroom import pool
        monkeypatch.setattr(pool, "BN_STEPS", 8)
        monkeypatch.setattr(pool, "BN_EVERY", 4)
        bn_step = next(i for i, st in enumerate(STEPS, 1) if st.id == "bn_batch")
        # Each Next once the page shows the step before it, as a teacher clicks (four clicks 300 ms apart once left
        # the class a step short on a busy machine).
        for number in range(4, bn_step + 1):
            teacher.get_by_role("button", name=t("lesson.next", "en")).click()
            expect(teacher.locator("#lesson-explain")).to_contain_text(title(number))
        for s in students:
            expect(s.locator("#lesson-explain")).to_contain_text(title(bn_step))
        teacher.locator("#class-pool").click()
        total = len(pool.EXPERIMENTS["bn_batch"].grid())
        for s in students:
            expect(s.locator("#class-line")).to_contain_text("Your part of the class experiment")
            s.locator("#class-run-part").click()
        for pg in (teacher, *students):
            expect(pg.locator("#class-line")).to_contain_text(f"{total} of {total} runs in", timeout=900_000)
            expect(pg.locator("#class-plot img").first).to_be_visible()
        results = ROOMS.get(code).pool["results"]
        assert len(results) == total
        groups = {r["assignment"]["values"]["group"] for r in results.values()}
        assert groups == set(pool.EXPERIMENTS["bn_batch"].axes[0][1])
        sources = {pg.locator("#class-plot img").first.get_attribute("src") for pg in (teacher, *students)}
        assert len(sources) == 1  # the same plot of every result on all three screens

        # The spotlight: one student's run on every screen, without a name.
        teacher.locator("#class-spotlight").click()
        for pg in (teacher, *students):
            expect(pg.locator("#class-line")).to_contain_text("Spotlight")
        browser.close()
