"""The browser page in real headless Chromium against an in-process daemon (tiny model, real Whisper, espeak).

A spoken question from Chromium's fake microphone goes through the page's AudioWorklet and WebSocket to the
daemon; the transcript, the reply text and the latency table show, and the reply audio is scheduled in Web
Audio. Pairing: only a fresh, unused code derived from the token opens the page; other origins get 403.
"""

from __future__ import annotations

import asyncio
import http.client
import stat
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from protocol import messages as m
from tests.support.browser import chromium, page_settings, page_state, question_wav, screenshot, wait_state, with_port
from tests.support.turn import daemon
from voiced.server.http import make_http_handler
from voiced.server.pairing import Gate, mint_pairing_code, mint_session, open_command, page_url

TOKEN = "test-token-0123456789abcdef"


def _settings(tmp_path: Path, **sections):
    return page_settings(tmp_path, TOKEN, **sections)


@pytest.fixture(autouse=True)
def _no_desktop(monkeypatch):
    """`voiced open` launches xdg-open on a desktop; the tests read the URL it prints instead."""
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def _fresh_url(settings, port: int, capsys) -> str:
    """The URL exactly as `voiced open` prints it for this daemon."""
    assert open_command(with_port(settings, port)) == 0
    url = capsys.readouterr().out.strip()
    assert url.startswith(f"http://127.0.0.1:{port}/#pair=pair1.") and TOKEN not in url
    return url


async def test_spoken_question_gets_transcript_reply_text_audio_and_timings(tmp_path, capsys):
    settings = _settings(tmp_path)
    wav = question_wav(tmp_path)
    async with daemon(settings, TOKEN) as (pipeline, server, _), chromium(wav) as browser:
        server.http_handler = make_http_handler(settings.server)
        url = _fresh_url(settings, server.port, capsys)
        page = await browser.new_page()
        await page.goto(url)
        state = await wait_state(page, "v.connected")
        assert "#" not in page.url, "the pairing code must leave the address bar at once"
        credential = await page.evaluate("() => sessionStorage.getItem('voiced.credential')")
        assert credential.startswith("sess1.") and TOKEN not in credential
        assert state["mode"] == "hands-free"

        await page.click("#mic")
        state = await wait_state(page, "v.replies.length >= 1 && v.playedSamples > 0", timeout_s=90)
        shot = await screenshot(page, "browser-turn.png")
        headline = await page.text_content("#latency-headline")

    assert "capital" in state["transcript"].lower(), state["transcript"]  # tiny.en hears "France" as "friends" through Chromium at times
    assert state["micRate"] in m.INPUT_RATES and state["micFramesSent"] > 50
    reply = state["replies"][0]
    assert reply["text"].strip() and not reply["interrupted"]
    assert state["replyAudioStreams"] >= 1
    assert state["playRate"] in m.OUTPUT_RATES
    assert state["scheduledSamples"] > 0.3 * state["playRate"], state["scheduledSamples"]
    assert 0 < state["playedSamples"] <= state["scheduledSamples"]
    assert "end_of_speech_to_first_audio" in state["lastTimings"]
    wait_s = state["lastTimings"]["last_word_to_first_audio"] / 1000
    assert headline == f"From your last word to the first sound of the answer: {wait_s:.2f} s"  # what the user felt, singled out
    assert shot.stat().st_size > 5000
    # what a person sees: the same text in the page, and a row per timing
    assert pipeline.turns_done and pipeline.turns_done[0].text == reply["text"]


async def test_page_shows_text_and_timings(tmp_path, capsys):
    """The DOM (not only the page state) carries the transcript, the reply and the latency table."""
    settings = _settings(tmp_path)
    async with daemon(settings, TOKEN) as (_, server, __), chromium() as browser:
        server.http_handler = make_http_handler(settings.server)
        page = await browser.new_page()
        await page.goto(_fresh_url(settings, server.port, capsys))
        await wait_state(page, "v.connected")
        await page.fill("#query", "Hello there, who are you?")
        await page.click("#ask button")
        state = await wait_state(page, "v.replies.length >= 1 && v.state === 'idle'")
        assert await page.text_content("#transcript") == "Hello there, who are you?"
        assert (await page.text_content("#reply")) == state["replies"][0]["text"] != ""
        rows = await page.locator("#timings tr").count()
        assert rows == len(state["lastTimings"]) > 0
        assert state["scheduledSamples"] > 0


async def test_push_to_talk_sends_audio_only_while_held(tmp_path, capsys):
    settings = _settings(tmp_path, activation={"mode": "push"})
    wav = question_wav(tmp_path)
    async with daemon(settings, TOKEN) as (pipeline, server, _), chromium(wav) as browser:
        server.http_handler = make_http_handler(settings.server)
        page = await browser.new_page()
        await page.goto(_fresh_url(settings, server.port, capsys))
        await wait_state(page, "v.connected")
        await page.check("input[value='push-to-talk']")
        assert await page.is_visible("#talk")
        await page.click("#mic")  # microphone on, but nothing goes to the daemon until the button is held
        await wait_state(page, "v.micRate !== null")
        await page.wait_for_timeout(300)
        assert (await page_state(page))["micFramesSent"] == 0

        await page.hover("#talk")
        await page.mouse.down()  # the fake microphone restarts its file when the page opens it: speech at 0.6 s
        await wait_state(page, "v.micFramesSent > 150")  # > 3 s of 20 ms frames: the whole question
        await page.mouse.up()
        state = await wait_state(page, "v.replies.length >= 1", timeout_s=90)
    assert "capital" in state["transcript"].lower(), state["transcript"]  # tiny.en hears "France" as "friends" through Chromium at times
    assert state["replies"][0]["text"].strip()


@pytest.mark.parametrize("how", ["wrong", "expired", "reused"])
async def test_bad_pairing_code_is_refused_and_page_says_so(tmp_path, capsys, how):
    settings = _settings(tmp_path)
    async with daemon(settings, TOKEN) as (_, server, __), chromium() as browser:
        server.http_handler = make_http_handler(settings.server)
        port = server.port
        if how == "wrong":
            code = mint_pairing_code("another-token-0123456789abcdef")
        elif how == "expired":
            code = mint_pairing_code(TOKEN, now=time.time() - 120)
        else:
            code = mint_pairing_code(TOKEN)
            first = await browser.new_page()
            await first.goto(page_url(with_port(settings, port), code))
            await wait_state(first, "v.connected")
        page = await (await browser.new_context()).new_page()  # a new context: no sessionStorage to fall back on
        await page.goto(page_url(with_port(settings, port), code))
        state = await wait_state(page, "v.authFailed")
        assert not state["connected"] and not state["paired"]
        assert await page.is_visible("#pairing")
        assert "voiced open" in await page.text_content("#pairing")
        assert await page.evaluate("() => sessionStorage.getItem('voiced.credential')") is None
        assert len(server.clients) == (1 if how == "reused" else 0)


async def _foreign_page(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    body = b"<!doctype html><p>another site</p>"
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    writer.close()


async def test_other_origins_are_refused(tmp_path, caplog):
    settings = _settings(tmp_path)
    async with daemon(settings, TOKEN) as (_, server, __), chromium() as browser:
        server.http_handler = make_http_handler(settings.server)
        port = server.port
        # a WebSocket from a foreign page: 403 at the handshake, even with the right token
        with pytest.raises(InvalidStatus) as e:
            async with connect(f"ws://127.0.0.1:{port}/", subprotocols=["voiced.v1"], origin="http://evil.example"):
                pass
        assert e.value.response.status_code == 403
        caplog.clear()
        # the same from a real page on another origin: a second port on loopback is another origin (and, being
        # local too, Chromium's private-network rules let the attempt through to the daemon)
        foreign = await asyncio.start_server(_foreign_page, "127.0.0.1", 0)
        foreign_origin = f"http://127.0.0.1:{foreign.sockets[0].getsockname()[1]}"
        page = await browser.new_page()
        await page.goto(foreign_origin + "/")
        code = await page.evaluate(
            """(port) => new Promise((resolve) => {
                const ws = new WebSocket(`ws://127.0.0.1:${port}/`, 'voiced.v1');
                ws.onopen = () => resolve('open');
                ws.onclose = (e) => resolve(e.code);
            })""",
            port,
        )
        foreign.close()
        assert code == 1006  # the browser's view of a refused handshake
        assert any(repr(foreign_origin) in r.getMessage() and "refused" in r.getMessage() for r in caplog.records), "refused by the daemon"
        # a DNS-rebinding name gets not even the page
        status, body, _ = await asyncio.to_thread(_get, port, f"evil.example:{port}")
        assert status == 403 and b"voiced open" in body
        status, body, headers = await asyncio.to_thread(_get, port, f"localhost:{port}")
        assert status == 200 and b"/app.js" in body
        assert "'self'" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "DENY"
        assert (await asyncio.to_thread(_get, port, f"127.0.0.1:{port}", "/nope"))[0] == 404


def _get(port: int, host: str, path: str = "/") -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.getheaders())
    finally:
        conn.close()


def test_gate_accepts_each_code_once_and_only_while_fresh():
    now = [1_000_000.0]
    gate = Gate(TOKEN, clock=lambda: now[0])
    code = mint_pairing_code(TOKEN, now=now[0])
    assert gate.check(code).kind == "pairing"
    assert gate.check(code) is None, "a pairing code is single-use"
    assert gate.check(TOKEN).kind == "token"
    late = mint_pairing_code(TOKEN, now=now[0])
    now[0] += 61
    assert gate.check(late) is None, "a pairing code lasts 60 s"
    forged = mint_pairing_code(TOKEN, now=now[0]).split(".")
    forged[1] = str(int(forged[1]) + 3600)  # a longer life needs a new MAC
    assert gate.check(".".join(forged)) is None
    assert gate.check(mint_pairing_code(TOKEN, now=now[0], ttl_s=3600)) is None, "a far expiry is refused even with a good MAC"
    session = gate.issue_session()
    assert gate.check(session).kind == "session" and gate.check(session).kind == "session"
    assert gate.check(mint_session("another-token-0123456789abcdef", now=now[0])) is None
    now[0] += 13 * 3600
    assert gate.check(session) is None
    assert gate.check(None) is None and gate.check("pair1.x.y.z") is None and gate.check("") is None


async def test_session_credential_reconnects_and_pairing_code_works_over_plain_clients(tmp_path):
    settings = _settings(tmp_path)
    async with daemon(settings, TOKEN) as (_, server, __):
        url = f"ws://127.0.0.1:{server.port}/"
        code = mint_pairing_code(TOKEN)
        async with connect(url, subprotocols=["voiced.v1"], origin=f"http://127.0.0.1:{server.port}") as ws:
            await ws.send(m.Hello(token=code).to_json())
            welcome = m.parse_server(await ws.recv())
        assert isinstance(welcome, m.Welcome) and welcome.credential and welcome.credential.startswith("sess1.")
        async with connect(url, subprotocols=["voiced.v1"], origin=f"http://localhost:{server.port}") as ws:
            await ws.send(m.Hello(token=welcome.credential).to_json())
            again = m.parse_server(await ws.recv())
        assert isinstance(again, m.Welcome) and again.credential is None
        async with connect(url, subprotocols=["voiced.v1"]) as ws:
            await ws.send(m.Hello(token=code).to_json())
            with pytest.raises(ConnectionClosed) as e:
                await ws.recv()
        assert e.value.rcvd.code == 1008


def test_open_without_daemon_or_token_names_the_fix(tmp_path, capsys):
    settings = _settings(tmp_path)
    assert open_command(settings) == 2  # port 0: the page's address is unknown
    assert "server.port" in capsys.readouterr().err
    assert open_command(with_port(settings, 1)) == 1  # nothing listens on port 1
    out = capsys.readouterr()
    assert "#pair=pair1." in out.out and "voiced serve" in out.err
    missing = settings.model_copy(update={"server": settings.server.model_copy(update={"port": 8765, "token_file": tmp_path / "none"})})
    assert open_command(missing) == 1 and "voiced serve" in capsys.readouterr().err
    assert stat.S_IMODE((tmp_path / "token").stat().st_mode) == 0o600
