"""Audio front end cost and VAD quality: one JSON object on stdout.

CPU seconds per second of audio for a 48 kHz stereo microphone stream (30 ms blocks) resampled to 16 kHz mono
and segmented, and for each part; then the precision/recall of speech frames against the real-speech
`speech_segments_s` ground truth in ../shared/speech, both for raw webrtcvad and for the segmenter's turns.

Each voice detector (audio.vad = webrtc | silero | both) is measured in the same run: its segmenter cost, its
precision/recall on real speech, the turns it opens on non-speech made at run time (60 s of brown/white noise
with a 50 Hz hum whose level steps each second, three seeds; 30 s of instrumental music, two seeds), and
whether espeak questions that follow such noise are still found.

    python benchmarks/frontend.py [--detectors webrtc,silero,both]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from speech_files import local_path  # noqa: E402

from tests.support.noise import music, stepping_noise  # noqa: E402
from tests.support.speech import compose  # noqa: E402
from voiced.audio.capture import load_wav_16k  # noqa: E402
from voiced.audio.resample import StreamResampler, resample  # noqa: E402
from voiced.audio.vad import Segmenter, SpeechEnded, SpeechStarted  # noqa: E402
from voiced.config import AudioSettings  # noqa: E402

# ../shared/speech beside the checkout; a worktree one level deeper finds it one level up.
SPEECH = next(
    (p for p in (ROOT.parent / "shared" / "speech", ROOT.parents[1] / "shared" / "speech") if p.is_dir()), ROOT.parent / "shared" / "speech"
)
FRAME = 0.03


def cost(detector: str | None = None) -> dict[str, float]:
    """For the configured default detector unless one is named."""
    detector = detector or AudioSettings().vad
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
        seg = Segmenter(AudioSettings(vad=detector))
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


def quality(detector: str | None = None) -> dict[str, object]:
    detector = detector or AudioSettings().vad
    if not (SPEECH / "manifest.json").exists():
        return {"status": f"{SPEECH} is absent: no real-speech VAD figures in this run"}
    import webrtcvad

    settings = AudioSettings(vad=detector)
    tot = {"raw": np.zeros(3), "turns": np.zeros(3)}  # tp, fp, fn
    files, missing = [], []
    for entry in json.loads((SPEECH / "manifest.json").read_text()):
        truth = entry.get("speech_segments_s")
        if not truth:
            continue
        path = local_path(SPEECH, entry["file"])
        if path is None:
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
    out["note"] = f"raw = webrtcvad per 30 ms frame; turns = frames inside the segmenter's [t_start, t_end] (audio.vad = {detector})"
    return out


def _turns(settings: AudioSettings, pcm: np.ndarray) -> list[SpeechEnded]:
    seg = Segmenter(settings)
    events = []
    for i in range(0, len(pcm), 480):  # 30 ms at a time, as a microphone delivers it
        events += seg.feed(pcm[i : i + 480])
    events += seg.flush()
    assert sum(isinstance(e, SpeechStarted) for e in events) >= sum(isinstance(e, SpeechEnded) for e in events)
    return [e for e in events if isinstance(e, SpeechEnded)]


def non_speech(detector: str) -> dict[str, object]:
    settings = AudioSettings(vad=detector)
    noise_turns = [len(_turns(settings, stepping_noise(60.0, seed=s))) for s in range(3)]
    music_turns = [len(_turns(settings, music(30.0, seed=s))) for s in range(2)]
    # Speech after noise: 8 s of stepping noise, then a question at a normal level over the same noise.
    found = 0
    questions = ["What is the capital of France?", "Turn off the kitchen lights.", "How far away is the moon?"]
    for i, q in enumerate(questions):
        rec = compose([q, 1.5], noise_dbfs=None, seed=i)
        bed = stepping_noise(8.0 + rec.duration_s, seed=10 + i, hi_dbfs=-34.0)
        pcm = bed.astype(np.int32)
        start = 8 * 16000
        pcm[start : start + len(rec.pcm)] += rec.pcm
        s, e = rec.segments[0]
        turns = _turns(settings, pcm.clip(-32768, 32767).astype(np.int16))
        found += any(t.t_start < 8 + e and t.t_end > 8 + s for t in turns)
    return {
        "stepping_noise_60s_turns_per_seed": noise_turns,
        "stepping_noise_turns_per_minute": round(sum(noise_turns) / len(noise_turns), 2),
        "music_30s_turns_per_seed": music_turns,
        "questions_after_noise_found": f"{found}/{len(questions)}",
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--detectors", default="webrtc,silero,both")
    args = ap.parse_args()
    detectors = args.detectors.split(",")
    out: dict[str, object] = {"cost": cost(), "vad_quality": quality()}
    out["detectors"] = {
        d: {"segmenter_cpu_s_per_s": cost(d)["vad_segmenter_cpu_s_per_s"], "non_speech": non_speech(d), **{
            k: v for k, v in quality(d).items() if k.startswith("turns_") or k == "status"}}
        for d in detectors
    }  # fmt: skip
    print(json.dumps(out, indent=2))
