"""Reply audio fan-out: many listeners get whole, ordered streams at their own rate; a stalled one is dropped."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
from websockets.asyncio.client import connect

from protocol import messages as m
from protocol.client import AudioChunk, VoicedClient
from tests.support.server import running_server, wait_for
from tests.support.speech import espeak
from voiced.audio.resample import StreamResampler

SRC_RATE = 22050  # espeak-ng's own rate: what the TTS will hand the server


def _url(server) -> str:
    return f"ws://127.0.0.1:{server.port}"


def _chunks(pcm: np.ndarray, n: int) -> list[np.ndarray]:
    return [pcm[i : i + n] for i in range(0, len(pcm), n)]


def _reference(chunks: list[np.ndarray], rate: int) -> np.ndarray:
    r = StreamResampler(SRC_RATE, rate)
    return np.concatenate([r.process(c) for c in chunks] + [r.flush()])


async def _collect(client: VoicedClient, reply_id: str) -> tuple[m.ReplyAudioStart, list[AudioChunk], m.ReplyAudioEnd, m.ReplyDone]:
    start = end = None
    frames: list[AudioChunk] = []
    while True:
        msg = await asyncio.wait_for(client.recv(), 30)
        if isinstance(msg, m.ReplyAudioStart):
            start = msg
        elif isinstance(msg, AudioChunk):
            frames.append(msg)
        elif isinstance(msg, m.ReplyAudioEnd):
            end = msg
        elif isinstance(msg, m.ReplyDone) and msg.reply_id == reply_id:
            return start, frames, end, msg


async def test_fifty_listeners_get_the_whole_stream_in_order_at_their_rate():
    speech = espeak("The weather today is sunny with a light breeze from the west.", rate=SRC_RATE)
    chunks = _chunks(speech, 2900)  # uneven chunk edges, like TTS clauses
    rates = [16000, 22050, 24000, 48000]
    async with running_server() as (server, _, token):
        clients = [VoicedClient(_url(server), token, audio_rate=rates[i % 4], name=f"l{i}") for i in range(50)]
        await asyncio.gather(*(c.connect() for c in clients))
        mic_only = VoicedClient(_url(server), token, roles=["microphone"], audio_rate=48000)
        await mic_only.connect()
        try:
            collectors = [asyncio.ensure_future(_collect(c, "r1")) for c in clients]
            server.broadcast(m.ReplyStarted(reply_id="r1", source="local"))
            for ch in chunks:
                server.broadcast_audio("r1", ch, SRC_RATE)
                await asyncio.sleep(0)
            server.broadcast(m.ReplyDone(reply_id="r1", text="The weather today is sunny."))
            results = await asyncio.gather(*collectors)
            refs = {r: _reference(chunks, r) for r in rates}
            for c, (start, frames, end, done) in zip(clients, results):
                rate = c.welcome.audio_rate
                assert start.rate == rate and start.reply_id == "r1" and end.stream == start.stream
                assert [f.seq for f in frames] == list(range(len(frames))) == list(range(end.frames))
                assert all(f.rate == rate and f.stream == start.stream and f.reply_id == "r1" for f in frames)
                audio = np.concatenate([f.pcm for f in frames])
                assert len(audio) == end.samples
                np.testing.assert_array_equal(audio, refs[rate])
                assert abs(len(audio) - len(speech) * rate / SRC_RATE) <= 2
                assert max(len(f.pcm) for f in frames) <= rate // 10  # 100 ms frames
            np.testing.assert_array_equal(refs[SRC_RATE], speech)  # the source rate passes through untouched
            # the microphone-only client got the events but no audio
            got = [await asyncio.wait_for(mic_only.recv(), 5) for _ in range(2)]
            assert [g.type for g in got] == ["reply_started", "reply_done"]
        finally:
            await asyncio.gather(*(c.close() for c in clients + [mic_only]))


async def test_listener_joining_mid_reply_hears_the_next_reply_whole():
    tone = (np.sin(np.arange(SRC_RATE) * 2 * np.pi * 440 / SRC_RATE) * 8000).astype(np.int16)
    async with running_server() as (server, _, token):
        async with VoicedClient(_url(server), token, audio_rate=SRC_RATE) as early:
            server.broadcast_audio("r1", tone[:5000], SRC_RATE)
            async with VoicedClient(_url(server), token, audio_rate=SRC_RATE) as late:
                server.broadcast_audio("r1", tone[5000:], SRC_RATE)
                server.broadcast(m.ReplyDone(reply_id="r1", text="a"))
                server.broadcast_audio("r2", tone, SRC_RATE)
                server.broadcast(m.ReplyDone(reply_id="r2", text="b"))
                _, frames_early, _, _ = await _collect(early, "r1")
                np.testing.assert_array_equal(np.concatenate([f.pcm for f in frames_early]), tone)
                start, frames_late, end, done = await _collect(late, "r2")  # r1 had begun: late gets no r1 audio ...
                assert {f.reply_id for f in frames_late} == {"r2"} and start.reply_id == end.reply_id == "r2"
                np.testing.assert_array_equal(np.concatenate([f.pcm for f in frames_late]), tone)  # ... and all of r2


async def test_stalled_client_is_dropped_and_the_others_get_everything():
    second = (np.random.default_rng(0).normal(0, 3000, 48000)).astype(np.int16)
    async with running_server(client_queue=16) as (server, _, token):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        stalled = await connect(_url(server), sock=sock, subprotocols=["voiced.v1"], max_queue=1, max_size=None)
        await stalled.send(m.Hello(token=token, audio_rate=48000, name="stalled").to_json())
        assert m.parse_server(await stalled.recv()).type == "welcome"  # ... and it never reads again
        async with VoicedClient(_url(server), token, audio_rate=48000, name="healthy") as healthy:
            await wait_for(lambda: len(server.clients) == 2)
            collector = asyncio.ensure_future(_collect(healthy, "big"))
            sent = 0
            while len(server.clients) == 2:
                assert sent < 600, "the stalled client was never dropped"
                server.broadcast_audio("big", second, 48000)
                sent += 1
                await asyncio.sleep(0.005)
            for _ in range(5):  # the stream goes on for the others after the drop
                server.broadcast_audio("big", second, 48000)
                sent += 1
            server.broadcast(m.ReplyDone(reply_id="big", text=""))
            _, frames, end, _ = await collector
            assert [c.name for c in server.clients.values()] == ["healthy"]
            assert end.samples == sent * 48000 == sum(len(f.pcm) for f in frames)
            assert [f.seq for f in frames] == list(range(end.frames))
        stalled.transport.abort()
