"""How short the first spoken piece of a reply can be: one JSON object.

For each `first_fragment_words` N (0 = the first piece is a clause), over typical one-sentence replies of the
default bundle: the words and characters of the first piece (the model must write that much, plus the word
after it, before any audio), how its espeak audio ends (the pitch slope of its last 300 ms: a fall steeper
than -12 semitones/s is a sentence's end, heard as "done" before the reply goes on) and the pause espeak puts
after it, and how often the piece ended where the rest reads as a broken phrase. The same pieces without
the trailing comma are measured too: the comma is what keeps the melody going.

    python benchmarks/first_fragment.py
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import numpy as np
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voiced.audio.endpoint import EndOfTurnPolicy, prosody  # noqa: E402
from voiced.config import TTSSettings  # noqa: E402
from voiced.speech.chunker import _NO_FRAGMENT_END, ClauseChunker  # noqa: E402
from voiced.speech.tts import make_tts  # noqa: E402

# Replies of the 1.5B default bundle to benchmarks/voice_to_voice.py's questions (short and --long runs).
REPLIES = [
    "The capital of France is Paris.",
    "A spider has eight legs.",
    "The largest ocean on Earth is the Pacific Ocean.",
    "Mars is called the red planet.",
    "When you mix blue and yellow, you get green.",
    "Tokyo is the capital of Japan.",
    "There are seven days in every week.",
    "The capital city of Japan is Tokyo.",
    "You have 77 apples now.",
    "The planet called the Red Planet is Mars.",
    "When you mix blue and yellow together, you get green.",
    "The largest ocean on the whole planet Earth is the Pacific Ocean.",
    "Octopuses have three hearts and blue blood.",
    "Sure, I have set a timer for ten minutes.",
]


def first_piece(text: str, n: int) -> str:
    c = ClauseChunker(first_fragment_words=n)
    out: list[str] = []
    for ch in text:  # a character at a time: the earliest the chunker can cut
        out += c.push(ch)
        if out:
            return out[0]
    return (out + c.flush())[0]


def ending(tts, text: str) -> tuple[float | None, float]:
    """(pitch slope of the last 300 ms of voice in st/s, trailing pause in s) of espeak saying `text`."""
    pcm = np.concatenate(list(tts.synthesize(text)))
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 300)
    pause = (len(pcm) - loud[-1]) / tts.sample_rate
    x = soxr.resample(pcm[: loud[-1]].astype(np.float32), tts.sample_rate, 16000).astype(np.int16)
    return prosody(x[-4800:]).pitch_slope, pause


def main() -> None:
    tts = make_tts(TTSSettings())
    out: dict = {"replies": len(REPLIES), "fall_st_per_s": EndOfTurnPolicy.FALL_ST_PER_S}
    for n in (0, 2, 3, 4, 5):
        pieces = [first_piece(r, n) for r in REPLIES]
        cut = [p for p, r in zip(pieces, REPLIES) if p.rstrip(",") != r and not p.endswith((",", ".", "!", "?"))]
        fragments = [p for p, r in zip(pieces, REPLIES) if p.endswith(",") and "," not in r[: len(p)]]
        row: dict = {
            "first_piece_words_median": statistics.median(len(p.split()) for p in pieces),
            "first_piece_chars_median": statistics.median(len(p) for p in pieces),
            "whole_sentence_first": sum(p.rstrip(",") == r for p, r in zip(pieces, REPLIES)),
            "fragments": len(fragments),
            "fragments_ending_on_a_word_that_announces_more": sum(p.rstrip(",").split()[-1].lower() in _NO_FRAGMENT_END for p in fragments),
            "cut_without_punctuation": len(cut),
            "examples": pieces[:4],
        }
        if fragments:
            with_comma = [ending(tts, p) for p in fragments]
            bare = [ending(tts, p.rstrip(",")) for p in fragments]
            for name, ends in (("with_comma", with_comma), ("without_comma", bare)):
                slopes = [s for s, _ in ends if s is not None]
                row[name] = {
                    "sounds_final_share": round(sum(s <= EndOfTurnPolicy.FALL_ST_PER_S for s in slopes) / max(len(slopes), 1), 2),
                    "end_pitch_slope_st_per_s_median": round(statistics.median(slopes), 1) if slopes else None,
                    "pause_after_s_median": round(statistics.median(p for _, p in ends), 3),
                }
        out[f"first_fragment_words_{n}"] = row
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
