"""`voiced listen` and `voiced ask --url`: thin commands over the client library.

They live in `voiced/` because they read the daemon's settings and token file; `protocol/` (what client authors
take) imports nothing from `voiced/`, so the printing helpers they share with the in-process `ask` stay in
`protocol/cli.py`.

`ask --json` prints exactly one JSON object on stdout (transcript, reply_text, timings_ms, ...): scripts and
checks outside the test suite parse it, so nothing else is ever printed on stdout in that mode.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import wave
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import numpy as np

from protocol.cli import print_result
from protocol.client import AudioChunk, ClientError, Reply, VoicedClient
from protocol.messages import INPUT_RATES
from voiced.audio import RATE
from voiced.config import Settings
from voiced.server.auth import TokenError, read_token

DEFAULT_ASK_TIMEOUT_S = 300.0
LISTEN_RATE = 24000


def default_url(settings: Settings) -> str:
    host = settings.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"ws://{host}:{settings.server.port}"


def _token(settings: Settings) -> str:
    return read_token(settings.token_path())


def _err(msg: str) -> None:
    print(f"voiced: {msg}", file=sys.stderr)


class _WavSink:
    """Reply audio appended to one WAV file as it arrives, so an interrupted `listen` still leaves a valid file."""

    def __init__(self, path: Path, rate: int):
        self._w = wave.open(str(path), "wb")
        self._w.setnchannels(1)
        self._w.setsampwidth(2)
        self._w.setframerate(rate)

    def write(self, pcm: np.ndarray) -> None:
        self._w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())

    def close(self) -> None:
        self._w.close()


class _Player:
    """Local playback through sounddevice; imported lazily so `listen` without --play needs no audio device."""

    def __init__(self, rate: int):
        import sounddevice as sd

        self._stream = sd.RawOutputStream(samplerate=rate, channels=1, dtype="int16")
        self._stream.start()

    def write(self, pcm: np.ndarray) -> None:
        self._stream.write(np.asarray(pcm, dtype="<i2").tobytes())

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()


async def _listen(url: str, token: str, play: bool, out: Path | None) -> int:
    sinks: list[_WavSink | _Player] = []
    try:
        async with VoicedClient(url, token, name="voiced listen", audio_rate=LISTEN_RATE) as client:
            print(json.dumps({"type": "connected", "url": url, "session_id": client.session_id}), flush=True)
            if out is not None:
                sinks.append(_WavSink(out, LISTEN_RATE))
            if play:
                sinks.append(_Player(LISTEN_RATE))
            async for msg in client.events():
                if isinstance(msg, AudioChunk):
                    for s in sinks:
                        await asyncio.to_thread(s.write, msg.pcm) if isinstance(s, _Player) else s.write(msg.pcm)
                else:
                    print(msg.to_json(), flush=True)
        return 0
    finally:
        for s in sinks:
            s.close()


def listen_command(args: argparse.Namespace, settings: Settings) -> int:
    """Print every event as one JSON line; play and/or save reply audio. Ends when the daemon closes (or Ctrl-C)."""
    try:
        token = _token(settings)
        return asyncio.run(
            _listen(args.url or default_url(settings), token, bool(getattr(args, "play", False)), getattr(args, "out", None))
        )
    except (TokenError, ClientError) as e:
        _err(str(e))
        return 1
    except KeyboardInterrupt:
        return 130


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    try:
        with wave.open(str(path)) as w:
            if w.getsampwidth() != 2:
                raise ClientError(f"{path}: {8 * w.getsampwidth()}-bit samples; convert to 16-bit PCM (e.g. `sox {path} -b 16 out.wav`)")
            rate, ch = w.getframerate(), w.getnchannels()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    except (wave.Error, EOFError) as e:
        raise ClientError(f"{path} is not a PCM WAV file ({e}); convert it with `sox {path} -b 16 out.wav`") from None
    except FileNotFoundError:
        raise ClientError(f"{path} does not exist") from None
    if ch > 1:
        pcm = pcm.reshape(-1, ch).mean(axis=1).astype(np.int16)
    return pcm, rate


async def _ask(url: str, token: str, text: str | None, wav: Path | None, timeout: float) -> dict[str, Any]:
    clip = _read_wav(wav) if wav is not None else None
    async with VoicedClient(url, token, name="voiced ask", roles=["listener", "microphone"], audio_rate=24000) as client:
        collect: Awaitable[Reply]
        if text is not None:
            request_id = await client.text_query(text)
            collect = client.collect_reply(request_id=request_id, transcript=text)
        elif clip is not None:
            pcm, rate = clip
            if rate not in INPUT_RATES:
                from voiced.audio.resample import resample

                pcm, rate = resample(pcm, rate, RATE), RATE
            listening = asyncio.ensure_future(client.collect_reply())
            try:
                await client.send_audio(pcm, rate)
            except BaseException:
                listening.cancel()
                raise
            collect = listening
        else:
            raise ClientError("ask needs a question; give --text or --wav")
        try:
            reply = await asyncio.wait_for(collect, timeout)
        except asyncio.TimeoutError:
            raise ClientError(f"no reply within {timeout:.0f} s; check `voiced serve`'s log (is a model loaded?)") from None
    audio = reply.audio()
    return {
        "transcript": reply.transcript,
        "reply_text": reply.text,
        "timings_ms": reply.timings_ms,
        "interrupted": reply.interrupted,
        "reply_id": reply.reply_id,
        "audio_rate": reply.rate or 24000,
        "audio_s": round(len(audio) / (reply.rate or 24000), 3),
        "_audio": audio,
    }


def ask_command(args: argparse.Namespace, settings: Settings) -> int:
    """One turn against a running daemon: a text or WAV question; prints the reply (or one JSON object)."""
    try:
        token = _token(settings)
        timeout = float(getattr(args, "timeout", None) or DEFAULT_ASK_TIMEOUT_S)
        result = asyncio.run(_ask(args.url or default_url(settings), token, args.text, args.wav, timeout))
    except (TokenError, ClientError) as e:
        _err(str(e))
        return 1
    except KeyboardInterrupt:
        return 130
    audio = result.pop("_audio")
    if args.out is not None:
        with wave.open(str(args.out), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(result["audio_rate"])
            w.writeframes(np.asarray(audio, dtype="<i2").tobytes())
        result["out"] = str(args.out)
    print_result(result, args.json)
    return 0
