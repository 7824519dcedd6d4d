"""TTS latency and speed: time to the first ~100 ms chunk and real-time factor, per engine, as one JSON object.

Clauses are the shape the chunker hands over (first clause short, later ones a sentence). Run alone on an idle
machine for stable figures: `python benchmarks/tts.py`.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

from voiced.speech.espeak import EspeakEngine
from voiced.speech.tts import TTSEngine, TTSUnavailable

CLAUSES = [
    "Sure, the capital of France is Paris,",
    "which has been its capital for more than a thousand years.",
    "It is also the country's largest city, with about two million people.",
    "Would you like to know more about it?",
]
REPEATS = 3


def measure(engine: TTSEngine) -> dict[str, float]:
    first, rtf = [], []
    for _ in range(REPEATS):
        for clause in CLAUSES:
            t0 = time.perf_counter()
            t_first = None
            samples = 0
            for chunk in engine.synthesize(clause):
                if t_first is None:
                    t_first = time.perf_counter() - t0
                samples += len(chunk)
            total = time.perf_counter() - t0
            first.append(t_first or total)
            rtf.append(total / (samples / engine.sample_rate))
    return {
        "first_chunk_ms_median": round(1000 * statistics.median(first), 2),
        "first_chunk_ms_max": round(1000 * max(first), 2),
        "rtf_median": round(statistics.median(rtf), 4),
        "sample_rate": engine.sample_rate,
    }


def main() -> int:
    out: dict[str, object] = {"clauses": len(CLAUSES), "repeats": REPEATS}
    out["espeak_library"] = measure(EspeakEngine())
    out["espeak_command"] = measure(EspeakEngine(use_library=False))
    try:
        from voiced.speech.piper import PiperEngine

        t0 = time.perf_counter()
        piper = PiperEngine()
        out["piper_load_s"] = round(time.perf_counter() - t0, 2)
        out["piper_1_thread"] = measure(piper)
        out["piper_2_threads"] = measure(PiperEngine(threads=2))
    except TTSUnavailable as e:
        out["piper"] = f"not installed: {e}"
    lib, cmd = out["espeak_library"], out["espeak_command"]
    out["first_chunk_ratio_command_over_library"] = round(cmd["first_chunk_ms_median"] / lib["first_chunk_ms_median"], 1)  # type: ignore[index]
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
