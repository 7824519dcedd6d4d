"""voiced as Home Assistant 2026 drives it: the `wyoming` client (HA pins wyoming==1.10.2) in the order of HA's
wyoming integration, and WebSocket clients beside it. Replies are heard where they were asked, each source has
its own conversation, `handled` is not paced by audio, streamed text is spoken before it ends.

The event orders replayed here were read in home-assistant/core, homeassistant/components/wyoming/:
- stt.py (commits 03d11c07590dbecc68d3f6f88ddb840e0df44c94 and a 2026 version, file id 67290148581): `transcribe`,
  `audio-start`, `audio-chunk`*, `audio-stop`, read until `transcript` (the newer one uploads and reads at once
  and passes requires_external_vad on to the pipeline);
- conversation.py (0945920d572e3f041851de67154265b39d59729a): a new connection per turn, `transcript` with
  context {conversation_id, device_id?, satellite_id?}, read until `handled` / `not-handled` / `error`;
- tts.py (0a84c202c8d794d53673cc4f40b10d48965dd1dd): `synthesize`, read `audio-chunk`s until `audio-stop`; the
  streaming order (`synthesize-start`, `synthesize-chunk`*, the whole text again as `synthesize`,
  `synthesize-stop`, read until `synthesize-stopped`) is the wyoming 1.10.2 spec's, which HA follows when a TTS
  says supports_synthesize_streaming;
- data.py (0173e56c2fcfa9fe98b1d4b441ab3451fed3bd5b): `describe` -> `info` on connect.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.handle import Handled
from wyoming.info import Describe, Info
from wyoming.pipeline import PipelineStage, RunPipeline
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from protocol import messages as m
from protocol.client import VoicedClient
from tests.support.bundles import default_bundle
from tests.support.pulse import Pulse, pulse_daemon
from tests.support.speech import compose
from tests.support.turn import daemon, turn_settings
from tests.test_playback import Monitor, rescan_devices
from tests.test_wyoming import pcm_of, read_until, send_audio
from voiced.assistant import Assistant
from voiced.config import AudioSettings, Settings
from voiced.conversations import ConversationStore, wyoming_key
from voiced.memory import Memory
from voiced.model.bundle import load_bundle
from voiced.routing import plays_locally
from voiced.server.wyoming import WyomingServer
from voiced.server.wyoming.info import bcp47
from voiced.server.wyoming.zeroconf import SERVICE_TYPE, Announcement, plan
from voiced.speech.playback import Playback

TOKEN = "test-token-0123456789abcdef"


@asynccontextmanager
async def ha_daemon(settings: Settings, **pipeline_kw: Any) -> AsyncIterator[tuple[WyomingServer, Any, Any]]:
    async with daemon(settings, TOKEN, **pipeline_kw) as (pipeline, ws, collector):
        async with WyomingServer("tcp://127.0.0.1:0", pipeline) as wy:
            yield wy, ws, collector


async def ha_conversation(port: int, text: str, conversation_id: str) -> tuple[Handled, float]:
    """conversation.py's async_process: one connection, one transcript, read until handled (and when it came)."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcript(text=text, context={"conversation_id": conversation_id}, language="en").event())
        events = await read_until(client, lambda e: Handled.is_type(e.type) or Error.is_type(e.type) or e.type == "not-handled")
    assert Handled.is_type(events[-1].type), [e.type for e in events]
    return Handled.from_event(events[-1]), time.monotonic()


async def ha_tts(port: int, text: str) -> tuple[np.ndarray, int]:
    """tts.py's async_get_tts_audio: synthesize, read until audio-stop."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Synthesize(text=text).event())
        events = await read_until(client, lambda e: AudioStop.is_type(e.type))
    return pcm_of(events)


# -- pure parts -------------------------------------------------------------------------------------------------
def test_conversations_are_bounded_and_forgotten_when_idle() -> None:
    store = ConversationStore(lambda: Memory(system_prompt="s"), max_conversations=2, idle_s=10.0)
    store.get("a", now=0.0).add("I am Alice", "Hello Alice")
    store.get("b", now=1.0)
    assert store.get("a", now=2.0).exchanges[0].user == "I am Alice", "a kept memory is the same object"
    store.get("c", now=3.0)  # over the bound: the least recently used (b) goes, not a
    assert list(store) == ["a", "c"] and store.evicted == 1
    assert store.peek("a") is not None and store.peek("b") is None
    assert store.get("c", now=13.5).exchanges == [] and "a" not in store, "a was idle for more than 10 s"
    assert store.get("a", now=14.0).exchanges == [], "a forgotten conversation starts anew"
    with pytest.raises(ValueError, match="model.conversations"):
        ConversationStore(lambda: Memory(system_prompt=""), 0, 1.0)


def test_home_assistant_names_the_conversation() -> None:
    assert wyoming_key({"conversation_id": "01JX", "satellite_id": "kitchen"}, "wyoming-3") == "wyoming:01JX"
    assert wyoming_key({"satellite_id": "kitchen"}, "wyoming-3") == "wyoming:kitchen"
    assert wyoming_key(None, "wyoming-3") == wyoming_key({"conversation_id": " "}, "wyoming-3") == "wyoming-3"


def test_language_tags_are_bcp47() -> None:
    assert [bcp47(t) for t in ("en-us", "en_US", "EN", "zh-hans", "en-gb-x-rp")] == ["en-US", "en-US", "en", "zh-Hans", "en-GB-x-rp"]
    assert bcp47("/voices/en_US-joe-medium.onnx") is None and bcp47(None) is None


def test_only_the_local_microphone_is_answered_on_the_local_speaker() -> None:
    assert plays_locally("local", "local") and not plays_locally("wyoming-1", "local") and not plays_locally("5f0c2a9d41be", "local")
    assert plays_locally("wyoming-1", "all")


# -- speech to text: voiced ends the command (requires_external_vad false) ---------------------------------------
async def test_voiced_ends_the_command_while_home_assistant_still_streams() -> None:
    """stt.py (2026): upload and read at once; the transcript ends the upload. Nobody sends audio-stop here."""
    question = compose([0.4, "What is the capital of France?", 3.0], rate=16000).pcm
    async with ha_daemon(turn_settings(), pace=False) as (wy, _, _c), AsyncTcpClient("127.0.0.1", wy.port) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())

        async def upload() -> int:
            sent = 0
            for i in range(0, len(question), 1600):  # 100 ms chunks, in real time as a satellite streams
                await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=question[i : i + 1600].tobytes()).event())
                sent += 1600
                await asyncio.sleep(0.1)
            return sent

        uploading = asyncio.ensure_future(upload())
        events = await read_until(client, lambda e: Transcript.is_type(e.type))
        sent = len(question) if uploading.done() else None
        uploading.cancel()
    assert sent is None, "the transcript must come before the client runs out of audio (no audio-stop was sent)"
    assert {"capital", "france"} <= set(Transcript.from_event(events[-1]).text.lower().strip("?.").replace("?", "").split())


async def test_silence_past_the_limit_ends_with_an_empty_transcript() -> None:
    async with (
        ha_daemon(turn_settings(audio={"max_segment_s": 2.0}), pace=False) as (wy, _, _c),
        AsyncTcpClient("127.0.0.1", wy.port) as client,
    ):
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        for _ in range(25):  # 2.5 s of silence, never an audio-stop: without an external VAD voiced must end it
            await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=bytes(3200)).event())
        events = await read_until(client, lambda e: Transcript.is_type(e.type) or Error.is_type(e.type))
        await client.write_event(AudioStop().event())  # late: no second transcript, no error
        await client.write_event(Synthesize(text="Still here.").event())
        after = await read_until(client, lambda e: AudioStop.is_type(e.type) or Error.is_type(e.type))
    assert [e.type for e in events] == ["transcript"] and Transcript.from_event(events[0]).text == ""
    assert after[0].type == "audio-start", [e.type for e in after]


# -- Home Assistant's conversation agent: handled at once, nothing spoken by voiced --------------------------------
async def test_handled_comes_with_the_text_not_after_its_audio() -> None:
    settings = turn_settings(model={"max_new_tokens": 96})
    async with ha_daemon(settings) as (wy, _, collector):  # pace on, as `voiced serve` runs without a speaker
        t0 = time.monotonic()
        handled, t_handled = await ha_conversation(wy.port, "Explain in three sentences how a bicycle gear works.", "c1")
        waited = t_handled - t0
        done = next(x for x in collector.messages if isinstance(x, m.ReplyDone))
        pcm, rate = await ha_tts(wy.port, handled.text)  # what Home Assistant asks for next: the answer's speech
    audio_s = len(pcm) / rate
    assert handled.text == done.text and done.timings_ms.get("decode_tokens", 0) >= 64, done.timings_ms  # a long reply
    assert collector.audio == [] and "first_audio" not in done.timings_ms, "a conversation-agent turn makes no audio"
    assert handled.context["conversation_id"] == "c1"
    print(f"handled after {waited:.2f} s; its audio lasts {audio_s:.2f} s")
    assert waited < audio_s, "handled waited for the reply's audio: it must come when the text is complete"


# -- nothing of a Wyoming turn is heard on the voiced host ----------------------------------------------------------
@pytest.fixture(scope="module")
def pulse() -> Iterator[Pulse]:
    with pulse_daemon() as d:
        rescan_devices()
        yield d
    rescan_devices()


async def test_wyoming_turns_are_not_played_on_the_local_speaker(pulse: Pulse) -> None:
    playback = Playback(AudioSettings(output_device="pulse"))
    question = compose([0.5, "What is the capital of France?", 1.0], rate=16000).pcm
    try:
        with Monitor() as mon:
            async with ha_daemon(turn_settings(), pace=False, playback=playback) as (wy, _, collector):
                async with AsyncTcpClient("127.0.0.1", wy.port) as sat:  # a satellite's spoken turn
                    await sat.write_event(RunPipeline(start_stage=PipelineStage.ASR, end_stage=PipelineStage.TTS).event())
                    await send_audio(sat, question, 16000)
                    events = await read_until(sat, lambda e: Handled.is_type(e.type) or Error.is_type(e.type))
                await ha_conversation(wy.port, "Hello there, who are you?", "c2")  # the conversation agent's turn
                await asyncio.sleep(0.5)
                quiet_until = time.monotonic()
                sat_pcm, _ = pcm_of(events)
                collector.finished.clear()
                await wy.backend.on_text_query("local", "Hello there, who are you?", "q-local")  # the local mic's
                await asyncio.wait_for(collector.finished.wait(), 60)
                await playback.drain()
                await asyncio.sleep(0.3)
        loud = mon.loud_times()
    finally:
        await playback.aclose()
    assert len(sat_pcm) > 0.3 * wy.backend.tts_sample_rate, "the satellite heard its reply"
    assert not [t for t in loud if t < quiet_until], "a Wyoming turn was played on the voiced host's speaker"
    assert [t for t in loud if t > quiet_until], "the local microphone's reply must play: the sink is real"


# -- streaming synthesis ----------------------------------------------------------------------------------------
async def test_streamed_text_is_spoken_before_it_ends() -> None:
    pieces = ["The first sentence ", "is here. And", " the second one follows", " a moment later. Done."]
    whole = "".join(pieces)
    async with ha_daemon(turn_settings(), pace=False) as (wy, _, _c), AsyncTcpClient("127.0.0.1", wy.port) as client:
        await client.write_event(SynthesizeStart().event())
        for piece in pieces[:2]:
            await client.write_event(SynthesizeChunk(text=piece).event())
        early = await read_until(client, lambda e: AudioChunk.is_type(e.type))  # before the rest of the text exists
        for piece in pieces[2:]:
            await client.write_event(SynthesizeChunk(text=piece).event())
        await client.write_event(Synthesize(text=whole).event())  # sent again whole, for servers that do not stream
        await client.write_event(SynthesizeStop().event())
        rest = await read_until(client, lambda e: SynthesizeStopped.is_type(e.type))
        await client.write_event(SynthesizeChunk(text="late").event())  # outside a stream: an error, not a crash
        (err,) = await read_until(client, lambda e: Error.is_type(e.type))
        plain, rate = await ha_tts(wy.port, whole)
    events = early + rest
    types = [e.type for e in events if not AudioChunk.is_type(e.type)]
    assert types == ["audio-start", "audio-stop", "synthesize-stopped"], types
    assert AudioStart.from_event(events[0]).rate == rate
    streamed, _ = pcm_of(events)
    ratio = len(streamed) / len(plain)
    assert 0.7 < ratio < 1.5, f"streamed {len(streamed)} samples vs {len(plain)} whole: the trailing synthesize is not spoken twice"
    assert "synthesize-start" in Error.from_event(err).text


# -- two WebSocket clients --------------------------------------------------------------------------------------
async def test_two_websocket_clients_each_hear_their_own_reply_and_keep_their_own_memory() -> None:
    async with ha_daemon(turn_settings(), pace=False) as (wy, ws, _):
        url = ws.url
        async with (
            VoicedClient(url, TOKEN, name="a", roles=["listener", "microphone"], audio_rate=16000) as a,
            VoicedClient(url, TOKEN, name="b", replies="own", audio_rate=16000) as b,
            VoicedClient(url, TOKEN, name="speaker", audio_rate=16000) as speaker,  # no microphone: hears all
        ):
            replies: dict[str, dict[str, Any]] = {}
            for asker, text in ((a, "My name is Alice."), (b, "My name is Bob.")):
                rid = await asker.text_query(text)
                got = await asyncio.gather(*(c.collect_reply(request_id=rid) for c in (a, b, speaker)))
                replies[text] = {name: len(r.audio()) for name, r in zip("ab", got)} | {"speaker": len(got[2].audio())}
            sessions = a.session_id, b.session_id
            memories = [wy.backend.assistant.conversations.peek(s) for s in sessions]
            async with (
                VoicedClient(url, TOKEN, name="c", conversation="kitchen") as c,
                VoicedClient(url, TOKEN, name="d", conversation="kitchen") as d,
            ):
                await c.collect_reply(request_id=await c.text_query("Hello from c."))
                await d.collect_reply(request_id=await d.text_query("Hello from d."))
        shared = wy.backend.assistant.conversations.peek("ws:kitchen")
    assert replies["My name is Alice."]["a"] > 0 and replies["My name is Alice."]["b"] == 0
    assert replies["My name is Bob."]["b"] > 0 and replies["My name is Bob."]["a"] == 0
    assert replies["My name is Alice."]["speaker"] > 0 and replies["My name is Bob."]["speaker"] > 0
    assert [[e.user for e in mem.exchanges] for mem in memories if mem is not None] == [["My name is Alice."], ["My name is Bob."]]
    assert shared is not None and [e.user for e in shared.exchanges] == ["Hello from c.", "Hello from d."]


# -- the real default model: conversation B does not know what A said -----------------------------------------------
@pytest.fixture(scope="module")
def real_settings_and_assistant() -> tuple[Settings, Assistant]:
    settings = turn_settings(model={"max_new_tokens": 32, "threads": 2})
    return settings, Assistant(load_bundle(default_bundle()), settings.model)


def _knows_alice(text: str) -> bool:
    return "alice" in text.lower()


async def test_home_assistant_conversations_keep_apart_on_the_real_model(real_settings_and_assistant) -> None:
    settings, assistant = real_settings_and_assistant
    assistant.forget_all()
    async with ha_daemon(settings, pace=False, assistant=assistant) as (wy, _, _c):
        await ha_conversation(wy.port, "Please remember that my name is Alice.", "A")
        in_b, _ = await ha_conversation(wy.port, "What is my name?", "B")
        in_a, _ = await ha_conversation(wy.port, "What is my name?", "A")
    assert not _knows_alice(in_b.text), f"conversation B knew what A said: {in_b.text!r}"
    assert _knows_alice(in_a.text), f"conversation A forgot: {in_a.text!r}"


async def test_websocket_sessions_keep_apart_on_the_real_model(real_settings_and_assistant) -> None:
    settings, assistant = real_settings_and_assistant
    assistant.forget_all()
    async with ha_daemon(settings, pace=False, assistant=assistant) as (_wy, ws, _c):
        async with VoicedClient(ws.url, TOKEN, name="a") as a, VoicedClient(ws.url, TOKEN, name="b") as b:
            await a.collect_reply(request_id=await a.text_query("Please remember that my name is Alice."))
            in_b = await b.collect_reply(request_id=await b.text_query("What is my name?"))
            in_a = await a.collect_reply(request_id=await a.text_query("What is my name?"))
    assert not _knows_alice(in_b.text), f"session B knew what A said: {in_b.text!r}"
    assert _knows_alice(in_a.text), f"session A forgot: {in_a.text!r}"


# -- zeroconf: Home Assistant discovers voiced ----------------------------------------------------------------------
def test_only_an_endpoint_beyond_loopback_is_announced() -> None:
    lan = lambda: ["192.0.2.7"]  # noqa: E731
    assert plan("tcp://127.0.0.1:10700", 10700, "box", lan) is None
    assert plan("unix:///run/voiced.sock", None, "box", lan) is None
    assert plan("tcp://0.0.0.0:10700", 10700, "box.lan", lan) == Announcement("voiced-box", ("192.0.2.7",), 10700)
    assert plan("tcp://192.0.2.9:10700", 10701, "my_box", lan) == Announcement("voiced-my-box", ("192.0.2.9",), 10701)


async def test_home_assistant_discovers_the_endpoint_and_can_use_it() -> None:
    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncZeroconf

    settings = turn_settings()
    async with daemon(settings, TOKEN, pace=False) as (pipeline, _ws, _c):
        async with WyomingServer("tcp://0.0.0.0:0", pipeline) as wy:
            announcer = wy._announcer
            assert announcer is not None, "bound beyond loopback with server.wyoming_zeroconf on: it must be announced"
            name = announcer._info.name  # type: ignore[union-attr]
            browser = AsyncZeroconf(ip_version=IPVersion.V4Only)  # what HA's zeroconf discovery resolves
            try:
                found = await browser.async_get_service_info(SERVICE_TYPE, name, timeout=5000)
            finally:
                await browser.async_close()
            assert found is not None and found.port == wy.port
            async with AsyncTcpClient(found.parsed_addresses()[0], found.port) as client:
                await client.write_event(Describe().event())
                (ev,) = await read_until(client, lambda e: Info.is_type(e.type))
            assert Info.from_event(ev).handle[0].name == "voiced"
        assert wy._announcer is None
    settings.server.wyoming_zeroconf = False
    async with daemon(settings, TOKEN, pace=False) as (pipeline, _ws, _c):
        async with WyomingServer("tcp://0.0.0.0:0", pipeline) as wy:
            assert wy._announcer is None, "server.wyoming_zeroconf = false: never announced"


async def test_tts_languages_come_from_the_voice_itself() -> None:
    """HA builds the TTS entity's languages from the voice's (tts.py); a pipeline in en-US must match them."""
    from tests.support.turn import shared_assistant
    from voiced.pipeline import Pipeline
    from voiced.server.handler import SpeechBackend
    from voiced.server.wyoming.info import describe_info
    from voiced.speech.tts import make_tts

    for tts_section, language, label in (
        ({"engine": "espeak", "voice": "en-gb"}, "en-GB", "espeak-ng en-gb"),
        ({"engine": "piper"}, "en-US", "Piper"),
    ):
        settings = turn_settings(tts=tts_section)
        pipeline = Pipeline(settings, shared_assistant(settings), make_tts(settings.tts), None, pace=False)
        try:
            assert isinstance(pipeline, SpeechBackend), "the pipeline is what the Wyoming server takes"
            info = describe_info(pipeline)
        finally:
            await pipeline.aclose()
        (voice,) = info.tts[0].voices
        assert voice.languages == [language], (tts_section, voice.languages)
        assert (voice.description or "").startswith(label) and "/" not in (voice.description or "")
