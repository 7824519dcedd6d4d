"""Microphone audio from a client: resampled to 16 kHz, through the real VAD, events back; every bad frame typed."""

from __future__ import annotations

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed

from protocol import framing
from protocol import messages as m
from protocol.client import AudioChunk, VoicedClient
from tests.support.server import running_server, wait_for
from tests.support.speech import compose

MIC = ["listener", "microphone"]


def _url(server) -> str:
    return f"ws://127.0.0.1:{server.port}"


async def _until(client, kind: str, limit: int = 50):
    seen = []
    for _ in range(limit):
        msg = await client.recv()
        if isinstance(msg, AudioChunk):
            continue
        seen.append(msg)
        if msg.type == kind:
            return msg, seen
    raise AssertionError(f"no {kind} in {seen}")


@pytest.mark.parametrize("rate", [48000, 16000])
async def test_client_speech_goes_through_the_vad(rate):
    rec = compose([0.5, "Hello there, what is the weather like today?", 1.2, "Thank you.", 1.0], rate=rate)
    async with running_server() as (server, handler, token):
        async with VoicedClient(_url(server), token, roles=MIC) as mic, VoicedClient(_url(server), token) as other:
            await mic.send_audio(rec.pcm, rate, frame_ms=20)
            found = []
            for _ in range(len(rec.segments)):
                started, _ = await _until(other, "speech_started")
                ended, _ = await _until(other, "speech_ended")
                assert started.source == ended.source == mic.session_id
                found.append((ended.t_start, ended.t_end))
            assert len(found) == len(rec.segments)
            for (t0, t1), (s0, s1) in zip(found, rec.segments):
                assert s0 - 0.6 <= t0 <= s0 + 0.3, (found, rec.segments)
                assert s1 - 0.3 <= t1 <= s1 + 0.9, (found, rec.segments)
            await wait_for(lambda: ("audio_end", mic.session_id) in handler.calls)
            # every sample reached the pipeline, at 16 kHz
            assert abs(handler.samples[mic.session_id] - len(rec.pcm) * 16000 / rate) <= 2


async def test_bad_audio_gets_typed_errors_and_the_connection_carries_on():
    async with running_server() as (server, handler, token):
        async with VoicedClient(_url(server), token) as listener_only, VoicedClient(_url(server), token, roles=MIC) as mic:
            await listener_only.send(m.AudioStart(stream=1, rate=16000))
            assert (await listener_only.recv()).code == "not_allowed"

            async def expect(payload, code: str, needle: str = "") -> None:
                await (mic.send(payload) if isinstance(payload, m._Message) else mic.connection.send(payload))
                err = await mic.recv()
                assert err.type == "error" and err.code == code, err
                assert needle in err.message

            pcm = np.zeros(320, np.int16)
            await expect(m.AudioStart(stream=1, rate=12345), "audio_format", "12345")
            await expect(framing.pack(framing.FrameKind.MIC_AUDIO, 1, 0, 16000, pcm), "audio_stream", "audio_start")
            await expect(m.AudioEnd(stream=1), "audio_stream", "not open")
            await mic.send(m.AudioStart(stream=1, rate=16000))
            await expect(m.AudioStart(stream=2, rate=16000), "audio_stream", "still open")
            await expect(framing.pack(framing.FrameKind.MIC_AUDIO, 1, 0, 48000, pcm), "audio_format", "one rate per stream")
            await expect(framing.pack(framing.FrameKind.MIC_AUDIO, 9, 0, 16000, pcm), "audio_stream", "9")
            await expect(framing.pack(framing.FrameKind.REPLY_AUDIO, 1, 0, 16000, pcm), "bad_frame", "kind")
            await expect(b"\x01\x01", "bad_frame", "header")
            await mic.connection.send(framing.pack(framing.FrameKind.MIC_AUDIO, 1, 0, 16000, pcm))
            await expect(framing.pack(framing.FrameKind.MIC_AUDIO, 1, 5, 16000, pcm), "audio_stream", "seq 5")
            await mic.send(m.AudioEnd(stream=1))
            await mic.send(m.Ping(data="alive"))
            assert await mic.recv() == m.Pong(data="alive")
            await wait_for(lambda: handler.samples.get(mic.session_id) == 640)


async def test_audio_faster_than_allowed_is_rate_limited():
    async with running_server(max_audio_speed=1.0, audio_burst_s=1.0) as (server, handler, token):
        async with VoicedClient(_url(server), token, roles=MIC) as mic:
            await mic.send(m.AudioStart(stream=3, rate=16000))
            second = np.zeros(16000, np.int16)
            for seq in range(3):  # 3 s of audio at once: the first second fits the burst
                await mic.connection.send(framing.pack(framing.FrameKind.MIC_AUDIO, 3, seq, 16000, second))
            errs = [await mic.recv(), await mic.recv()]
            assert [e.code for e in errs] == ["rate_limited", "rate_limited"]
            assert "real time" in errs[0].message
            await mic.send(m.Ping())
            assert (await mic.recv()).type == "pong"
            assert handler.samples[mic.session_id] < 2 * 16000


async def test_oversized_messages():
    async with running_server(max_message_bytes=2048) as (server, _, token):
        async with VoicedClient(_url(server), token, roles=MIC) as c:
            await c.send(m.TextQuery(text="x" * 3000, request_id="big"))
            err = await c.recv()
            assert err.code == "too_large" and "2048" in err.message
            await c.send(m.Ping(data="still here"))
            assert await c.recv() == m.Pong(data="still here")
            await c.connection.send(b"\x00" * 10000)  # over the hard limit (4 x): the library closes with 1009
            with pytest.raises(ConnectionClosed) as e:
                await c.recv()
            assert e.value.rcvd.code == 1009
        await wait_for(lambda: len(server.clients) == 0)
