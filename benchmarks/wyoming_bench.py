"""voiced as Home Assistant drives it over Wyoming, in the event order of HA's wyoming integration (stt.py,
conversation.py, tts.py; see tests/test_home_assistant.py for the files read). One JSON object.

    .venv/bin/python benchmarks/wyoming_bench.py [--bundle default] [--speech DIR] [--clips 8] [--rounds 3]
        [--wyoming-bench]

The whole daemon runs in this process as `voiced serve --wyoming` does without a speaker (pace on), real
default bundle, espeak-ng. Measured:

- stt: real speech clips from DIR (/work/shared/speech, commands up to 6 s), streamed in real time.
  `client_vad`: Home Assistant's own segmenter ends the command (requires_external_vad true); modelled as the
  audio-stop that HA sends after its fixed 0.7 s of silence (its VAD's own lag not included), so
  last word -> transcript is 700 ms + audio-stop -> transcript. `voiced_vad` (the default, false): voiced's VAD and
  adaptive end of turn end it while audio still streams; last word -> transcript measured from the clip's last
  voiced frame. WER of both against the manifest's transcripts (a command cut at a pause loses words).
- conversation: `transcript` -> `handled` (a new conversation each, as HA's new chat sessions), beside the length
  of the answer's speech (what the issue measured `handled` waiting for: 2.4 s and 24.9 s before).
- tts: first audio of the answer as HA gets it, from the moment the reply's first words exist: non-streaming,
  HA waits for the whole reply and then `synthesize`s it (time to write it at the model's measured decode rate
  plus the synthesis's first audio); streaming, `synthesize-chunk`s arrive at that rate and voiced speaks the
  first clause as soon as it is complete.
- conversation_switch: the prefill of a turn in the conversation the engine's cache already holds (stay) vs one
  in another conversation with as much history (switch), from `handled`'s timings.
- `--wyoming-bench`: also runs `wyoming-bench` (PyPI, if installed) against this daemon's STT and TTS and
  includes what it printed (its figures are its own; it was run offline here). `--stt-peer` / `--tts-peer
  HOST:PORT` add other Wyoming servers to the same wyoming-bench runs, which interleave the servers, e.g.
  `wyoming-faster-whisper --model DIR` and `wyoming-piper --voice NAME` started from local files (see RESULTS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from wyoming.asr import Transcribe, Transcript  # noqa: E402
from wyoming.audio import AudioChunk, AudioStart, AudioStop  # noqa: E402
from wyoming.client import AsyncTcpClient  # noqa: E402
from wyoming.event import Event  # noqa: E402
from wyoming.handle import Handled  # noqa: E402
from wyoming.info import Describe, Info  # noqa: E402
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped  # noqa: E402

from tests.support.speech import read_wav  # noqa: E402
from voiced.assistant import Assistant  # noqa: E402
from voiced.config import load_settings  # noqa: E402
from voiced.model import store  # noqa: E402
from voiced.model.bundle import load_bundle  # noqa: E402
from voiced.pipeline import Pipeline  # noqa: E402
from voiced.server.wyoming import WyomingServer  # noqa: E402
from voiced.speech.tts import make_tts  # noqa: E402

QUESTIONS = ["What is the capital of France?", "Explain in three sentences how a bicycle gear works."]
HISTORY = {  # unlike histories: alike ones get alike greedy replies, and a switch would find them cached
    "X": ["My name is Alice and I live in Lyon.", "I have two cats called Tom and Jerry.", "My favourite colour is green."],
    "Y": ["I am Bob, a baker in Leeds.", "I get up at four every morning.", "On Sundays I go fishing with my brother."],
}
HA_SILENCE_S = 0.7  # Home Assistant's default voice-command silence (VAD sensitivity "default")
CHUNK = 1024  # samples per audio-chunk, as HA's satellites send (64 ms at 16 kHz)


def _ms(t: float) -> float:
    return round(t * 1e3, 1)


def _med(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 1) if xs else None


async def _read_until(client: AsyncTcpClient, kinds: tuple[str, ...], timeout: float = 120.0) -> list[tuple[float, Event]]:
    got: list[tuple[float, Event]] = []
    async with asyncio.timeout(timeout):
        while True:
            ev = await client.read_event()
            if ev is None:
                raise RuntimeError(f"connection closed after {[e.type for _, e in got]}")
            got.append((time.monotonic(), ev))
            if ev.type in kinds:
                return got


def speech_end_s(pcm: np.ndarray, rate: int) -> float:
    """The clip's last voiced moment: its last 30 ms frame within 30 dB of its loudest."""
    n = rate * 30 // 1000
    frames = pcm[: len(pcm) // n * n].astype(np.float64).reshape(-1, n)
    db = 10 * np.log10((frames**2).mean(axis=1) + 1e-9)
    loud = np.flatnonzero(db > db.max() - 30)
    return float((loud[-1] + 1) * n / rate) if loud.size else len(pcm) / rate


def clips(speech_dir: Path, count: int) -> list[tuple[np.ndarray, str]]:
    manifest = json.loads((speech_dir / "manifest.json").read_text())
    chosen = [
        c for c in manifest if c.get("sample_rate") == 16000 and c.get("duration_s", 99) <= 6.0 and c.get("kind") in ("wer", "command")
    ]
    out = []
    for c in chosen[:count]:
        pcm, rate = read_wav(speech_dir / c["file"])
        out.append((pcm, c["transcript"]))
    return out


async def stt_round(port: int, pcm: np.ndarray, voiced_vad: bool) -> dict[str, Any]:
    """stt.py: transcribe, audio-start, chunks in real time (and reading at once), audio-stop when HA's VAD would."""
    end = speech_end_s(pcm, 16000)
    if voiced_vad:
        audio = np.concatenate([pcm[: int(end * 16000)], np.zeros(3 * 16000, np.int16)])
    else:
        audio = np.concatenate([pcm[: int(end * 16000)], np.zeros(int(HA_SILENCE_S * 16000), np.int16)])
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        t0 = time.monotonic()
        marks: dict[str, float] = {}

        async def upload() -> None:
            for i in range(0, len(audio), CHUNK):
                await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=audio[i : i + CHUNK].tobytes()).event())
                await asyncio.sleep(max(0.0, t0 + (i + CHUNK) / 16000 - time.monotonic()))
            marks["stop"] = time.monotonic()
            await client.write_event(AudioStop().event())

        up = asyncio.ensure_future(upload())
        events = await _read_until(client, ("transcript", "error"))
        up.cancel()
        t_end, ev = events[-1]
    text = Transcript.from_event(ev).text if ev.type == "transcript" else ""
    row: dict[str, Any] = {"text": text, "last_word_to_transcript_ms": _ms(t_end - (t0 + end))}
    if not voiced_vad:
        row["after_audio_stop_ms"] = _ms(t_end - marks["stop"])
    row["before_client_ran_out"] = "stop" not in marks
    return row


async def conversation(port: int, text: str, conversation_id: str) -> tuple[Handled, float]:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        t0 = time.monotonic()
        await client.write_event(Transcript(text=text, context={"conversation_id": conversation_id}, language="en").event())
        events = await _read_until(client, ("handled", "not-handled", "error"))
    t, ev = events[-1]
    if ev.type != "handled":
        raise RuntimeError(f"{text!r}: {ev.type} {ev.data}")
    return Handled.from_event(ev), t - t0


async def synthesize(port: int, text: str) -> tuple[float, float]:
    """tts.py (non-streaming): first audio after the request, and the speech's length."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        t0 = time.monotonic()
        await client.write_event(Synthesize(text=text).event())
        events = await _read_until(client, ("audio-stop", "error"))
    chunks = [(t, AudioChunk.from_event(e)) for t, e in events if e.type == "audio-chunk"]
    samples = sum(len(c.audio) // 2 for _, c in chunks)
    return chunks[0][0] - t0, samples / chunks[0][1].rate


async def synthesize_streamed(port: int, text: str, word_s: float) -> float:
    """tts.py (streaming): the reply's words as synthesize-chunks at the model's pace; first audio after the first."""
    words = text.split(" ")
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(SynthesizeStart().event())
        t0 = time.monotonic()

        async def write() -> None:
            for i, w in enumerate(words):
                await client.write_event(SynthesizeChunk(text=w + ("" if i == len(words) - 1 else " ")).event())
                await asyncio.sleep(word_s)
            await client.write_event(Synthesize(text=text).event())
            await client.write_event(SynthesizeStop().event())

        writer = asyncio.ensure_future(write())
        first = await _read_until(client, ("audio-chunk",))
        rest = await _read_until(client, (SynthesizeStopped().event().type,))
        await writer
    assert rest[-1][1].type == "synthesize-stopped"
    return first[-1][0] - t0


def run_wyoming_bench(port: int, corpus: list[tuple[np.ndarray, str]], stt_peers: list[str], tts_peers: list[str]) -> dict[str, Any]:
    exe = shutil.which("wyoming-bench") or str(Path(sys.executable).with_name("wyoming-bench"))
    if not Path(exe).exists():
        return {"skipped": "wyoming-bench is not installed (pip install wyoming-bench==2026.10.0)"}
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (pcm, ref) in enumerate(corpus):
            with wave.open(f"{tmp}/{i:02d}.wav", "wb") as w:
                w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(pcm.tobytes())
            Path(f"{tmp}/{i:02d}.txt").write_text(ref)
        for name, cmd, peers in (("stt", ["stt", "--corpus", tmp], stt_peers), ("tts", ["tts"], tts_peers)):
            p = subprocess.run([exe, *cmd, f"127.0.0.1:{port}", *peers], capture_output=True, text=True, timeout=1800)
            out[name] = {"rc": p.returncode, "stdout_tail": p.stdout[-3000:], "stderr_tail": p.stderr[-1000:]}
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    import jiwer

    settings, _ = load_settings(
        None, {"model": {"threads": 2, "bundle": args.bundle}, "audio": {"input_device": "none", "output_device": "none"}}
    )
    assistant = Assistant(load_bundle(store.ensure_prepared(args.bundle, progress=True)), settings.model)
    pipeline = Pipeline(settings, assistant, make_tts(settings.tts))  # pace on: `voiced serve` without a speaker
    await pipeline.warm_up()
    result: dict[str, Any] = {"bundle": assistant.bundle.manifest.name, "tts": settings.tts.engine}
    async with WyomingServer("tcp://127.0.0.1:0", pipeline) as wy:
        port = wy.port
        assert port is not None
        async with AsyncTcpClient("127.0.0.1", port) as c:
            t0 = time.monotonic()
            await c.write_event(Describe().event())
            info_ev = (await _read_until(c, ("info",)))[-1][1]
            result["describe_ms"] = _ms(time.monotonic() - t0)
        info = Info.from_event(info_ev)
        result["info"] = {
            "asr_requires_external_vad": info.asr[0].requires_external_vad if info.asr else None,
            "tts_streaming": info.tts[0].supports_synthesize_streaming,
            "tts_languages": info.tts[0].voices[0].languages,
        }

        corpus = clips(Path(args.speech), args.clips)
        if not args.skip_own:
            stt: dict[str, Any] = {}
            for mode in ("client_vad", "voiced_vad"):
                settings.server.wyoming_requires_external_vad = mode == "client_vad"
                rows = [await stt_round(port, pcm, mode == "voiced_vad") for pcm, _ in corpus]
                refs = [ref for _, ref in corpus]
                hyps = [r["text"] for r in rows]
                norm = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip()])
                stt[mode] = {
                    "clips": len(rows),
                    "last_word_to_transcript_ms_median": _med([r["last_word_to_transcript_ms"] for r in rows]),
                    "wer": round(jiwer.wer([norm(x) for x in refs], [norm(x) or "-" for x in hyps]), 3),
                }
                if mode == "client_vad":
                    stt[mode]["after_audio_stop_ms_median"] = _med([r["after_audio_stop_ms"] for r in rows])
                else:
                    stt[mode]["ended_before_client_ran_out"] = sum(r["before_client_ran_out"] for r in rows)
            settings.server.wyoming_requires_external_vad = False
            result["stt"] = stt

            conv: dict[str, Any] = {}
            tts: dict[str, Any] = {}
            decode_tok_s = []
            for qi, q in enumerate(QUESTIONS):
                handled_ms, audio_s, plain_first, stream_first, text_ms = [], [], [], [], []
                for r in range(args.rounds):
                    handled, waited = await conversation(port, q, f"bench-{qi}-{r}")
                    timings = handled.context["voiced"]["timings_ms"]
                    handled_ms.append(waited * 1e3)
                    first_token_ms = timings.get("first_token", 0.0)
                    write_s = max(0.0, waited - first_token_ms / 1e3)  # from its first token to its last
                    text_ms.append(write_s * 1e3)
                    if timings.get("decode_ms") and timings.get("decode_tokens"):
                        decode_tok_s.append(timings["decode_tokens"] / timings["decode_ms"] * 1e3)
                    first, length = await synthesize(port, handled.text)
                    audio_s.append(length)
                    plain_first.append((write_s + first) * 1e3)
                    word_s = write_s / max(1, len(handled.text.split()))
                    stream_first.append(await synthesize_streamed(port, handled.text, word_s) * 1e3)
                conv[q] = {"handled_ms_median": _med(handled_ms), "answer_speech_s_median": round(statistics.median(audio_s), 2)}
                tts[q] = {
                    "first_audio_from_first_words_ms": {"non_streaming": _med(plain_first), "streaming": _med(stream_first)},
                    "reply_written_in_ms_median": _med(text_ms),
                }
            result["conversation"] = conv
            result["tts_first_audio"] = tts
            result["decode_tok_s_median"] = _med(decode_tok_s)

            # One engine, one cache: a turn in the conversation it holds vs in another one with as much history.
            for name in ("X", "Y"):
                for user in HISTORY[name]:
                    await conversation(port, user, f"switch-{name}")
            stay, switch = [], []
            for r in range(args.rounds):
                for name, bucket in (("Y", stay), ("X", switch)):  # Y was last: stay; then X: switch
                    handled, _ = await conversation(port, "What do you know about me?", f"switch-{name}")
                    t = handled.context["voiced"]["timings_ms"]
                    bucket.append((t.get("prefill_tokens", 0.0), t.get("prefill_ms", 0.0)))
                await conversation(port, "Thank you.", "switch-Y")  # so that Y is held again for the next stay
            result["conversation_switch"] = {
                "stay": {"prefill_tokens_median": _med([a for a, _ in stay]), "prefill_ms_median": _med([b for _, b in stay])},
                "switch": {"prefill_tokens_median": _med([a for a, _ in switch]), "prefill_ms_median": _med([b for _, b in switch])},
            }
        if args.wyoming_bench:
            result["wyoming_bench"] = await asyncio.get_running_loop().run_in_executor(
                None, run_wyoming_bench, port, corpus, args.stt_peer, args.tts_peer
            )
    await pipeline.aclose()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default="default")
    ap.add_argument("--speech", default="/work/shared/speech")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--wyoming-bench", action="store_true")
    ap.add_argument("--stt-peer", action="append", default=[], metavar="HOST:PORT")
    ap.add_argument("--tts-peer", action="append", default=[], metavar="HOST:PORT")
    ap.add_argument("--skip-own", action="store_true", help="only the wyoming-bench runs (with --wyoming-bench)")
    print(json.dumps(asyncio.run(main_async(ap.parse_args())), indent=1))


if __name__ == "__main__":
    main()
