"""The browser page says what the daemon did and why, in real headless Chromium against an in-process daemon:
ignored turns with their reason, the daemon's activation mode, questions typed while offline, the state pill
while a reply still plays, the wait the user felt, and a favicon."""

from __future__ import annotations

import asyncio
import http.client
from pathlib import Path

from tests.support.browser import chromium, page_settings, page_state, question_wav, wait_state, with_port
from tests.support.turn import daemon
from voiced.server.http import make_http_handler
from voiced.server.pairing import open_command

TOKEN = "test-token-0123456789abcdef"


def _settings(tmp_path: Path, **sections):
    return page_settings(tmp_path, TOKEN, **sections)


def _url(settings, port: int, capsys) -> str:
    assert open_command(with_port(settings, port)) == 0
    return capsys.readouterr().out.strip()


async def test_an_ignored_turn_shows_its_reason(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    settings = _settings(tmp_path, activation={"mode": "wake"})
    wav = question_wav(tmp_path)  # no wake phrase in it
    async with daemon(settings, TOKEN) as (pipeline, server, _), chromium(wav) as browser:
        server.http_handler = make_http_handler(settings.server)
        page = await browser.new_page()
        await page.goto(_url(settings, server.port, capsys))
        state = await wait_state(page, "v.connected")
        assert state["activation"] == "wake"
        assert "wake phrase" in await page.text_content("#activation")
        await page.click("#mic")
        state = await wait_state(page, "v.ignored.length >= 1", timeout_s=90)
        assert state["ignored"] == ["not_addressed"] and state["replies"] == []
        assert await page.is_visible("#ignored")
        assert "not said to voiced" in await page.text_content("#ignored")
        assert "not answered" in await page.text_content("#history")
    assert not pipeline.turns_done


async def test_the_page_offers_push_to_talk_only_to_a_push_daemon(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    for mode in ("always", "push"):
        settings = _settings(tmp_path, activation={"mode": mode})
        async with daemon(settings, TOKEN) as (_, server, __), chromium() as browser:
            server.http_handler = make_http_handler(settings.server)
            page = await browser.new_page()
            await page.goto(_url(settings, server.port, capsys))
            state = await wait_state(page, "v.connected")
            held = page.locator("label", has=page.locator("input[value='push-to-talk']"))
            hands_free = page.locator("label", has=page.locator("input[value='hands-free']"))
            assert state["activation"] == mode
            if mode == "always":
                assert "answers everything" in await page.text_content("#activation")
                assert await hands_free.is_visible() and state["mode"] == "hands-free"
                label = await held.text_content()
                assert "push-to-talk" not in label and "only gates this microphone" in label
            else:
                assert "hold" in (await page.text_content("#activation")).lower()
                assert not await hands_free.is_visible(), "hands-free audio would be ignored by a push daemon"
                assert (await held.text_content()).strip() == "push-to-talk"
                assert state["mode"] == "push-to-talk" and await page.is_visible("#talk")


async def test_a_question_typed_while_unpaired_or_offline_is_not_shown_as_sent(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    settings = _settings(tmp_path)
    async with chromium() as browser:
        async with daemon(settings, TOKEN) as (pipeline, server, _):
            server.http_handler = make_http_handler(settings.server)
            port = server.port
            unpaired = await (await browser.new_context()).new_page()
            await unpaired.goto(f"http://127.0.0.1:{port}/")  # no pairing code
            await unpaired.fill("#query", "Are you there?")
            await unpaired.click("#ask button")
            state = await page_state(unpaired)
            assert await unpaired.text_content("#transcript") == "", "an unsent question is not shown as sent"
            assert state["errors"][-1]["code"] == "offline" and "voiced open" in state["errors"][-1]["message"]
            assert "not sent" in await unpaired.text_content("#status")
            assert await unpaired.input_value("#query") == "Are you there?"
            assert state["shownState"] == "offline"

            page = await browser.new_page()
            await page.goto(_url(settings, port, capsys))
            await wait_state(page, "v.connected && v.shownState === 'idle'")
        # the daemon is gone; the page stays open
        state = await wait_state(page, "!v.connected")
        assert state["shownState"] == "offline" and await page.text_content("#state") == "offline"
        await page.fill("#query", "Hello?")
        await page.click("#ask button")
        state = await page_state(page)
        assert state["errors"][-1]["code"] == "offline" and "not connected" in state["errors"][-1]["message"]
        assert await page.text_content("#transcript") == ""
    assert not pipeline.turns_done


async def test_the_pill_says_speaking_while_the_reply_plays_and_the_wait_is_in_user_terms(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    settings = _settings(tmp_path)
    # pace=False: the daemon is idle as soon as the reply's audio is sent, seconds before the page has played it
    async with daemon(settings, TOKEN, pace=False) as (_, server, __), chromium() as browser:
        server.http_handler = make_http_handler(settings.server)
        page = await browser.new_page()
        await page.goto(_url(settings, server.port, capsys))
        await wait_state(page, "v.connected")
        await page.fill("#query", "Tell me about the weather in spring.")
        await page.click("#ask button")
        state = await wait_state(page, "v.replies.length >= 1 && v.state === 'idle' && v.shownState === 'speaking'")
        assert await page.text_content("#state") == "speaking"
        state = await wait_state(page, "v.shownState === 'idle' && v.playedSamples > 0", timeout_s=60)
        timings = state["lastTimings"]
        headline = await page.text_content("#latency-headline")
        seconds = timings["first_audio"] / 1000
        assert headline == f"From your question to the first sound of the answer: {seconds:.2f} s"
        rows = {await r.locator("td").first.get_attribute("title"): await r.locator("td").all_text_contents()
                for r in await page.locator("#timings tr").all()}  # fmt: skip
        assert rows.keys() == timings.keys()
        assert rows["first_audio"][0] == "first sound of the answer"
        assert rows["decode_tokens"][1] == str(round(timings["decode_tokens"])), "a count, not milliseconds"
        assert rows["done"][1].endswith(" ms")


async def test_favicon_is_served_and_the_page_loads_without_a_404(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    settings = _settings(tmp_path)
    async with daemon(settings, TOKEN) as (_, server, __), chromium() as browser:
        server.http_handler = make_http_handler(settings.server)
        port = server.port
        for path in ("/favicon.ico", "/favicon.svg"):
            status, body, ctype = await asyncio.to_thread(_get, port, path)
            assert status == 200 and ctype == "image/svg+xml" and body.startswith(b"<svg")
        page = await browser.new_page()
        failed: list[str] = []
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        await page.goto(_url(settings, port, capsys))
        await wait_state(page, "v.connected")
        icon = await page.evaluate("() => fetch('/favicon.ico').then((r) => r.status)")
        assert icon == 200 and failed == []
        assert await page.get_attribute("link[rel=icon]", "href") == "/favicon.svg"


def _get(port: int, path: str) -> tuple[int, bytes, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": f"127.0.0.1:{port}"})
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.getheader("Content-Type") or ""
    finally:
        conn.close()
