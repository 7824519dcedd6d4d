"""Smart Turn v3.2: p(the speaker has finished their turn) from the audio itself, in one small ONNX pass.

The model (Daily's, BSD-2-Clause; taken from the pipecat-ai wheel by voiced.audio.assets) reads the last 8 s
of 16 kHz speech as Whisper log-mel features: 80 mel bands x 800 frames of 10 ms, computed on an 8 s buffer
whose audio is right-aligned (zeros in front of a shorter turn, the oldest audio cut from a longer one), with
the waveform normalised to zero mean and unit variance first, as transformers' WhisperFeatureExtractor does
with do_normalize=True. faster_whisper's numpy FeatureExtractor (already a run-time dependency) computes the
same log-mel as that extractor once it is given no end padding; the normalisation is done here.

It hears what words cannot: a level or rising melody and a drawn-out last syllable mid-sentence, a fall at the
end. It knows nothing of the words, so voiced.audio.endpoint combines its probability with the transcript.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voiced.audio import RATE, assets

WINDOW_S = 8
_NORM_EPS = 1e-7


class SmartTurn:
    """One ONNX session; `probability` is thread-safe (onnxruntime sessions are), so one instance serves all."""

    def __init__(self, path: Path | None = None, threads: int = 1) -> None:
        import onnxruntime as ort
        from faster_whisper.feature_extractor import FeatureExtractor

        self.path = path or assets.model_path("smart-turn")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(self.path), sess_options=so, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._features = FeatureExtractor(feature_size=80, sampling_rate=RATE, chunk_length=WINDOW_S)

    def features(self, pcm: np.ndarray) -> np.ndarray:
        """(80, 800) float32 log-mel of the last WINDOW_S of `pcm` (int16, or float in [-1, 1]), right-aligned."""
        x = np.asarray(pcm)
        x = x.astype(np.float32) / 32768.0 if x.dtype == np.int16 else x.astype(np.float32)
        n = RATE * WINDOW_S
        if len(x) >= n:
            x = x[-n:]
        else:
            x = np.concatenate((np.zeros(n - len(x), np.float32), x))
        x = (x - x.mean()) / np.sqrt(x.var() + _NORM_EPS)
        return np.asarray(self._features(x, padding=0), dtype=np.float32)

    def probability(self, pcm: np.ndarray) -> float:
        """p(end of turn) for the turn's audio so far (int16 16 kHz mono, its last ~200 ms the pause)."""
        feats = self.features(pcm)[None]
        out = self._session.run(None, {self._input: feats})[0]
        return float(np.asarray(out).reshape(-1)[0])
