"""The daemon's own Listener driven over a recording in stream time: what tests/test_endpoint.py checks and
benchmarks/turn_taking.py measures, with no copy of the turn-taking loop.

Audio goes in `frame_ms` at a time. A guess the Listener asks for is transcribed at once, and its words are handed
back after `asr_delay_ms` more of audio (or the transcriber's measured compute time when None), as they would land
on a live stream; the turn model, where the Listener wants it, answers with the words. Early passes (prefill while
speaking) only fill a cache, so they are not run here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from voiced.audio import RATE
from voiced.audio.endpoint import Hangover
from voiced.turn import listener as li

Transcriber = Callable[[np.ndarray], tuple[str, float]]  # pcm -> (text, compute ms)


@dataclass
class Replay:
    """`ended_at`: stream seconds when the turn ended (the decision); `turn`: the finished turn, None if it never
    ended; `t_end`: its last voiced moment; `decisions`: (stream s, hangover, the words it followed or None)."""

    ended_at: float | None = None
    t_end: float | None = None
    turn: li.UserTurn | None = None
    decisions: list[tuple[float, Hangover, str | None]] = field(default_factory=list)

    def cut_early(self, speech_end: float, slack_s: float = 0.15) -> bool:
        """The turn ended before its last words (those after `speech_end - slack_s`) were spoken."""
        return self.t_end is not None and self.t_end < speech_end - slack_s

    def latency_ms(self, speech_end: float) -> float | None:
        return None if self.ended_at is None else 1000 * (self.ended_at - speech_end)


def replay(
    listener: li.Listener,
    pcm: np.ndarray,
    transcribe: Transcriber | None = None,
    asr_delay_ms: float | None = None,
    turn_model: Callable[[np.ndarray], float] | None = None,
    frame_ms: int = 30,
) -> Replay:
    """Feed `pcm` until the first turn ends (or the audio does)."""
    out = Replay()
    frame = RATE * frame_ms // 1000
    pending: list[tuple[float, int, str | None, float | None]] = []  # (lands at, job, words, turn model's p)
    last: Hangover | None = None
    for i in range(0, len(pcm) - frame + 1, frame):
        t = (i + frame) / RATE
        for ev in listener.feed(pcm[i : i + frame], now=t):
            if isinstance(ev, li.Transcribe) and ev.guess:
                text, ms = transcribe(ev.audio) if transcribe is not None else (None, 0.0)
                turn_p = turn_model(ev.audio) if turn_model is not None and listener.wants_turn_model(ev.job, text) else None
                delay = ms if asr_delay_ms is None else asr_delay_ms
                pending.append((t + delay / 1000, ev.job, text, turn_p))
            elif isinstance(ev, li.Ended):
                out.ended_at, out.t_end = t, ev.t_end
            elif isinstance(ev, li.UserTurn):
                out.turn = ev
        if out.ended_at is not None:
            return out
        if listener.hangover is not last:  # the pause's first frame, or speech resumed
            last = listener.hangover
            out.decisions.append((t, last, None))
        for landed in [p for p in pending if p[0] <= t]:
            pending.remove(landed)
            listener.on_guess(landed[1], landed[2], landed[3], now=t)  # its Prefill request: no cache here
            if listener.hangover is not last:
                last = listener.hangover
                out.decisions.append((t, last, landed[2]))
    return out
