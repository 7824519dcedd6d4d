"""The speculative transcript at the end of a turn: Whisper's WER and time on a segment up to its last pause, its
audio taken `--waits` seconds into the pause (activation.guess_after_ms; 0 = the pause's first frame, where a last
word's soft end may be cut), side by side on real speech (../shared/speech) and espeak.

`tail*` arms try a cheaper guess for long turns (issue 20): the words of the daemon's last early pass
(activation.prefill_while_speaking_s, all but its last word) as Whisper's previous text, and only the audio after
them (from 1 s before their end) decoded, the two stitched. Window 0 = model.asr_window_s, else that window.
The `prefix` arm decodes the whole segment with those words forced as the transcript's start, so the guess only
extends what was prefilled while speaking.

    .venv/bin/python benchmarks/pause_asr.py [--bundle default] [--speech DIR] [--espeak 20] [--waits 0,0.06,0.12]
        [--tails 0,6] [--early 2] [--show]

Prints one JSON object; with --show, every clip whose transcripts differ goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from asr import load_real, wer  # noqa: E402

from tests.support.speech import espeak  # noqa: E402
from voiced.audio import vad  # noqa: E402
from voiced.audio.capture import load_wav_16k  # noqa: E402
from voiced.config import Settings  # noqa: E402
from voiced.model import store  # noqa: E402
from voiced.model.asr import Recognizer, Transcript, _ShortWindow, recognizer_for  # noqa: E402
from voiced.model.bundle import load_bundle  # noqa: E402


def espeak_clip(text: str) -> np.ndarray:
    """espeak speech between digital silence, as a padded WAV or a noise-suppressed client sends it."""
    return np.concatenate([np.zeros(vad.RATE // 2, np.int16), espeak(text, wpm=170), np.zeros(vad.RATE, np.int16)])


def cuts(pcm: np.ndarray, settings: Settings) -> list[tuple[np.ndarray, int]]:
    """Each turn's audio and where its last pause began (samples), as the pipeline sees them."""
    seg = vad.Segmenter(settings.audio)
    out, audio, pause_at = [], [], None
    pcm = np.concatenate([pcm, np.zeros(vad.RATE, np.int16)])
    for i in range(0, len(pcm), 480):
        for ev in seg.feed(pcm[i : i + 480]):
            if isinstance(ev, vad.SpeechStarted):
                audio, pause_at = [ev.pre_roll], None
            elif isinstance(ev, vad.SpeechFrames):
                audio.append(ev.pcm)
            elif isinstance(ev, vad.SpeechPaused):
                pause_at = sum(len(a) for a in audio)
            elif isinstance(ev, vad.SpeechResumed):
                pause_at = None
            elif isinstance(ev, vad.SpeechEnded):
                out.append((ev.audio, len(ev.audio) if pause_at is None else pause_at))
    return out


def early_passes(rec: Recognizer, audio: np.ndarray, upto: int, every_s: float) -> list[tuple[str, int]]:
    """The daemon's early passes while the user speaks: the segment so far every `every_s` of audio before the
    pause, each pass's words, and the samples it heard."""
    step = int(every_s * vad.RATE)
    return [(rec.transcribe(audio[:end]).text, end) for end in range(step, upto, step)]


def but_last(known: tuple[str, int] | None) -> tuple[str, int] | None:
    """An early pass's words but the last (the cut may split it): what the daemon prefills."""
    return None if known is None else (" ".join(known[0].split()[:-1]), known[1])


def tail_guess(rec: Recognizer, audio: np.ndarray, known: tuple[str, int] | None, window_s: float) -> Transcript:
    """The known words, then Whisper's decode of the audio after them (conditioned on them as previous text),
    stitched; a full pass where nothing is known. Reaches into the recogniser's short-window decoder: an
    experiment, not a feature (see the module docstring)."""
    if known is None or not known[0] or rec._short is None:
        return rec.transcribe(audio)
    short = rec._short
    t0 = time.perf_counter()
    tail = audio[max(0, known[1] - vad.RATE) :].astype(np.float32) / 32768
    window = max(window_s or rec.window_s, len(tail) / vad.RATE + 3.0)
    previous = [short.tokenizer.sot_prev, *short.tokenizer.encode(" " + known[0])]
    said = _greedy(short, tail, window, [*previous, *short.prompt])
    return Transcript(stitch(known[0], said), 1000 * (time.perf_counter() - t0))


def _greedy(short: _ShortWindow, pcm: np.ndarray, window_s: float, prompt: list[int]) -> str:
    """The recogniser's short-window encode, then a greedy decode after `prompt` (the arms differ only in it)."""
    result = short.model.model.generate(
        short.encode(pcm, window_s), [prompt], beam_size=1, max_length=len(prompt) + 60, suppress_blank=True,
        suppress_tokens=short.suppress,
    )[0]  # fmt: skip
    return str(short.tokenizer.decode([x for x in result.sequences_ids[0] if x < short.tokenizer.eot]).strip())


def prefix_guess(rec: Recognizer, audio: np.ndarray, known: tuple[str, int] | None) -> Transcript:
    """The whole segment decoded with the known words forced as the start of the transcript (Whisper's prefix),
    so the guess can only extend what the early pass prefilled."""
    if known is None or not known[0] or rec._short is None:
        return rec.transcribe(audio)
    short = rec._short
    t0 = time.perf_counter()
    pcm = audio.astype(np.float32) / 32768
    window = max(rec.window_s, len(pcm) / vad.RATE + 3.0)
    said = _greedy(short, pcm, window, [*short.prompt, *short.tokenizer.encode(" " + known[0])])
    return Transcript(said, 1000 * (time.perf_counter() - t0))


def stitch(known: str, tail: str) -> str:
    """`known`, then the tail's words after them: a run of the tail's first words that repeats the end of `known`
    (Whisper may say again what the overlap holds) is dropped, the longest first."""
    k, t = known.split(), tail.split()
    bare = lambda w: "".join(c for c in w.lower() if c.isalnum())  # noqa: E731
    for j in range(max(0, len(k) - 6), len(k)):
        n = len(k) - j
        if n <= len(t) and [bare(w) for w in k[j:]] == [bare(w) for w in t[:n]]:
            return " ".join(k + t[n:])
    return " ".join(k + t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default="default")
    ap.add_argument("--speech", type=Path, default=Path(os.environ.get("VOICED_SPEECH_DIR", "/work/shared/speech")))
    ap.add_argument("--espeak", type=int, default=20, help="espeak clips of the first N real transcripts")
    ap.add_argument("--waits", default="0,0.06,0.12", help="seconds into the pause the guess takes its audio")
    ap.add_argument("--early", type=float, default=2.0, help="seconds of speech between early passes (the tail arms)")
    ap.add_argument("--tails", default="0,6", help="tail arms' encoder windows (0 = model.asr_window_s; '' = none)")
    ap.add_argument("--show", action="store_true")
    args = ap.parse_args()
    settings = Settings()
    bundle = load_bundle(store.ensure_prepared(args.bundle, progress=False))
    rec = recognizer_for(bundle.dir, bundle.manifest.audio, window_s=settings.model.asr_window_s)
    rec.warm_up()
    if not (args.speech / "manifest.json").is_file():
        sys.exit(f"no real speech at {args.speech}: pass --speech DIR or set VOICED_SPEECH_DIR")
    real, _ = load_real(args.speech, None)
    clips = [("real", e["transcript"], load_wav_16k(args.speech / e["file"])) for e in real]
    clips += [("espeak", e["transcript"], espeak_clip(e["transcript"])) for e in real[: args.espeak]]
    waits = [float(w) for w in args.waits.split(",")]
    tails = [float(w) for w in args.tails.split(",") if w]
    wait_at = settings.activation.guess_after_ms * vad.RATE // 1000  # the tail arms take the daemon's guess
    refs: dict[str, list[str]] = {}
    hyps: dict[tuple[str, str], list[str]] = {}
    took: dict[tuple[str, str], list[float]] = {}
    for kind, ref, pcm in clips:
        texts: dict[str, list[str]] = {}

        def arm(name: str, t: Transcript) -> None:
            texts.setdefault(name, []).append(t.text)
            took.setdefault((kind, name), []).append(t.ms)

        for audio, p in cuts(pcm, settings):
            for w in waits:
                arm(f"wait_{w:g}", rec.transcribe(audio[: p + int(w * vad.RATE)]))
            known = early_passes(rec, audio, p, args.early)
            last = known[-1] if known else None
            arm("prefix", prefix_guess(rec, audio[: p + wait_at], but_last(last)))
            for tw in tails:
                arm(f"tail{tw:g}", tail_guess(rec, audio[: p + wait_at], but_last(last), tw))
        refs.setdefault(kind, []).append(ref)
        for k, t in texts.items():
            hyps.setdefault((kind, k), []).append(" ".join(t))
        if args.show and len({" ".join(t) for t in texts.values()}) > 1:
            print(f"{kind} | {ref}", *(f"  {k}: {' '.join(t)}" for k, t in texts.items()), sep="\n", file=sys.stderr)
    print(json.dumps({
        f"{kind}@{k}": {
            "wer": round(wer(refs[kind], h, False), 4), "wer_digits_spelled": round(wer(refs[kind], h, True), 4),
            "asr_ms_p50": round(float(np.median(took[(kind, k)])), 1), "asr_ms_p90": round(float(np.percentile(took[(kind, k)], 90)), 1),
            "clips": len(h),
        }
        for (kind, k), h in hyps.items()
    }))  # fmt: skip


if __name__ == "__main__":
    main()
