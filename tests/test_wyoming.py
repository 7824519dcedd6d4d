"""The Wyoming endpoint with the wyoming package's own client as the peer, on 127.0.0.1, over the whole daemon
(tiny real model, real Whisper tiny.en, espeak-ng, the real Pipeline)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event, async_read_event
from wyoming.handle import Handled
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong
from wyoming.pipeline import PipelineStage, RunPipeline
from wyoming.tts import Synthesize

from protocol import messages as m
from tests.support.speech import compose
from tests.support.turn import daemon, turn_settings
from voiced.audio.resample import resample
from voiced.server.wyoming import AudioIn, WyomingError, WyomingServer

TIMEOUT = 60.0


@asynccontextmanager
async def wyoming_daemon(**sections: dict[str, Any]) -> AsyncIterator[tuple[WyomingServer, object]]:
    settings = turn_settings(**sections)
    async with daemon(settings, pace=False) as (pipeline, _ws, collector):
        async with WyomingServer("tcp://127.0.0.1:0", pipeline) as wy:
            yield wy, collector


async def read_until(client: AsyncTcpClient, done: Callable[[Event], bool], timeout: float = TIMEOUT) -> list[Event]:
    got: list[Event] = []

    async def run() -> None:
        while True:
            ev = await client.read_event()
            assert ev is not None, f"server closed the connection; got {[e.type for e in got]}"
            got.append(ev)
            if done(ev):
                return

    await asyncio.wait_for(run(), timeout)
    return got


async def send_audio(client: AsyncTcpClient, pcm: np.ndarray, rate: int, width: int = 2, channels: int = 1, start: bool = True) -> None:
    """int16 mono speech sent as `width`-byte PCM with `channels` identical channels, 100 ms per chunk."""
    wide = pcm.astype(np.int32) << (8 * (width - 2)) if width > 2 else pcm
    frames = np.repeat(np.asarray(wide)[:, None], channels, axis=1)
    if width == 3:
        raw = frames.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        raw = frames.astype({2: "<i2", 4: "<i4"}[width]).tobytes()
    if start:
        await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
    step = rate // 10 * width * channels
    for i in range(0, len(raw), step):
        await client.write_event(AudioChunk(rate=rate, width=width, channels=channels, audio=raw[i : i + step]).event())
    await client.write_event(AudioStop().event())


def pcm_of(events: list[Event]) -> tuple[np.ndarray, int]:
    chunks = [AudioChunk.from_event(e) for e in events if AudioChunk.is_type(e.type)]
    rates = {c.rate for c in chunks}
    assert len(rates) == 1 and all(c.width == 2 and c.channels == 1 for c in chunks), rates
    return np.frombuffer(b"".join(c.audio for c in chunks), "<i2"), rates.pop()


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if pcm.size else 0.0


def words(text: str) -> set[str]:
    return set(text.lower().replace("?", "").replace(".", "").replace(",", "").split())


# -- sans I/O: the format conversion ----------------------------------------------------------------------------
@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_audio_in_converts_every_width_and_channel_count(width: int) -> None:
    rng = np.random.default_rng(0)
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(4800) / 48000)).astype(np.int16)
    stereo = np.stack([tone, tone], axis=1)
    if width == 1:
        raw = ((stereo >> 8) + 128).astype(np.uint8).tobytes()
    elif width == 3:
        raw = (stereo.astype(np.int32) << 8).astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        raw = (stereo.astype(np.int32) << 16).astype("<i4").tobytes() if width == 4 else stereo.astype("<i2").tobytes()
    audio_in, out = AudioIn(), []
    cuts = np.sort(rng.integers(0, len(raw), 7))  # chunk edges that split frames and samples
    for a, b in zip([0, *cuts], [*cuts, len(raw)]):
        out.append(audio_in.push(48000, width, 2, raw[a:b]))
    out.append(audio_in.flush())
    got = np.concatenate(out)
    want = resample(tone, 48000, 16000)
    assert abs(len(got) - len(want)) <= 2
    n = min(len(got), len(want))
    tolerance = 300 if width == 1 else 4  # 8-bit PCM keeps 8 bits
    assert np.max(np.abs(got[:n].astype(np.int32) - want[:n])) <= tolerance


def test_audio_in_refuses_formats_it_cannot_convert() -> None:
    with pytest.raises(ValueError, match="not supported"):
        AudioIn().push(16000, 5, 1, b"\0" * 10)


async def test_bad_uri_names_the_fix() -> None:
    with pytest.raises(WyomingError, match="tcp://127.0.0.1:10700"):
        WyomingServer("http://127.0.0.1:10700", None)


# -- over TCP ---------------------------------------------------------------------------------------------------
async def test_describe_advertises_asr_tts_and_the_assistant() -> None:
    async with wyoming_daemon() as (wy, _), AsyncTcpClient("127.0.0.1", wy.port) as client:
        await client.write_event(Describe().event())
        (ev,) = await read_until(client, lambda e: Info.is_type(e.type))
    info = Info.from_event(ev)
    assert len(info.asr) == 1 and info.asr[0].installed and not info.asr[0].requires_external_vad, "voiced ends commands"
    assert info.asr[0].models[0].languages == ["en"] and info.asr[0].models[0].name == "Whisper"
    # Home Assistant names the entry and its entities after the programs: voiced's, not a part's
    assert info.asr[0].name == info.tts[0].name == "voiced"
    assert [v.name for v in info.tts[0].voices] == ["en-us"]
    assert info.tts[0].voices[0].languages == ["en-US"], "BCP-47, from espeak-ng's own voice record"
    assert info.tts[0].supports_synthesize_streaming
    assert len(info.handle) == 1 and info.handle[0].name == "voiced"
    assert not info.handle[0].supports_home_control and info.handle[0].models[0].languages == ["en"]
    assert not info.intent and info.satellite is None


@pytest.mark.parametrize(("rate", "width", "channels"), [(22050, 2, 1), (48000, 3, 2)])
async def test_transcribe_speech_in_any_format(rate: int, width: int, channels: int) -> None:
    speech = compose([0.3, "What is the capital of France?", 0.3], rate=rate).pcm
    async with wyoming_daemon() as (wy, collector), AsyncTcpClient("127.0.0.1", wy.port) as client:
        await client.write_event(Transcribe(language="en").event())
        await send_audio(client, speech, rate, width, channels)
        events = await read_until(client, lambda e: Transcript.is_type(e.type))
    text = Transcript.from_event(events[-1]).text
    assert {"capital", "france"} <= words(text), text
    assert not any(isinstance(x, m.ReplyStarted) for x in collector.messages), "plain ASR must not start a turn"


async def test_synthesize_streams_speech_at_the_advertised_rate() -> None:
    async with wyoming_daemon() as (wy, _), AsyncTcpClient("127.0.0.1", wy.port) as client:
        await client.write_event(Synthesize(text="The quick brown fox jumps over the lazy dog.").event())
        events = await read_until(client, lambda e: AudioStop.is_type(e.type))
        engine_rate = wy.backend.tts_sample_rate
    start = AudioStart.from_event(events[0])
    assert (start.rate, start.width, start.channels) == (engine_rate, 2, 1)
    pcm, rate = pcm_of(events)
    assert rate == engine_rate and len(events) > 3, "audio must come in several chunks"
    assert len(pcm) / rate > 1.0 and rms(pcm) > 300, (len(pcm), rms(pcm))


async def test_spoken_turn_gets_transcript_and_spoken_reply() -> None:
    question = compose([0.5, "What is the capital of France?", 1.0], rate=16000).pcm
    async with wyoming_daemon() as (wy, collector), AsyncTcpClient("127.0.0.1", wy.port) as client:
        await client.write_event(RunPipeline(start_stage=PipelineStage.ASR, end_stage=PipelineStage.TTS).event())
        await send_audio(client, question, 16000)
        events = await read_until(client, lambda e: Handled.is_type(e.type) or Error.is_type(e.type))
    types = [e.type for e in events if e.type != "audio-chunk"]
    assert types == ["voice-started", "voice-stopped", "transcript", "audio-start", "audio-stop", "handled"], types
    transcript = Transcript.from_event(next(e for e in events if Transcript.is_type(e.type))).text
    assert {"capital", "france"} <= words(transcript), transcript
    handled = Handled.from_event(events[-1])
    done = next(x for x in collector.messages if isinstance(x, m.ReplyDone))
    assert handled.text == done.text and handled.text.strip()
    assert handled.context["voiced"]["reply_id"] == done.reply_id
    pcm, rate = pcm_of(events)
    assert rate == wy.backend.tts_sample_rate and len(pcm) / rate > 0.3 and rms(pcm) > 300
    assert abs(len(pcm) / rate - len(np.concatenate(collector.audio)) / collector.rate) < 0.01


async def test_transcript_event_is_answered_by_the_assistant() -> None:
    async with wyoming_daemon() as (wy, collector), AsyncTcpClient("127.0.0.1", wy.port) as client:
        await client.write_event(Transcript(text="Hello there, who are you?", context={"conversation_id": "c1"}).event())
        events = await read_until(client, lambda e: Handled.is_type(e.type))
        history = [(x.user, x.assistant) for x in wy.backend.assistant.memory.exchanges]
    assert [e.type for e in events] == ["handled"], "a text request gets its answer, not the spoken audio"
    handled = Handled.from_event(events[0])
    assert handled.text and handled.context["conversation_id"] == "c1"
    assert history == [("Hello there, who are you?", handled.text)], "remembered in Home Assistant's conversation"


async def test_bad_input_answers_errors_and_the_server_lives_on() -> None:
    async with wyoming_daemon() as (wy, _):
        async with AsyncTcpClient("127.0.0.1", wy.port) as client:
            await client.write_event(Event(type="frobnicate", data={"x": 1}))
            await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=bytes(640)).event())
            err = await read_until(client, lambda e: Error.is_type(e.type))
            assert [e.type for e in err] == ["error"], "the unknown event must be dropped silently"
            assert Error.from_event(err[0]).code == "audio-not-started"
            await client.write_event(Event(type="synthesize", data={}))  # no text
            assert Error.from_event((await read_until(client, lambda e: Error.is_type(e.type)))[-1]).code == "bad-event"
            await client.write_event(AudioStart(rate=16000, width=7, channels=1).event())
            assert "not supported" in Error.from_event((await read_until(client, lambda e: Error.is_type(e.type)))[-1]).text
            await client.write_event(Describe().event())
            await read_until(client, lambda e: Info.is_type(e.type))  # same connection still served

        reader, writer = await asyncio.open_connection("127.0.0.1", wy.port)
        writer.write(b"this is not json\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b"", "broken framing closes that connection"
        writer.close()

        async with AsyncTcpClient("127.0.0.1", wy.port) as client:
            await client.write_event(Describe().event())
            await read_until(client, lambda e: Info.is_type(e.type))

        with pytest.raises(WyomingError, match="pick a free port"):
            await WyomingServer(f"tcp://127.0.0.1:{wy.port}", wy.backend).start()


async def test_unaddressed_utterance_ends_with_not_handled() -> None:
    settings = turn_settings(activation={"mode": "wake", "wake_phrases": ["hey voiced"]})
    question = compose([0.5, "What is the capital of France?", 1.0], rate=16000).pcm
    async with daemon(settings, pace=False) as (pipeline, _ws, collector):
        async with WyomingServer("tcp://127.0.0.1:0", pipeline) as wy:
            async with AsyncTcpClient("127.0.0.1", wy.port) as client:
                await client.write_event(RunPipeline(start_stage=PipelineStage.WAKE, end_stage=PipelineStage.TTS).event())
                await send_audio(client, question, 16000, start=False)  # a satellite may skip audio-start
                events = await read_until(client, lambda e: e.type in ("handled", "not-handled", "error"))
    assert [e.type for e in events] == ["voice-started", "voice-stopped", "not-handled"], [e.type for e in events]
    assert not any(isinstance(x, m.ReplyStarted) for x in collector.messages)


# -- input limits: a peer over one gets an error naming it and the fix, and is disconnected; others go on --------
async def refused(read: Callable[[], Awaitable[Event | None]]) -> Error:
    """The one event a refused peer gets (an error), then the end of its connection."""
    ev = await asyncio.wait_for(read(), TIMEOUT)
    assert ev is not None and Error.is_type(ev.type), ev
    assert await asyncio.wait_for(read(), TIMEOUT) is None, "the connection must be closed after the error"
    return Error.from_event(ev)


async def still_served(client: AsyncTcpClient) -> None:
    await client.write_event(Ping(text="still there?").event())
    (pong,) = await read_until(client, lambda e: Pong.is_type(e.type))
    assert Pong.from_event(pong).text == "still there?"


async def test_oversized_events_are_refused_before_they_are_read() -> None:
    limit = 4096
    async with wyoming_daemon(server={"max_message_bytes": limit}) as (wy, _), AsyncTcpClient("127.0.0.1", wy.port) as other:
        await still_served(other)

        async with AsyncTcpClient("127.0.0.1", wy.port) as client:  # the payload: one audio chunk of 0.3 s
            await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=bytes(9600)).event())
            err = await refused(client.read_event)
        assert err.code == "too-large" and "audio-chunk event declares payload_length 9600, over the 4096-byte limit" in (err.text or "")
        assert "server.max_message_bytes" in (err.text or "") and "chunks of about 100 ms" in (err.text or "")
        await still_served(other)

        async with AsyncTcpClient("127.0.0.1", wy.port) as client:  # the data: the text to speak
            await client.write_event(Synthesize(text="word " * 1000).event())
            err = await refused(client.read_event)
        assert err.code == "too-large" and "synthesize event declares data_length " in (err.text or "")
        await still_served(other)

        # a declared length is refused at once, without waiting for (or making room for) a terabyte
        reader, writer = await asyncio.open_connection("127.0.0.1", wy.port)
        writer.write(
            json.dumps({"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1}, "payload_length": 10**12}).encode()
            + b"\n"
        )
        err = await refused(lambda: async_read_event(reader))
        writer.close()
        assert err.code == "too-large" and f"payload_length {10**12}, over" in (err.text or "")

        reader, writer = await asyncio.open_connection("127.0.0.1", wy.port)  # a header line that never ends
        writer.write(b'{"type": "describe", "data": {"x": "' + b"x" * 100_000)
        err = await refused(lambda: async_read_event(reader))
        writer.close()
        assert err.code == "too-large" and "header line over 4096 bytes" in (err.text or "")
        assert "data_length" in (err.text or "")
        await still_served(other)


async def test_transcription_longer_than_the_longest_utterance_is_refused() -> None:
    external_vad = {"wyoming_requires_external_vad": True}  # the client ends commands: over the limit is its fault
    async with (
        wyoming_daemon(audio={"max_segment_s": 2.0}, server=external_vad) as (wy, collector),
        AsyncTcpClient("127.0.0.1", wy.port) as other,
    ):
        async with AsyncTcpClient("127.0.0.1", wy.port) as client:
            await client.write_event(Transcribe(language="en").event())
            await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
            for _ in range(25):  # 2.5 s in 100 ms chunks, and never an audio-stop
                await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=bytes(3200)).event())
            err = await refused(client.read_event)
        assert err.code == "too-long" and "more than 2 s of audio in one transcription" in (err.text or "")
        assert "audio.max_segment_s" in (err.text or "") and "send audio-stop" in (err.text or "")
        await still_served(other)
        assert not any(isinstance(x, m.Transcript) for x in collector.messages)


async def test_audio_faster_than_the_budget_is_refused() -> None:
    """The WebSocket side's budget: a spoken turn's audio may be as long as the satellite likes, not as fast."""
    server = {"max_audio_speed": 1.0, "audio_burst_s": 1.0}
    async with wyoming_daemon(server=server) as (wy, _), AsyncTcpClient("127.0.0.1", wy.port) as other:
        async with AsyncTcpClient("127.0.0.1", wy.port) as client:
            await client.write_event(RunPipeline(start_stage=PipelineStage.ASR, end_stage=PipelineStage.TTS).event())
            for _ in range(50):  # 5 s of silence at once: 1 s of burst, then real time at most
                await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=bytes(3200)).event())
            err = await refused(client.read_event)
        assert err.code == "rate-limited" and "faster than 1x real time after a 1 s burst" in (err.text or "")
        assert "server.max_audio_speed" in (err.text or "")
        await still_served(other)
