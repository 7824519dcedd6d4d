"""Voice to voice: spoken question streamed in real time by a WebSocket client -> first reply audio at the client.

Prints one JSON object: p50/p90 of (a) last word -> first reply audio byte at the client, (b) end of turn detected
-> first audio (the part beyond the end-of-turn silence window), the silence window itself, and each stage's
median share. The daemon runs in-process on the configured bundle (default: the embedded default), with real
VAD, Whisper, the LLM, espeak and the real server on 127.0.0.1; the client streams paced like a microphone.

    .venv/bin/python benchmarks/voice_to_voice.py [--bundle default] [--end-of-turn adaptive|fixed] [--n 8]
        [--asr-window 15,30]

With several `--asr-window` values (model.asr_window_s) each question is asked once per window, in turn, and
the figures come per window side by side (one daemon, the recogniser swapped between questions).

`--levers base,model,fragment3,silero,preempt,all` does the same for the levers of issue 20, switched in the
running daemon between questions: `model` = activation.end_of_turn "model" (Smart Turn beside the words),
`fragmentN` = a first spoken fragment of N+ words (ClauseChunker.first_fragment_words), `silero` = audio.vad
"both" (Silero confirms turn onsets), `preempt` = activation.preemptive_reply (the reply started at the pause,
held until the turn is confirmed), `guessN` = activation.guess_after_ms N, `windowN` = model.asr_window_s N,
`pwsN` = activation.prefill_while_speaking_s N (0 = off), `completeN` = activation.hangover_complete_ms N,
`asrN` = model.asr_threads N, `noasks` = a rise on words that ask is no question (the policy before),
`nonumbers` = the first fragment never ends on a number (the chunker before), `allogits` = every prefill runs
the LM head on all its positions (Engine.prune_logits off: graphs before model_export 7), `a+b` = both, `all` = every
one of them but those three old behaviours; `base` = none (adaptive, webrtc, clauses, no preemptive reply); guess, window, pws, complete and asr stay at
the daemon's defaults unless named. `--rounds R` asks every question R times (new voice noise each round).
`gap_ms` is the silence a listener playing the audio as it arrives hears between the first and the last
sample beyond what the TTS itself put there (the next clause late).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from asr import normalise  # noqa: E402  (benchmarks/asr.py: the WER normaliser, digits spelled)

from protocol import messages as m  # noqa: E402
from protocol.client import AudioChunk, VoicedClient  # noqa: E402
from tests.support.speech import compose  # noqa: E402
from voiced.assistant import Assistant  # noqa: E402
from voiced.audio.endpoint import EndOfTurnPolicy  # noqa: E402
from voiced.audio.smart_turn import SmartTurn  # noqa: E402
from voiced.bridge import run_in  # noqa: E402
from voiced.config import load_settings  # noqa: E402
from voiced.model import store  # noqa: E402
from voiced.model.asr import Recognizer  # noqa: E402
from voiced.model.bundle import load_bundle  # noqa: E402
from voiced.pipeline import Pipeline  # noqa: E402
from voiced.server.ws import VoicedServer  # noqa: E402
from voiced.speech.chunker import ClauseChunker  # noqa: E402
from voiced.speech.tts import make_tts  # noqa: E402
from voiced.turn import responder as responder_module  # noqa: E402
from voiced.turn.listener import Hearing  # noqa: E402

QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What is the largest ocean on Earth?",
    "Which planet is called the red planet?",
    "What is 15 plus 27?",
    "What color do you get when you mix blue and yellow?",
    "What is the capital of Japan?",
    "How many days are there in a week?",
    "Tell me a fun fact about octopuses.",
    "Set a timer for ten minutes.",
]
# long requests (4-6 s of speech): the prompt work at the end of the turn grows with them unless it is done early
LONG = [
    "I am planning a trip next spring and I would like to know what the capital city of Japan is called.",
    "My daughter asked me this at dinner and I did not know, so tell me how many legs a spider has.",
    "If I have fifteen apples and my neighbour gives me twenty seven more, how many apples do I have now?",
    "We were talking about the solar system at school today, which planet is the one called the red planet?",
    "I keep forgetting this one, when you mix the colours blue and yellow together, what do you get?",
    "Before I go to bed tonight, could you tell me what the largest ocean on the whole planet Earth is?",
]
TOKEN = "bench-token-0123456789abcdef"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))], 1) if xs else float("nan")


async def one(url: str, question: str, seed: int) -> dict:
    rec = compose([0.5, question, 2.5], seed=seed)
    speech_end_s = rec.segments[-1][1]
    async with VoicedClient(url, TOKEN, roles=["microphone", "listener"], audio_rate=16000) as c:
        t0 = time.monotonic()
        first_audio: float | None = None
        done: m.ReplyDone | None = None
        heard = ""
        play_end = 0.0
        gap = 0.0

        async def listen() -> None:
            nonlocal first_audio, done, heard, play_end, gap
            async for msg in c.events():
                if isinstance(msg, AudioChunk):
                    now = time.monotonic()
                    if first_audio is None:
                        first_audio = play_end = now
                    gap += max(0.0, now - play_end)  # the listener's queue ran dry: heard as silence
                    play_end = max(play_end, now) + len(msg.pcm) / msg.rate
                if isinstance(msg, m.Transcript) and msg.final:
                    heard = msg.text
                if isinstance(msg, m.ReplyDone):
                    done = msg
                    return

        listener = asyncio.create_task(listen())
        await c.send_audio(rec.pcm, 16000, frame_ms=30, realtime=True, end=False)
        await asyncio.wait_for(listener, 120)
    assert first_audio is not None and done is not None
    t = done.timings_ms
    return {
        "question": question,
        "heard": heard,
        "reply": done.text,
        "last_word_to_first_audio_ms": round((first_audio - (t0 + speech_end_s)) * 1e3, 1),
        "detected_to_first_audio_ms": t.get("end_of_speech_to_first_audio"),
        "asr_ms": t.get("asr"),
        "first_token_ms": t.get("first_token"),
        "first_clause_ms": t.get("first_clause"),
        "prefill_tokens": t.get("prefill_tokens"),
        "prefill_while_speaking_tokens": t.get("prefill_while_speaking_tokens", 0.0),
        "end_of_turn_silence_ms": t.get("end_of_turn_silence"),
        "gap_ms": round(gap * 1e3, 1),
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default="default")
    ap.add_argument("--end-of-turn", choices=["adaptive", "fixed"], default="adaptive")
    ap.add_argument("--n", type=int, default=len(QUESTIONS))
    ap.add_argument("--long", action="store_true", help="long requests (4-6 s of speech) instead of short questions")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prefill-while-speaking", type=float, default=2.0, help="activation.prefill_while_speaking_s (0 = off)")
    ap.add_argument("--asr-window", default="", help="model.asr_window_s; several, comma-separated, to compare")
    ap.add_argument("--levers", default="", help="issue 20's levers to compare, e.g. base,model,fragment3,silero,all")
    ap.add_argument("--complete-ms", type=int, default=0, help="activation.hangover_complete_ms (the short window); 0 = the default")
    ap.add_argument("--rounds", type=int, default=1, help="--levers: ask every question this many times")
    args = ap.parse_args()
    if args.levers:
        return await compare_levers(args)
    windows = [float(w) for w in args.asr_window.split(",") if w.strip()]
    settings, _ = load_settings(None, {
        "server": {"port": 0}, "model": {"threads": args.threads, "bundle": args.bundle, **({"asr_window_s": windows[0]} if windows else {})},
        "audio": {"input_device": "none", "output_device": "none"}, "activation": {"end_of_turn": args.end_of_turn, "prefill_while_speaking_s": args.prefill_while_speaking},
    })  # fmt: skip
    assistant = Assistant(load_bundle(store.ensure_prepared(args.bundle, progress=False)), settings.model)
    pipeline = Pipeline(settings, assistant, make_tts(settings.tts), None, pace=False)
    await pipeline.warm_up()
    server = VoicedServer(settings.server, pipeline, TOKEN)
    pipeline.add_publisher(server)
    recognizers = {settings.model.asr_window_s: assistant.recognizer}
    if len(windows) > 1 and assistant.recognizer is not None:
        from voiced.model.asr import recognizer_for

        for w in windows[1:]:
            recognizers[w] = recognizer_for(assistant.bundle.dir, assistant.bundle.manifest.audio, threads=args.threads, window_s=w)
            recognizers[w].warm_up()
    by_window: dict[float, list[dict]] = {w: [] for w in recognizers}
    async with server:
        for i, q in enumerate((LONG if args.long else QUESTIONS)[: args.n]):
            for w, rec in recognizers.items():
                assistant.recognizer = rec
                await pipeline.on_forget("bench")
                by_window[w].append(await one(server.url, q, seed=i))
    await pipeline.aclose()
    if len(by_window) > 1:
        print(json.dumps({f"asr_window_{w:g}s": summary(args, assistant, rows) for w, rows in by_window.items()}, indent=1))
    else:
        print(json.dumps(summary(args, assistant, next(iter(by_window.values()))), indent=1))


async def compare_levers(args: argparse.Namespace) -> None:
    """Each question once per lever, in turn, on one daemon; the levers switched between questions."""
    levers = [x.strip() for x in args.levers.split(",") if x.strip()]
    settings, _ = load_settings(None, {
        "server": {"port": 0}, "model": {"threads": args.threads, "bundle": args.bundle},
        "audio": {"input_device": "none", "output_device": "none", "vad": "webrtc"},
        "activation": {"end_of_turn": "adaptive", "prefill_while_speaking_s": args.prefill_while_speaking,
                       **({"hangover_complete_ms": args.complete_ms} if args.complete_ms else {}),
                       "preemptive_reply": False},
    })  # fmt: skip
    assistant = Assistant(load_bundle(store.ensure_prepared(args.bundle, progress=False)), settings.model)
    pipeline = Pipeline(settings, assistant, make_tts(settings.tts), None, pace=False)
    await pipeline.warm_up()
    server = VoicedServer(settings.server, pipeline, TOKEN)
    pipeline.add_publisher(server)
    smart = SmartTurn()
    defaults = settings.activation.model_copy()
    asr_threads = assistant.recognizer.threads if assistant.recognizer is not None else 0
    recognizers = {(settings.model.asr_window_s, asr_threads): assistant.recognizer}

    def recognizer(window: float, threads: int) -> Recognizer | None:
        if (window, threads) not in recognizers:
            from voiced.model.asr import recognizer_for

            recognizers[window, threads] = rec = recognizer_for(
                assistant.bundle.dir, assistant.bundle.manifest.audio, threads=threads, window_s=window
            )
            rec.warm_up()
        return recognizers[window, threads]

    policies = {
        (mode, cls): cls(settings.activation.model_copy(update={"end_of_turn": mode}), settings.audio)
        for mode in ("adaptive", "model")
        for cls in (EndOfTurnPolicy, NoAsksPolicy)
    }

    def apply(lever: str) -> None:
        parts = lever.split("+")  # levers combine: fragment3+preempt
        before = ("noasks", "nonumbers", "allogits")  # the old behaviours: named, never part of `all`
        on = lambda name: (lever == "all" and name not in before) or any(p.startswith(name) for p in parts)  # noqa: E731
        model = on("model")
        # each connection is a new source, so a new Listener made with these
        pipeline.ears.policy = policies["model" if model else "adaptive", NoAsksPolicy if on("noasks") else EndOfTurnPolicy]
        pipeline.ears.turn_model = smart if model else None
        pipeline.ears.hearing = Hearing(transcribes=assistant.transcribes, turn_model=model)
        settings.audio.vad = "both" if on("silero") else "webrtc"
        settings.activation.preemptive_reply = on("preempt")
        fragment = next((p for p in parts if p.startswith("fragment")), None)
        n = int(fragment[len("fragment") :] or 3) if fragment else 3 if lever == "all" else 0
        chunker = NoNumbersChunker if on("nonumbers") else ClauseChunker
        responder_module.ClauseChunker = functools.partial(chunker, first_fragment_words=n)  # type: ignore[misc]
        value = lambda name, default: next((float(p[len(name) :]) for p in parts if p.startswith(name)), default)  # noqa: E731
        settings.activation.guess_after_ms = int(value("guess", defaults.guess_after_ms))
        settings.activation.prefill_while_speaking_s = value("pws", defaults.prefill_while_speaking_s)
        settings.activation.hangover_complete_ms = int(value("complete", defaults.hangover_complete_ms))
        assistant.recognizer = recognizer(value("window", settings.model.asr_window_s), int(value("asr", asr_threads)))
        assistant.engine.prune_logits = not on("allogits")

    def fresh_cache() -> None:
        assistant.conversation.reset()
        assistant.prepare_next_turn()

    rows: dict[str, list[dict]] = {lv: [] for lv in levers}
    async with server:
        asks = [(r * 100 + i, q) for r in range(args.rounds) for i, q in enumerate((LONG if args.long else QUESTIONS)[: args.n])]
        for k, (i, q) in enumerate(asks):
            for lever in levers if k % 2 == 0 else levers[::-1]:  # alternate the order too
                apply(lever)
                await pipeline.on_forget("bench")
                # An empty cache but the system prompt: the same question asked again would find its own
                # prompt still cached from the lever before, and prefill nothing.
                await run_in(pipeline._model, fresh_cache)
                adopted = pipeline.drafts.counts["adopted"]
                row = await one(server.url, q, seed=i)
                row["draft_adopted"] = pipeline.drafts.counts["adopted"] - adopted
                rows[lever].append(row)
    await pipeline.aclose()
    out = {}
    for lever, rs in rows.items():
        summ = summary(args, assistant, rs)
        summ["gap_ms"] = {"p50": pct([r["gap_ms"] for r in rs], 0.5), "p90": pct([r["gap_ms"] for r in rs], 0.9)}
        summ["lever"] = lever
        summ["drafts_adopted"] = sum(r["draft_adopted"] for r in rs)
        out[lever] = summ
    out["host_load_avg"] = list(os.getloadavg())
    print(json.dumps(out, indent=1))


class NoAsksPolicy(EndOfTurnPolicy):
    """A rise on words that ask proves nothing, as before it did: the `noasks` lever."""

    @staticmethod
    def asks(transcript: str) -> bool:
        return False


class NoNumbersChunker(ClauseChunker):
    """The first-fragment rule before numbers could end one: the `nonumbers` lever."""

    @staticmethod
    def _opens_phrase(word: str) -> bool:
        return ClauseChunker._opens_phrase(word) and word.strip("\"'").lower() not in ("equals", "plus", "minus", "times")

    @staticmethod
    def _fragment_end(word: str) -> bool:
        return ClauseChunker._fragment_end(word) and not word.strip("\"'()[]{}*_").isdigit()


def summary(args: argparse.Namespace, assistant: Assistant, rows: list[dict]) -> dict:
    lw = [r["last_word_to_first_audio_ms"] for r in rows]
    det = [r["detected_to_first_audio_ms"] for r in rows if r["detected_to_first_audio_ms"] is not None]
    window = [a - b for a, b in zip(lw, det)]
    med = lambda k: round(statistics.median(r[k] for r in rows if r[k] is not None), 1)  # noqa: E731
    return {
        "bundle": assistant.bundle.manifest.name, "threads": args.threads, "end_of_turn": args.end_of_turn,
        "n": len(rows), "questions": "long" if args.long else "short",
        "last_word_to_first_audio_ms": {"p50": pct(lw, 0.5), "p90": pct(lw, 0.9)},
        "beyond_end_of_turn_ms": {"p50": pct(det, 0.5), "p90": pct(det, 0.9)},
        "end_of_turn_window_ms": {"p50": pct(window, 0.5), "p90": pct(window, 0.9)},
        "median_stage_ms_after_detection": {"asr": med("asr_ms"), "first_token": med("first_token_ms"),
                                             "first_clause": med("first_clause_ms")},
        "median_prefill_tokens_at_turn": med("prefill_tokens"),
        "median_prefill_while_speaking_tokens": med("prefill_while_speaking_tokens"),
        "heard_word_for_word": f"{sum(normalise(r['heard'], True) == normalise(r['question'], True) for r in rows)}/{len(rows)}",
        "turns": rows,
    }  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
