"""Commands in the running daemon: espeak speech -> real VAD -> real Whisper -> the command, its messages,
its spoken reply, and the announcement of what comes due at real WebSocket listeners.

The tiny random-weight bundle stands in for the model: a command never reaches it (a reply it wrote would be
gibberish, so a right reply is the command's), and its system prompt is composed all the same.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

from protocol import messages as m
from protocol.client import AudioChunk, VoicedClient
from tests.support.speech import compose
from tests.support.turn import daemon, turn_settings

TOKEN = "test-token-0123456789abcdef"


async def _say(pipeline, source: str, text: str, seed: int = 0) -> None:
    pcm = compose([0.4, text, 2.0], seed=seed).pcm  # past the longest hangover: the turn ends
    for i in range(0, len(pcm), 480):
        await pipeline.feed(source, pcm[i : i + 480])


async def _until(collector, predicate, timeout: float = 60) -> list:
    async with asyncio.timeout(timeout):
        while not predicate(collector.messages):
            await asyncio.sleep(0.02)
    return list(collector.messages)


def _of(msgs: list, cls: type) -> list:
    return [x for x in msgs if isinstance(x, cls)]


def _rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if pcm.size else 0.0


async def test_spoken_timer_starts_rings_and_is_announced_to_a_listener() -> None:
    settings = turn_settings(commands={"ring_for_s": 0})  # announced once
    question = compose([0.5, "Set a timer for three seconds.", 1.0], rate=22050).pcm
    async with daemon(settings, TOKEN) as (pipeline, server, _):
        async with (
            VoicedClient(server.url, TOKEN, name="speaker", audio_rate=24000) as listener,
            VoicedClient(server.url, TOKEN, name="mic", roles=["microphone", "listener"], audio_rate=16000) as mic,
        ):
            got: list[tuple[float, object]] = []

            async def listen() -> None:
                announcement = None
                async for msg in listener.events():
                    got.append((time.monotonic(), msg))
                    if isinstance(msg, m.ReplyStarted) and msg.source == "timers":
                        announcement = msg.reply_id
                    if isinstance(msg, m.ReplyDone) and msg.reply_id == announcement:
                        return

            task = asyncio.create_task(listen())
            reply_task = asyncio.create_task(mic.collect_reply())
            await mic.send_audio(question, 22050)
            reply = await asyncio.wait_for(reply_task, 60)
            await asyncio.wait_for(task, 60)
        exchanges = pipeline.assistant.memory.exchanges

    assert "timer" in (reply.transcript or "").lower(), reply.transcript
    assert reply.text == "Your timer is set for 3 seconds.", reply.text
    assert reply.audio().size > 16000 * 0.5 and _rms(reply.audio()) > 300, "the confirmation was not spoken"
    assert "decode_tokens" not in reply.timings_ms, "the model ran for a command"
    assert len(exchanges) == 1 and exchanges[0].assistant == reply.text and "timer" in exchanges[0].user.lower()
    msgs = [x for _, x in got]
    started = _of(msgs, m.TimerStarted)
    finished = _of(msgs, m.TimerFinished)
    assert len(started) == 1 and started[0].total_s == 3 and started[0].kind == "timer" and started[0].active
    assert len(finished) == 1 and finished[0].id == started[0].id
    t_started = next(t for t, x in got if isinstance(x, m.TimerStarted))
    t_finished = next(t for t, x in got if isinstance(x, m.TimerFinished))
    assert t_finished - t_started >= 2.9, "the timer rang before its time"
    done = [x for x in msgs if isinstance(x, m.ReplyDone)]
    assert done[-1].text == "Your timer is done."
    announcement = [x for x in msgs if isinstance(x, m.ReplyStarted) and x.source == "timers"][0]
    audio = np.concatenate([x.pcm for x in msgs if isinstance(x, AudioChunk) and x.reply_id == announcement.reply_id])
    assert audio.size > 24000 * 0.5 and _rms(audio) > 300, "the announcement was not heard at the listener"
    assert msgs.index(finished[0]) < msgs.index(announcement)


async def test_cancel_the_timer_and_nothing_rings() -> None:
    settings = turn_settings(commands={"ring_for_s": 0})
    async with daemon(settings, TOKEN, pace=False) as (pipeline, _, collector):
        await _say(pipeline, "sat", "Set a timer for five seconds.")
        await _until(collector, lambda ms: _of(ms, m.ReplyDone))
        t0 = time.monotonic()
        await _say(pipeline, "sat", "Cancel the timer.", seed=1)
        msgs = await _until(collector, lambda ms: len(_of(ms, m.ReplyDone)) >= 2)
        assert time.monotonic() - t0 < 5, "too slow to test: the timer may have rung before it was cancelled"
        await asyncio.sleep(6.0)  # past the five seconds
        msgs = list(collector.messages)
    started, cancelled = _of(msgs, m.TimerStarted), _of(msgs, m.TimerCancelled)
    assert len(started) == 1 and [c.id for c in cancelled] == [started[0].id]
    assert [d.text for d in _of(msgs, m.ReplyDone)] == ["Your timer is set for 5 seconds.", "I cancelled your timer."]
    assert not _of(msgs, m.TimerFinished)
    assert not [x for x in msgs if isinstance(x, m.ReplyStarted) and x.source == "timers"], "a cancelled timer was announced"


async def test_how_much_time_is_left() -> None:
    settings = turn_settings()
    async with daemon(settings, TOKEN, pace=False) as (pipeline, _, collector):
        await _say(pipeline, "sat", "Set a timer for two minutes.")
        await _until(collector, lambda ms: _of(ms, m.ReplyDone))
        await _say(pipeline, "sat", "How much time is left?", seed=2)
        msgs = await _until(collector, lambda ms: len(_of(ms, m.ReplyDone)) >= 2)
    first, second = [d.text for d in _of(msgs, m.ReplyDone)]
    assert first == "Your timer is set for 2 minutes."
    left = re.fullmatch(r"Your timer has (2 minutes|1 minute and \d+ seconds?|1 minute|\d+ seconds?) left\.", second)
    assert left is not None, second


async def test_the_stop_word_silences_a_ringing_timer() -> None:
    settings = turn_settings(commands={"ring_for_s": 120, "ring_every_s": 0.5})
    async with daemon(settings, TOKEN) as (pipeline, server, collector):
        async with VoicedClient(server.url, TOKEN) as c:
            rid = await c.text_query("Set a timer for two seconds.")
            reply = await asyncio.wait_for(c.collect_reply(request_id=rid), 60)
        assert reply.text == "Your timer is set for 2 seconds."

        def announcements(ms: list) -> list:
            return [x for x in ms if isinstance(x, m.ReplyDone) and x.text == "Your timer is done."]

        await _until(collector, lambda ms: len(announcements(ms)) >= 2)  # it rings, and rings again
        pcm = compose([0.2, "stop", 1.0], seed=4).pcm
        for i in range(0, len(pcm), 480):
            await pipeline.feed("sat", pcm[i : i + 480])
            await asyncio.sleep(0.03)
        msgs = await _until(collector, lambda ms: any(isinstance(x, m.TurnIgnored) and x.reason == "stop_command" for x in ms))
        n = len(announcements(msgs))
        await asyncio.sleep(4.0)  # eight repeat intervals: it would have rung again by now
        after = list(collector.messages)
        assert not pipeline.commands.ringing
    assert len(announcements(after)) <= n + 1, "the timer kept ringing after 'stop'"  # at most the one already started
    started = [x for x in after if isinstance(x, m.ReplyStarted) and x.source == "timers"]
    assert len(started) == len(announcements(after))


async def test_what_time_and_what_date_read_the_clock_in_the_configured_zone() -> None:
    zone = ZoneInfo("Asia/Tokyo")
    settings = turn_settings(commands={"timezone": "Asia/Tokyo"})
    async with daemon(settings, TOKEN, pace=False) as (pipeline, _, collector):
        before = datetime.now(zone)
        await _say(pipeline, "sat", "What time is it?")
        await _until(collector, lambda ms: _of(ms, m.ReplyDone))
        await _say(pipeline, "sat", "What's the date?", seed=1)
        msgs = await _until(collector, lambda ms: len(_of(ms, m.ReplyDone)) >= 2)
        after = datetime.now(zone)
    time_reply, date_reply = [d.text for d in _of(msgs, m.ReplyDone)]
    hours = {f"{t.hour % 12 or 12}:" for t in (before, after)}
    assert time_reply.startswith("It's ") and any(time_reply.startswith(f"It's {h}") for h in hours), (time_reply, hours)
    assert time_reply.endswith(("AM.", "PM.")), time_reply
    days = {f"{t.strftime('%A, %B')} {t.day}, {t.year}" for t in (before, after)}
    assert any(d in date_reply for d in days), (date_reply, days)


async def test_reminders_survive_a_restart_only_when_privacy_allows(tmp_path) -> None:
    kept = tmp_path / "kept"
    settings = turn_settings(privacy={"save_reminders": True, "data_dir": str(kept)})
    async with daemon(settings, TOKEN) as (pipeline, server, _):
        async with VoicedClient(server.url, TOKEN) as c:
            rid = await c.text_query("Remind me to call my mother tomorrow at 9.")
            reply = await asyncio.wait_for(c.collect_reply(request_id=rid), 60)
    assert reply.text == "I'll remind you tomorrow at 9:00 AM to call your mother.", reply.text
    assert (kept / "commands.json").is_file()
    async with daemon(settings, TOKEN) as (pipeline, server, _):  # a new daemon on the same data_dir
        async with VoicedClient(server.url, TOKEN) as c:
            rid = await c.text_query("What are my reminders?")
            listed = await asyncio.wait_for(c.collect_reply(request_id=rid), 60)
    assert listed.text == "You have 1 reminder: tomorrow at 9:00 AM, call your mother.", listed.text

    private = tmp_path / "private"
    private.mkdir()
    settings = turn_settings(privacy={"data_dir": str(private)})  # a data_dir, but save_reminders is off (default)
    async with daemon(settings, TOKEN) as (pipeline, server, _):
        async with VoicedClient(server.url, TOKEN) as c:
            rid = await c.text_query("Remind me to call my mother tomorrow at 9.")
            await asyncio.wait_for(c.collect_reply(request_id=rid), 60)
    assert list(private.iterdir()) == [], "something was written with the default privacy settings"
    async with daemon(settings, TOKEN) as (pipeline, server, _):
        async with VoicedClient(server.url, TOKEN) as c:
            rid = await c.text_query("What are my reminders?")
            listed = await asyncio.wait_for(c.collect_reply(request_id=rid), 60)
    assert listed.text == "You have no reminders set."


async def test_wyoming_peers_get_timer_events() -> None:
    """The `wyoming` package's own client, as Home Assistant's conversation agent talks: a transcript to handle."""
    from wyoming.asr import Transcript
    from wyoming.client import AsyncTcpClient
    from wyoming.handle import Handled
    from wyoming.timer import TimerCancelled, TimerFinished, TimerStarted

    from voiced.server.wyoming import WyomingServer

    settings = turn_settings(commands={"ring_for_s": 0})
    async with daemon(settings, TOKEN, pace=False) as (pipeline, _, collector):
        async with WyomingServer("tcp://127.0.0.1:0", pipeline) as wy, AsyncTcpClient("127.0.0.1", wy.port) as client:
            got = []

            async def read_until(kind: str) -> None:
                while True:
                    ev = await client.read_event()
                    assert ev is not None, [e.type for e in got]
                    got.append(ev)
                    if ev.type == kind:
                        return

            await client.write_event(Transcript(text="Set a tea timer for two seconds.").event())
            await asyncio.wait_for(read_until("timer-finished"), 60)
            await client.write_event(Transcript(text="Set a timer for one hour.").event())
            await asyncio.wait_for(read_until("handled"), 60)
            await client.write_event(Transcript(text="Cancel the timer.").event())
            await asyncio.wait_for(read_until("timer-cancelled"), 60)
    types = [e.type for e in got]
    assert types[:3] == ["timer-started", "handled", "timer-finished"], types
    first = TimerStarted.from_event(got[0])
    assert (first.name, first.total_seconds, first.start_seconds) == ("tea", 2, 2)
    assert Handled.from_event(got[1]).text == "Your tea timer is set for 2 seconds."
    assert TimerFinished.from_event(got[2]).id == first.id
    hour = TimerStarted.from_event(next(e for e in got[3:] if e.type == "timer-started"))
    assert hour.total_seconds == 3600 and hour.start_hours == 1
    assert TimerCancelled.from_event(got[-1]).id == hour.id


async def test_a_pause_mid_command_runs_nothing_until_the_turn_is_over() -> None:
    """Spoken in real time with a pause after "for": the speculative pass at the pause hears "Set a timer for"
    and the early pass hears part of it; neither may run a command (a started or refused timer, a reply)."""
    settings = turn_settings(activation={"prefill_while_speaking_s": 0.8})
    pcm = compose([0.4, "Set a timer for", 0.8, "ten minutes.", 2.0], seed=5).pcm
    async with daemon(settings, TOKEN, pace=False) as (pipeline, _, collector):
        t0 = asyncio.get_running_loop().time()
        for n, i in enumerate(range(0, len(pcm), 480)):
            await pipeline.feed("local", pcm[i : i + 480])
            await asyncio.sleep(max(0.0, t0 + (n + 1) * 0.03 - asyncio.get_running_loop().time()))
            if n * 0.03 < 2.0:  # while the words are still coming, nothing has been done
                assert not _of(collector.messages, m.TimerStarted) and not _of(collector.messages, m.ReplyStarted)
        msgs = await _until(collector, lambda ms: _of(ms, m.ReplyDone))
        await asyncio.sleep(0.5)
        msgs = list(collector.messages)
    started = _of(msgs, m.TimerStarted)
    assert [s.total_s for s in started] == [600], [type(x).__name__ for x in msgs]
    assert [d.text for d in _of(msgs, m.ReplyDone)] == ["Your timer is set for 10 minutes."]


async def test_a_timer_due_while_the_user_speaks_waits_for_the_turn_to_finish() -> None:
    settings = turn_settings(commands={"ring_for_s": 0})
    speech = compose([0.2, "Tell me a long story about the sea and about the ships that sail on it.", 2.0], seed=6).pcm
    async with daemon(settings, TOKEN, pace=False) as (pipeline, _, collector):
        await pipeline.on_text_query("cli", "Set a timer for two seconds.", "q1")
        await _until(collector, lambda ms: _of(ms, m.ReplyDone))
        t0 = asyncio.get_running_loop().time()
        for n, i in enumerate(range(0, len(speech), 480)):  # in real time: the timer comes due mid-sentence
            await pipeline.feed("sat", speech[i : i + 480])
            await asyncio.sleep(max(0.0, t0 + (n + 1) * 0.03 - asyncio.get_running_loop().time()))
        msgs = await _until(collector, lambda ms: any(isinstance(x, m.ReplyDone) and x.text == "Your timer is done." for x in ms))
    kinds = [(type(x).__name__, getattr(x, "source", None)) for x in msgs]
    started = kinds.index(("SpeechStarted", "sat"))
    ended = kinds.index(("SpeechEnded", "sat"))
    finished = kinds.index(("TimerFinished", None))
    assert started < finished < ended, kinds  # it came due while the user was speaking
    answer = next(i for i, x in enumerate(msgs) if isinstance(x, m.ReplyStarted) and x.source == "sat")
    answer_done = next(i for i, x in enumerate(msgs) if i > answer and isinstance(x, m.ReplyDone))
    announced = next(i for i, x in enumerate(msgs) if isinstance(x, m.ReplyStarted) and x.source == "timers")
    assert ended < answer < answer_done < announced, kinds  # the user's turn first, then the announcement
