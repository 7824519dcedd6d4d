"""The speculative transcript at the end of a turn: Whisper's WER on a segment up to its last pause, cut at the
pause's first frame ("at_pause", what the pipeline took before) vs SPECULATE_AFTER_S later ("after_wait", what
it takes now, the last word's soft end included), side by side on real speech (../shared/speech) and espeak.

    .venv/bin/python benchmarks/pause_asr.py [--bundle default] [--speech DIR] [--espeak 20] [--show]

Prints one JSON object; with --show, every clip whose two transcripts differ goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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
from voiced.model.asr import recognizer_for  # noqa: E402
from voiced.model.bundle import load_bundle  # noqa: E402
from voiced.pipeline import SPECULATE_AFTER_S  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default="default")
    ap.add_argument("--speech", type=Path, default=Path(os.environ.get("VOICED_SPEECH_DIR", "/work/shared/speech")))
    ap.add_argument("--espeak", type=int, default=20, help="espeak clips of the first N real transcripts")
    ap.add_argument("--show", action="store_true")
    args = ap.parse_args()
    settings = Settings()
    bundle = load_bundle(store.ensure_prepared(args.bundle, progress=False))
    rec = recognizer_for(bundle.dir, bundle.manifest.audio, window_s=settings.model.asr_window_s)
    if not (args.speech / "manifest.json").is_file():
        sys.exit(f"no real speech at {args.speech}: pass --speech DIR or set VOICED_SPEECH_DIR")
    real, _ = load_real(args.speech, None)
    clips = [("real", e["transcript"], load_wav_16k(args.speech / e["file"])) for e in real]
    clips += [("espeak", e["transcript"], espeak_clip(e["transcript"])) for e in real[: args.espeak]]
    wait = int(SPECULATE_AFTER_S * vad.RATE)
    refs: dict[str, list[str]] = {}
    hyps: dict[tuple[str, str], list[str]] = {}
    for kind, ref, pcm in clips:
        texts = {"at_pause": [], "after_wait": []}
        for audio, p in cuts(pcm, settings):
            texts["at_pause"].append(rec.transcribe(audio[:p]).text)
            texts["after_wait"].append(rec.transcribe(audio[: p + wait]).text)
        refs.setdefault(kind, []).append(ref)
        for k, t in texts.items():
            hyps.setdefault((kind, k), []).append(" ".join(t))
        if args.show and texts["at_pause"] != texts["after_wait"]:
            print(
                f"{kind} | {ref}\n  at_pause:   {' '.join(texts['at_pause'])}\n  after_wait: {' '.join(texts['after_wait'])}",
                file=sys.stderr,
            )
    print(json.dumps({
        f"{kind}@{k}": {"wer": wer(refs[kind], h, False), "wer_digits_spelled": wer(refs[kind], h, True), "clips": len(h)}
        for (kind, k), h in hyps.items()
    }))  # fmt: skip


if __name__ == "__main__":
    main()
