"""Encoder-free audio in: 16 kHz PCM -> the decoder's input embeddings for the audio placeholder tokens.

Gemma 4 (gemma4_unified) has no audio encoder: the waveform is cut into 40 ms frames of 640 raw samples and each
frame becomes one soft token through RMSNorm + Linear (audio_projector.onnx). The framing here is exactly
transformers' Gemma4UnifiedAudioFeatureExtractor: float samples zero-padded at the end to a multiple of the
frame size, then reshaped; nothing else (no mel, no mean/variance normalisation, no dithering). int16 PCM becomes
float as sample / 32768, the convention of soundfile/librosa that produced the model's training audio.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from voiced.model.bundle import BundleError
from voiced.model.manifest import ProjectorAudio

log = logging.getLogger(__name__)


def pcm_to_float(pcm: np.ndarray | bytes) -> np.ndarray:
    """int16 PCM (array or raw little-endian bytes) -> float32 in [-1, 1); float input passes through."""
    a = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, (bytes, bytearray, memoryview)) else np.asarray(pcm)
    if a.ndim != 1:
        raise ValueError(f"audio must be mono 1-D samples, got shape {a.shape}: downmix before projecting")
    if a.dtype == np.int16:
        return a.astype(np.float32) / 32768.0
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float32, copy=False)
    raise ValueError(f"audio samples must be int16 PCM or float, got {a.dtype}")


def frame_audio(samples: np.ndarray, frame_samples: int) -> np.ndarray:
    """[n] float32 -> [ceil(n / frame), frame] float32, zero-padded at the end (the feature extractor's rule)."""
    pad = (-len(samples)) % frame_samples
    if pad:
        samples = np.pad(samples, (0, pad))
    return samples.reshape(-1, frame_samples).astype(np.float32, copy=False)


class AudioProjector:
    """Runs audio_projector.onnx; one session per bundle, reused for every segment."""

    def __init__(self, bundle_dir: Path, spec: ProjectorAudio, threads: int = 2) -> None:
        self.spec = spec
        path = Path(bundle_dir) / spec.file
        if not path.is_file():
            raise BundleError(Path(bundle_dir), f"{spec.file} (the audio projector) is missing")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors for corrupt graphs / missing data
            raise BundleError(Path(bundle_dir), f"{spec.file} cannot be loaded ({e})") from None
        self._input = self._session.get_inputs()[0].name
        self._output = self._session.get_outputs()[0].name
        self.hidden_size = int(self._session.get_outputs()[0].shape[-1])

    def frames(self, pcm_int16_16k: np.ndarray | bytes) -> np.ndarray:
        """The model's input frames for a segment, capped at spec.max_frames (the rest is dropped, and logged)."""
        frames = frame_audio(pcm_to_float(pcm_int16_16k), self.spec.frame_samples)
        if len(frames) > self.spec.max_frames:
            log.warning(
                "audio segment of %.1f s is longer than the model's %d frames (%.1f s); keeping the first %d. "
                "Shorten the segmenter's maximum segment length to avoid this.",
                len(frames) * self.spec.frame_samples / self.spec.sample_rate,
                self.spec.max_frames,
                self.spec.max_frames * self.spec.frame_samples / self.spec.sample_rate,
                self.spec.max_frames,
            )
            frames = frames[: self.spec.max_frames]
        return frames

    def project(self, pcm_int16_16k: np.ndarray | bytes) -> tuple[np.ndarray, int]:
        """-> (embeddings [N, hidden] float32 to splice over the N placeholders between boa and eoa, N)."""
        frames = self.frames(pcm_int16_16k)
        if len(frames) == 0:
            return np.zeros((0, self.hidden_size), dtype=np.float32), 0
        (embeds,) = self._session.run([self._output], {self._input: frames})
        return embeds, len(frames)
