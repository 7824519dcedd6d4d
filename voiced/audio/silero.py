"""Silero VAD (MIT; the ONNX file from the silero-vad wheel, see voiced.audio.assets): p(speech) per window.

The model is recurrent: each 512-sample window (32 ms at 16 kHz) is scored together with the last 64 samples
of the window before it, and a (2, 1, 128) state carries what it has heard. So a stream needs its own state:
one `SileroModel` (the ONNX session, shared by every source) and one `SileroStream` per source. The
segmenter's frames are 30 ms, not 32, so the stream keeps the samples of a partial window and gives each
frame the score of the last window that ended inside or before it (at most one window late).

Unlike webrtcvad it was trained to tell voice from noise, hum and music, which is what a level step of
fan noise needs; a state that has listened to long non-speech can grow deaf to speech that follows, so it is
cleared after RESET_AFTER_S of audio scored clearly as non-speech (reset only then, never mid-speech).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from voiced.audio import RATE, assets

WINDOW = 512
CONTEXT = 64
RESET_AFTER_S = 5.0
_QUIET = 0.1  # a window scored below this is clearly not speech


class SileroModel:
    """The ONNX session (thread-safe, shared); single-threaded, since one window is ~0.1 ms of work."""

    def __init__(self, path: Path | None = None) -> None:
        import onnxruntime as ort

        self.path = path or assets.model_path("silero-vad")
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(self.path), sess_options=so, providers=["CPUExecutionProvider"])
        self._sr = np.array(RATE, dtype=np.int64)

    def score(self, window: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        """(p(speech), new state) for one (1, CONTEXT + WINDOW) float32 window."""
        out, new_state = self._session.run(None, {"input": window, "state": state, "sr": self._sr})
        return float(out[0, 0]), new_state

    def stream(self) -> SileroStream:
        return SileroStream(self)


class SileroStream:
    """One source's Silero state. `frame_probs(frames)` scores consecutive int16 frames of any equal length."""

    def __init__(self, model: SileroModel) -> None:
        self.model = model
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)
        self._last = 0.0
        self._quiet_windows = 0

    def frame_probs(self, frames: np.ndarray) -> np.ndarray:
        """p(speech) per row of `frames` (int16, n x frame_len): the last window scored by each frame's end."""
        n, flen = frames.shape
        x = np.concatenate((self._pending, frames.reshape(-1).astype(np.float32) / 32768.0))
        done = len(x) // WINDOW
        probs = np.empty(done, np.float32)
        for i in range(done):
            win = x[i * WINDOW : (i + 1) * WINDOW]
            p, self._state = self.model.score(np.concatenate((self._context, win))[None], self._state)
            self._context = win[-CONTEXT:]
            probs[i] = p
            self._quiet_windows = self._quiet_windows + 1 if p < _QUIET else 0
            if self._quiet_windows * WINDOW >= RESET_AFTER_S * RATE:
                self._state = np.zeros_like(self._state)
                self._quiet_windows = 0
        # Window i ends at sample (i + 1) * WINDOW - len(pending) of this call's frames.
        ends = (np.arange(done) + 1) * WINDOW - len(self._pending)
        frame_ends = (np.arange(n) + 1) * flen
        idx = np.searchsorted(ends, frame_ends, side="right") - 1
        out = np.where(idx >= 0, probs[np.clip(idx, 0, None)] if done else self._last, self._last).astype(np.float32)
        if done:
            self._last = float(probs[-1])
        self._pending = x[done * WINDOW :]
        return out


@functools.lru_cache(maxsize=1)
def shared_model() -> SileroModel:
    """The process's one Silero session (loaded on first use; FrontendModelError naming the fix when absent)."""
    return SileroModel()
