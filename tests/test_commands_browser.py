"""The browser page's timer block in real headless Chromium: a typed command starts a timer, the page counts it
down, and cancelling it removes it."""

from __future__ import annotations

import re

from tests.support.browser import chromium, wait_state
from tests.support.turn import daemon
from tests.test_browser import TOKEN, _fresh_url, _no_desktop, _settings  # noqa: F401 - _no_desktop is an autouse fixture
from voiced.server.http import make_http_handler


def _seconds(text: str) -> int:
    m, s = re.search(r"(\d+):(\d\d)", text).groups()
    return int(m) * 60 + int(s)


async def test_page_counts_down_a_running_timer_and_drops_a_cancelled_one(tmp_path, capsys):
    settings = _settings(tmp_path)
    async with daemon(settings, TOKEN) as (_, server, __), chromium() as browser:
        server.http_handler = make_http_handler(settings.server)
        page = await browser.new_page()
        await page.goto(_fresh_url(settings, server.port, capsys))
        await wait_state(page, "v.connected")
        assert await page.is_hidden("#timers-box")
        await page.fill("#query", "Set a pasta timer for 10 minutes.")
        await page.click("#ask button")
        state = await wait_state(page, "Object.keys(v.timers).length === 1 && v.replies.length >= 1")
        assert state["replies"][0]["text"] == "Your pasta timer is set for 10 minutes."
        assert await page.is_visible("#timers-box")
        first = await page.text_content("#timers li")
        assert first.startswith("pasta timer") and 590 <= _seconds(first) <= 600, first
        await page.wait_for_timeout(2100)
        later = await page.text_content("#timers li")
        assert _seconds(later) < _seconds(first), (first, later)  # it counts down
        await page.fill("#query", "Cancel the pasta timer.")
        await page.click("#ask button")
        await wait_state(page, "Object.keys(v.timers).length === 0 && v.replies.length >= 2")
        assert await page.is_hidden("#timers-box")


async def test_a_page_opened_later_shows_the_timers_already_running(tmp_path, capsys):
    from protocol import messages as m
    from protocol.client import VoicedClient

    settings = _settings(tmp_path)
    async with daemon(settings, TOKEN) as (_, server, __), chromium() as browser:
        server.http_handler = make_http_handler(settings.server)
        async with VoicedClient(server.url, TOKEN) as c:
            rid = await c.text_query("Set a tea timer for 5 minutes.")
            await c.collect_reply(request_id=rid)
            await c.send(m.ListTimers())
            listed = await anext(x async for x in c.events() if isinstance(x, m.Timers))
        assert [(t.name, t.total_s, t.active) for t in listed.items] == [("tea", 300, True)]
        page = await browser.new_page()
        await page.goto(_fresh_url(settings, server.port, capsys))
        await wait_state(page, "v.connected && Object.keys(v.timers).length === 1")
        text = await page.text_content("#timers li")
        assert text.startswith("tea timer") and 0 < _seconds(text) <= 300, text
