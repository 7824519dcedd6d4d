"""`voiced ask` when no daemon answers (or with --local): one turn in-process on the daemon's own pipeline."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import wave
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import numpy as np

from protocol import messages as m
from protocol.cli import print_result
from voiced.audio import RATE
from voiced.config import Settings

if TYPE_CHECKING:
    from voiced.pipeline import Pipeline

log = logging.getLogger(__name__)


class TurnResult(TypedDict):
    """One turn's outcome as `voiced ask` prints it (`audio_seconds` becomes `audio_s`)."""

    transcript: str | None
    reply_text: str
    interrupted: bool
    timings_ms: dict[str, float]
    audio_seconds: float
    errors: list[str]


class Collector:
    """A Publisher that keeps what one turn produced, for printing and tests."""

    def __init__(self) -> None:
        self.messages: list[m.ServerMessage] = []
        self.audio: list[np.ndarray] = []
        self.rate = 0
        self.finished = asyncio.Event()

    def broadcast(self, msg: m.ServerMessage) -> None:
        self.messages.append(msg)
        if isinstance(msg, m.ReplyDone | m.Error | m.TurnIgnored):
            self.finished.set()

    def broadcast_audio(self, reply_id: str, pcm: np.ndarray, rate: int) -> None:
        self.audio.append(np.asarray(pcm, np.int16))
        self.rate = rate

    def end_audio(self, reply_id: str) -> None:
        pass

    def result(self) -> TurnResult:
        transcript = next((x.text for x in self.messages if isinstance(x, m.Transcript)), None)
        done = next((x for x in self.messages if isinstance(x, m.ReplyDone)), None)
        errors = [x.message for x in self.messages if isinstance(x, m.Error)]
        return {
            "transcript": transcript,
            "reply_text": done.text if done else "",
            "interrupted": done.interrupted if done else False,
            "timings_ms": done.timings_ms if done else {},
            "audio_seconds": round(sum(len(a) for a in self.audio) / self.rate, 3) if self.rate else 0.0,
            "errors": errors,
        }


async def run_turn(pipeline: Pipeline, wav: Path | None, text: str | None, timeout_s: float = 600.0) -> Collector:
    from voiced.audio.capture import load_wav_16k

    collector = Collector()
    pipeline.add_publisher(collector)
    if text is not None:
        await pipeline.on_text_query("cli", text, None)
    elif wav is not None:
        pcm = load_wav_16k(wav)
        step = RATE * 30 // 1000
        for i in range(0, len(pcm), step):
            await pipeline.feed("cli", pcm[i : i + step])
        await pipeline.feed("cli", np.zeros(RATE * 2, np.int16))  # trailing silence lets the hangover end the turn
        await pipeline.end_of_stream("cli")
    else:
        raise ValueError("run_turn needs a question; pass a WAV file or a text")
    await asyncio.wait_for(collector.finished.wait(), timeout_s)
    return collector


def ask_local(args: argparse.Namespace, settings: Settings) -> int:
    if args.bundle:
        settings.model.bundle = args.bundle
    settings.audio.output_device = "none" if args.json or args.out else settings.audio.output_device
    try:
        result, audio, rate = asyncio.run(_ask(settings, args.wav, args.text))
    except Exception as e:  # every failure names its fix in its message
        print(f"voiced: {e}", file=sys.stderr)
        return 1
    if args.out and audio.size:
        with wave.open(str(args.out), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(audio.astype("<i2").tobytes())
    printed: dict[str, object] = {k: v for k, v in result.items() if k != "audio_seconds"}  # the keys `ask --url` prints
    printed.update(audio_rate=rate, audio_s=result["audio_seconds"])
    if args.out and audio.size:
        printed["out"] = str(args.out)
    print_result(printed, args.json)
    for error in result["errors"]:
        if not args.json:
            print(f"voiced: {error}", file=sys.stderr)
    return 0 if not result["errors"] else 1


def daemon_answers(settings: Settings, timeout_s: float = 0.5) -> bool:
    """Whether a daemon listens where `voiced ask` would find it (its token file readable): then `ask` asks it
    instead of loading a second copy of the model in this process."""
    import socket

    from voiced.client_cli import default_url

    if not settings.token_path().is_file() or not settings.server.port:
        return False
    host = default_url(settings).split("//", 1)[1].rsplit(":", 1)[0].strip("[]")
    try:
        with socket.create_connection((host, settings.server.port), timeout=timeout_s):
            return True
    except OSError:
        return False


async def _ask(settings: Settings, wav: Path | None, text: str | None) -> tuple[TurnResult, np.ndarray, int]:
    from voiced.brain import make_brain
    from voiced.model import store
    from voiced.model.bundle import load_bundle
    from voiced.pipeline import Pipeline
    from voiced.speech.tts import make_tts

    if wav is not None and not Path(wav).exists():
        raise FileNotFoundError(f"{wav} does not exist; pass a WAV file recorded at any rate")
    bundle = load_bundle(await asyncio.to_thread(store.ensure_prepared, settings.model.bundle))
    assistant = await asyncio.to_thread(make_brain, settings, bundle)
    pipeline = Pipeline(settings, assistant, make_tts(settings.tts), None, pace=False)
    await pipeline.warm_up()
    try:
        collector = await run_turn(pipeline, wav, text)
    finally:
        await pipeline.aclose()
    audio = np.concatenate(collector.audio) if collector.audio else np.zeros(0, np.int16)
    return collector.result(), audio, collector.rate or RATE
