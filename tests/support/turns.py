"""Turn-taking on real audio: the real Segmenter fed frame by frame, an end-of-turn policy consulted at each
pause the way the pipeline does it (speculative ASR at the pause, its answer arriving some time later).

Shared by tests/test_endpoint.py and benchmarks/turn_taking.py, so the test checks the same loop the
benchmark measures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from tests.support.speech import Recording, compose
from voiced.audio.endpoint import TAIL_MS, EndOfTurnPolicy, Hangover
from voiced.audio.vad import Segmenter, SpeechEnded, SpeechPaused, SpeechResumed, SpeechStarted
from voiced.config import AudioSettings

RATE = 16000

# Questions with the pauses people make: after a comma, around "um", before the last words.
PAUSED_TURNS: list[list[str | float]] = [
    ["I'd like to know,", 0.9, "what the weather is like in Berlin tomorrow."],
    ["Set a timer for", 0.8, "ten minutes."],
    ["Tell me about the moon and", 0.9, "how far away it is."],
    ["Can you, um,", 0.9, "turn off the kitchen lights?"],
    ["Remind me to call my mother,", 0.8, "um,", 0.8, "tomorrow morning."],
    ["What is the capital of", 0.8, "Australia?"],
]
# Turns without a pause inside: only latency is at stake.
PLAIN_TURNS: list[list[str | float]] = [
    ["What is the capital of France?"],
    ["What time is it in Tokyo?"],
    ["Please turn off the kitchen lights."],
]


@dataclass
class Outcome:
    """`cut_early`: the turn ended before its last words were spoken. `latency_ms`: end-of-turn decision
    minus the true end of speech (the last espeak sample)."""

    cut_early: bool
    latency_ms: float | None
    decisions: list[tuple[float, Hangover, str | None]] = field(default_factory=list)


def make_turn(parts: list[str | float], seed: int = 0) -> Recording:
    # 1 s of room tone after the speech so that even the longest hangover can elapse.
    return compose([0.4, *parts, 2.5], noise_dbfs=-60.0, seed=seed)


def simulate(
    rec: Recording,
    policy: EndOfTurnPolicy,
    audio: AudioSettings,
    transcribe: Callable[[np.ndarray], tuple[str, float]] | None = None,
    probe_ms: int = 120,
    asr_delay_ms: float | None = None,
    turn_model: Callable[[np.ndarray], float] | None = None,
) -> Outcome:
    """Feed `rec` 30 ms at a time. At a pause that lasts `probe_ms`, the policy gets the prosody tail at once
    (and `turn_model`'s p(end of turn) for the audio so far, when given: the pipeline runs it at the same
    moment, before the words); if `transcribe` is given (pcm -> (text, compute ms)), its text arrives after
    `asr_delay_ms` (or the measured compute time when None) of further audio, unless speech resumed meanwhile."""
    seg = Segmenter(audio)
    frame = seg.frame_len
    seg.hangover_ms = policy.at_start().ms
    segment: list[np.ndarray] = []
    paused_at: float | None = None
    pending: tuple[float, str, np.ndarray] | None = None  # (audio time the ASR answer lands, its text, the tail)
    turn_p: float | None = None
    probed = False
    out = Outcome(cut_early=False, latency_ms=None)
    speech_end = rec.segments[-1][1]
    for i in range(0, len(rec.pcm) - frame + 1, frame):
        t = (i + frame) / RATE
        for ev in seg.feed(rec.pcm[i : i + frame]):
            if isinstance(ev, SpeechStarted):
                segment = [ev.pre_roll] if ev.pre_roll.size else []
            elif isinstance(ev, SpeechPaused):
                paused_at, probed, pending = ev.t, False, None
            elif isinstance(ev, SpeechResumed):
                paused_at, pending = None, None
                seg.hangover_ms = policy.at_start().ms
            elif isinstance(ev, SpeechEnded):
                out.latency_ms = 1000 * (t - speech_end)
                out.cut_early = ev.t_end < speech_end - 0.15
                return out
            if hasattr(ev, "pcm"):
                segment.append(ev.pcm)
        if paused_at is None or not seg.in_speech:
            continue
        if not probed and t - paused_at >= probe_ms / 1000:
            probed = True
            audio_so_far = np.concatenate(segment)
            voiced_until = len(audio_so_far) - int((t - paused_at) * RATE)
            tail = audio_so_far[max(0, voiced_until - RATE * TAIL_MS // 1000) : voiced_until]
            turn_p = turn_model(audio_so_far) if turn_model is not None and policy.needs_model(None, tail) else None
            h = policy.decide(None, tail, words_pending=transcribe is not None, turn_p=turn_p if transcribe is None else None)
            seg.hangover_ms = h.ms
            out.decisions.append((t, h, None))
            if transcribe is not None:
                text, ms = transcribe(audio_so_far)
                pending = (t + (ms if asr_delay_ms is None else asr_delay_ms) / 1000, text, tail)
        if pending is not None and t >= pending[0]:
            h = policy.decide(pending[1], pending[2], turn_p=turn_p)  # in the pipeline it runs after the words
            seg.hangover_ms = h.ms
            out.decisions.append((t, h, pending[1]))
            pending = None
    return out
