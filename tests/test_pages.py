"""Open pages by address (``resnet.ui.pages``) and the share arithmetic (``resnet.ui.fairshare.judge``)."""
from __future__ import annotations

import pytest

from resnet import config
from resnet.ui import fairshare, pages

pytestmark = pytest.mark.unit


def test_a_page_is_live_while_its_stream_is_open_and_a_while_after(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(pages.time, "monotonic", lambda: clock[0])
    p = pages.Pages()
    assert p.opened("s1", "10.0.0.1") and p.live("s1", "10.0.0.1")
    assert not p.live("s1", "10.0.0.2")  # the same session id from another address is not that page
    clock[0] += 60
    p.closed("s1", "10.0.0.1")
    assert p.live("s1", "10.0.0.1") and p.count("10.0.0.1") == 1  # a phone waking up keeps its share
    clock[0] += pages.GRACE_S + 1
    assert not p.live("s1", "10.0.0.1") and p.count("10.0.0.1") == 0


def test_streams_opened_and_dropped_at_once_earn_nothing(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(pages.time, "monotonic", lambda: clock[0])
    p = pages.Pages()
    for i in range(50):  # a script opening heartbeat streams under fresh session ids and dropping them
        p.opened(f"fresh{i}", "10.0.0.9")
        clock[0] += 0.01
        p.closed(f"fresh{i}", "10.0.0.9")
    assert p.count("10.0.0.9") == 0 and not p.live("fresh3", "10.0.0.9")


def test_an_address_counts_at_most_its_pages(monkeypatch):
    monkeypatch.setenv("RESNET_PAGES_PER_ADDRESS", "3")
    p = pages.Pages()
    assert [p.opened(f"s{i}", "10.0.0.3") for i in range(5)] == [True, True, True, False, False]
    assert p.count("10.0.0.3") == 3 and not p.live("s4", "10.0.0.3")
    assert p.opened("other", "10.0.0.4")  # another address is not affected


def test_heartbeat_paths_name_their_session():
    assert pages.session_of("/gradio_api/heartbeat/abc-123") == "abc-123"
    assert pages.session_of("/gradio_api/heartbeat/") is None
    assert pages.session_of("/gradio_api/queue/join") is None


def test_a_forwarded_address_counts_only_behind_a_trusted_proxy(monkeypatch):
    headers = {"x-forwarded-for": "203.0.113.7, 10.0.0.1"}
    monkeypatch.setenv("RESNET_TRUST_PROXY", "0")
    assert pages.address_of(headers, "127.0.0.1") == "127.0.0.1"
    monkeypatch.setenv("RESNET_TRUST_PROXY", "1")
    assert pages.address_of(headers, "127.0.0.1") == "203.0.113.7"


def held(**kw) -> fairshare.Holdings:
    return fairshare.Holdings(**kw)


def test_each_page_has_its_own_share_and_pageless_requests_share_one_pot():
    per_page, pot = config.get("RESNET_JOBS_PER_SESSION"), config.get("RESNET_JOBS_PER_ADDRESS")
    page = fairshare.Holder("10.0.0.1", "s1", True)
    anon = fairshare.Holder("10.0.0.1", "", False)
    # Thirty pages on one address each holding one job: the thirty-first page's job still fits.
    assert fairshare.judge(held(mine=0, address=30, events=30), page, 1.0, False, 128).ok
    assert fairshare.judge(held(mine=per_page, address=per_page), page, 1.0, False, 128).reason == "fair.session"
    assert fairshare.judge(held(mine=pot, address=pot), anon, 1.0, False, 128).reason == "fair.address"
    # A subscription costs a quarter: it fits where a new job does not.
    assert fairshare.judge(held(mine=pot - 0.25, address=pot), anon, 0.25, False, 128).ok
    assert not fairshare.judge(held(mine=pot - 0.25, address=pot), anon, 1.0, False, 128).ok


def test_an_address_and_the_whole_queue_are_bounded():
    page = fairshare.Holder("10.0.0.1", "s1", True)
    runs = config.get("RESNET_RUNS_PER_ADDRESS")
    assert fairshare.judge(held(runs=runs), page, 1.0, True, 128).reason == "fair.runs"
    assert fairshare.judge(held(runs=runs), page, 0.25, False, 128).ok  # joining a run is not a new run
    assert fairshare.judge(held(address=96), page, 1.0, False, 128).full  # three quarters of the queue
    assert fairshare.judge(held(events=128), page, 0.25, False, 128).full
    assert fairshare.judge(held(anonymous=64), fairshare.Holder("10.0.0.2", "", False), 1.0, False, 128).full


def test_a_queue_of_one_serves_one_request_at_a_time():
    page = fairshare.Holder("10.0.0.1", "s1", True)
    anon = fairshare.Holder("10.0.0.1", "", False)
    assert fairshare.judge(held(), page, 1.0, False, 1).ok and fairshare.judge(held(), anon, 1.0, False, 1).ok
    assert fairshare.judge(held(events=1, address=1, mine=1), page, 1.0, False, 1).full
