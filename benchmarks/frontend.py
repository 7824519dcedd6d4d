"""Audio front end cost and VAD quality: one JSON object on stdout.

CPU seconds per second of audio for a 48 kHz stereo microphone stream (30 ms blocks) resampled to 16 kHz mono
and segmented, and for each part; then the precision/recall of speech frames against the real-speech
`speech_segments_s` ground truth in ../shared/speech, both for raw webrtcvad and for the segmenter's turns.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.speech import compose  # noqa: E402
from voiced.audio.capture import load_wav_16k  # noqa: E402
from voiced.audio.resample import StreamResampler, resample  # noqa: E402
from voiced.audio.vad import Segmenter, SpeechEnded  # noqa: E402
from voiced.config import AudioSettings  # noqa: E402

SPEECH = ROOT.parent / "shared" / "speech"
FRAME = 0.03


def cost() -> dict[str, float]:
    rec = compose([1.0, "Hello there, how are you today?", 1.5, "Turn on the kitchen lights please.", 2.0, "What time is it?", 1.5] * 3)
    mono48 = resample(rec.pcm, 16000, 48000)
    stereo = np.stack([mono48, mono48], axis=1)
    seconds = len(rec.pcm) / 16000
    block = 1440
    blocks = [stereo[i : i + block] for i in range(0, len(stereo), block)]
    reps = 5
    t = time.process_time()
    for _ in range(reps):
        r = StreamResampler(48000, 16000, channels=2)
        out = [r.process(b) for b in blocks]
    res = (time.process_time() - t) / reps / seconds
    pieces = out
    t = time.process_time()
    for _ in range(reps):
        seg = Segmenter(AudioSettings())
        for p in pieces:
            seg.feed(p)
        seg.flush()
    vad = (time.process_time() - t) / reps / seconds
    return {
        "audio_s": round(seconds, 2),
        "resample_48k_stereo_to_16k_mono_cpu_s_per_s": round(res, 6),
        "vad_segmenter_cpu_s_per_s": round(vad, 6),
        "total_cpu_s_per_s": round(res + vad, 6),
        "total_percent_of_one_core": round(100 * (res + vad), 3),
        "goal_percent_of_one_core": 1.0,
    }


def labels(segments: list[tuple[float, float]], n: int) -> np.ndarray:
    y = np.zeros(n, bool)
    centres = (np.arange(n) + 0.5) * FRAME
    for s, e in segments:
        y |= (centres >= s) & (centres < e)
    return y


def quality() -> dict[str, object]:
    if not (SPEECH / "manifest.json").exists():
        return {"status": f"{SPEECH} is absent: no real-speech VAD figures in this run"}
    import webrtcvad

    settings = AudioSettings()
    tot = {"raw": np.zeros(3), "turns": np.zeros(3)}  # tp, fp, fn
    files, missing = [], []
    for entry in json.loads((SPEECH / "manifest.json").read_text()):
        truth = entry.get("speech_segments_s")
        if not truth:
            continue
        path = SPEECH / entry["file"] if isinstance(entry["file"], str) else None
        if path is None or not path.exists():
            missing.append(entry["file"] if isinstance(entry["file"], str) else entry["file"].get("path"))
            continue
        pcm = load_wav_16k(path)
        n = len(pcm) // 480
        y = labels([tuple(s) for s in truth], n)
        v = webrtcvad.Vad(settings.vad_aggressiveness)
        raw = np.array([v.is_speech(pcm[i * 480 : (i + 1) * 480].tobytes(), 16000) for i in range(n)])
        seg = Segmenter(settings)
        turns = [(e.t_start, e.t_end) for e in seg.feed(pcm) + seg.flush() if isinstance(e, SpeechEnded)]
        pred = labels(turns, n)
        for name, p in (("raw", raw), ("turns", pred)):
            tot[name] += [(p & y).sum(), (p & ~y).sum(), (~p & y).sum()]
        files.append({"file": entry["file"], "truth_turns": len(truth), "found_turns": len(turns)})
    out: dict[str, object] = {"files": files, "not_present": missing}
    for name, (tp, fp, fn) in tot.items():
        out[f"{name}_precision"] = round(tp / max(tp + fp, 1), 3)
        out[f"{name}_recall"] = round(tp / max(tp + fn, 1), 3)
    out["note"] = "raw = webrtcvad per 30 ms frame; turns = frames inside the segmenter's [t_start, t_end]"
    return out


if __name__ == "__main__":
    print(json.dumps({"cost": cost(), "vad_quality": quality()}, indent=2))
