"""Wake-word detection on the audio itself (activation.wake_detector = "model"), in front of the VAD.

The transcript matcher (voiced.audio.activation) needs an ASR pass per turn and cannot serve encoder-free
bundles; this detector needs neither. It runs livekit-wakeword's openWakeWord front end (a mel spectrogram
and Google's speech-embedding CNN, both ONNX files shipped in that package) and a small classifier head per
phrase, trained by `python -m model_export train-wakeword` and committed in voiced/audio/wakeword_models/
(hey_voiced.onnx, with hey_voiced.json saying how it was trained and what it measured).

Streaming, as the microphone delivers frames: the package's own `WakeWordModel.predict` recomputes the mel
and all 16 embeddings of a 2 s window on every call; here each mel frame and each embedding is computed once.
The mel model frames audio without padding (512-sample frames, hop 160), so a chunk that starts on a frame
boundary gives the frames the whole clip would (to float rounding; a test checks that any chunking scores the
same). Every 8 mel frames (80 ms) one new embedding is computed from the last 76 frames, and the classifier
scores the last 16 embeddings (~2 s).
A score at or above the threshold is a `Detection` at the stream position just after the audio it heard, unless
another fired less than `refractory_s` earlier, so one utterance of the phrase fires once.

Split in two so that several streams (the local mic and each satellite) share one set of ONNX sessions:
`WakeWordModel` holds the sessions and no stream state (onnxruntime sessions may be run from any thread);
`WakeWordDetector` is one stream's rolling buffers. Nothing lives at module level: the pipeline builds a model
only when the detector is configured, and tests build their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voiced.audio import RATE
from voiced.errors import VoicedError

HOP = 160  # samples between mel frames
MEL_WIN = 512  # samples one mel frame hears
EMB_WINDOW = 76  # mel frames per embedding
EMB_STRIDE = 8  # mel frames between embeddings: one score every 80 ms
N_EMB = 16  # embeddings per classifier input
EMB_DIM = 96
DEFAULT_MODEL = "hey_voiced"
LEAD_S = 1.5  # a detection this long before a turn's start still wakes it ("hey voiced ... <pause> ... question")

_RETRAIN = "retrain it with `python -m model_export train-wakeword` or reinstall voiced"
_INSTALL = "install it: pip install 'livekit-wakeword>=0.3,<0.4' (a dependency of voiced; reinstall voiced)"


class WakeWordUnavailable(VoicedError, RuntimeError):
    """The detector cannot run; the message names the fix."""


@dataclass(frozen=True)
class Detection:
    """`sample`: stream position (samples fed so far) just after the audio of the window that fired."""

    sample: int
    score: float

    @property
    def t(self) -> float:
        return self.sample / RATE


def model_path(model: str | Path) -> Path:
    """A shipped model by name ("hey_voiced") or a path to a classifier .onnx file."""
    text = str(model)
    if text.endswith(".onnx") or "/" in text or "\\" in text:
        path = Path(text).expanduser()
    else:
        path = Path(str(resources.files("voiced.audio") / "wakeword_models" / f"{text}.onnx"))
    if not path.is_file():
        shipped = sorted(p.stem for p in Path(str(resources.files("voiced.audio") / "wakeword_models")).glob("*.onnx"))
        raise WakeWordUnavailable(
            f"wake-word classifier {path} not found; set activation.wake_model to one of {shipped} or to an .onnx file, or {_RETRAIN}"
        )
    return path


def window_end_sample(emb_index: int) -> int:
    """Stream position just after the audio heard by the classifier window whose last embedding is `emb_index`."""
    return (EMB_STRIDE * emb_index + EMB_WINDOW - 1) * HOP + MEL_WIN


class WakeWordModel:
    """The three ONNX sessions: mel front end and embedding (from livekit-wakeword) and a phrase classifier.

    One onnxruntime thread each by default: the LLM decodes on the same cores, and batch-1 work this small gains
    nothing from more."""

    def __init__(self, model: str | Path = DEFAULT_MODEL, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
            from livekit.wakeword.models.feature_extractor import MelSpectrogramFrontend, SpeechEmbedding
            from livekit.wakeword.resources import get_embedding_model_path, get_mel_model_path
            from livekit.wakeword.session import session_options
        except ImportError as e:
            raise WakeWordUnavailable(f"livekit-wakeword is not importable ({e}); {_INSTALL}") from None
        self.path = model_path(model)
        self.name = self.path.stem

        def opts() -> ort.SessionOptions:
            o = ort.SessionOptions()
            o.intra_op_num_threads = threads
            o.inter_op_num_threads = 1
            return session_options(o)

        try:
            self._mel = MelSpectrogramFrontend(get_mel_model_path(), sess_options=opts())
            self._emb = SpeechEmbedding(get_embedding_model_path(), sess_options=opts())
        except Exception as e:  # a broken install: the package's files are missing or unreadable
            raise WakeWordUnavailable(f"livekit-wakeword's feature models failed to load ({e}); {_INSTALL}") from None
        try:
            self._clf = ort.InferenceSession(str(self.path), sess_options=opts(), providers=["CPUExecutionProvider"])
        except Exception as e:
            raise WakeWordUnavailable(f"wake-word classifier {self.path} is not a valid ONNX model ({e}); {_RETRAIN}") from None
        inp = self._clf.get_inputs()[0]
        if len(inp.shape) != 3 or inp.shape[1:] != [N_EMB, EMB_DIM]:
            raise WakeWordUnavailable(
                f"wake-word classifier {self.path} takes {inp.shape}, not (batch, {N_EMB}, {EMB_DIM}) embeddings; "
                f"it was not made for livekit-wakeword's front end: {_RETRAIN}"
            )
        self._input = inp.name

    def mel(self, audio: np.ndarray) -> np.ndarray:
        """(frames, 32) for float32 audio; frame i hears samples [160 i, 160 i + 512)."""
        mel: npt.NDArray[np.float32] = self._mel(audio[None].astype(np.float32, copy=False))[0]
        return mel

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """(n, 76, 32) mel windows -> (n, 96)."""
        emb: npt.NDArray[np.float32] = self._emb(windows)
        return emb

    def classify(self, emb_windows: np.ndarray) -> np.ndarray:
        """(n, 16, 96) -> (n,) scores in [0, 1]."""
        scores: npt.NDArray[np.float32] = self._clf.run(None, {self._input: emb_windows.astype(np.float32, copy=False)})[0][:, 0]
        return scores

    def scores(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A whole clip at once (tests, benchmarks, training checks): window end samples and their scores, the
        same numbers a `WakeWordDetector` fed the clip in any chunking produces."""
        mel = self.mel(_as_float(audio))
        n_emb = (len(mel) - EMB_WINDOW) // EMB_STRIDE + 1
        if n_emb < N_EMB:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        wins = np.stack([mel[i * EMB_STRIDE : i * EMB_STRIDE + EMB_WINDOW] for i in range(n_emb)])
        emb = np.concatenate([self.embed(wins[b : b + 64]) for b in range(0, n_emb, 64)])
        seq = np.stack([emb[i - N_EMB + 1 : i + 1] for i in range(N_EMB - 1, n_emb)])
        ends = np.array([window_end_sample(i) for i in range(N_EMB - 1, n_emb)], np.int64)
        return ends, self.classify(seq)


def _as_float(pcm: np.ndarray) -> np.ndarray:
    pcm = np.asarray(pcm).reshape(-1)
    if pcm.dtype == np.int16:
        return pcm.astype(np.float32) / 32768.0
    return pcm.astype(np.float32, copy=False)


class WakeWordDetector:
    """One stream's detector: feed it 16 kHz mono frames (int16 or float in [-1, 1]) of any length, in order."""

    def __init__(self, model: WakeWordModel, threshold: float = 0.9, refractory_s: float = 2.0, keep_s: float = 30.0) -> None:
        self.model = model
        self.threshold = threshold
        self.refractory = int(refractory_s * RATE)
        self._keep = int(keep_s * RATE)
        self.reset()

    def reset(self) -> None:
        self.position = 0  # samples fed so far: the stream clock, the same one the VAD's times count
        self._audio = np.zeros(0, np.float32)  # from the next mel frame's first sample to the newest sample
        self._frames = 0  # mel frames made so far
        self._mel = np.zeros((0, 32), np.float32)  # the last mel frames (enough for the next embedding)
        self._embs = 0  # embeddings made so far
        self._emb = np.zeros((0, EMB_DIM), np.float32)  # the last N_EMB embeddings
        self._last_fire: int | None = None
        self.detections: list[Detection] = []  # not yet taken, the last keep_s seconds of them
        self.last_score = 0.0

    def feed(self, pcm: np.ndarray) -> list[Detection]:
        """Any number of samples; returns the detections they completed (also kept in `detections`)."""
        x = _as_float(pcm)
        self.position += x.size
        self._audio = np.concatenate([self._audio, x]) if self._audio.size else x.copy()
        n = (self._audio.size - MEL_WIN) // HOP + 1 if self._audio.size >= MEL_WIN else 0
        if n < EMB_STRIDE:  # work in 80 ms steps: one onnxruntime call per embedding, not per 20 ms frame
            return []
        mel = self.model.mel(self._audio[: (n - 1) * HOP + MEL_WIN])
        self._audio = self._audio[n * HOP :]
        self._frames += n
        self._mel = np.concatenate([self._mel, mel])[-(EMB_WINDOW + 4 * EMB_STRIDE + n) :]
        # embeddings whose 76-frame window is now complete: embedding j covers frames [8 j, 8 j + 76)
        first_frame = self._frames - len(self._mel)
        todo = []
        while EMB_STRIDE * self._embs + EMB_WINDOW <= self._frames:
            lo = EMB_STRIDE * self._embs - first_frame
            todo.append(self._mel[lo : lo + EMB_WINDOW])
            self._embs += 1
        if not todo:
            return []
        new = self.model.embed(np.stack(todo))
        first_new = self._embs - len(todo)
        emb = np.concatenate([self._emb, new])
        seqs, ends = [], []
        for k in range(len(todo)):
            j = first_new + k  # index of the embedding that ends this classifier window
            hi = len(self._emb) + k + 1
            if j + 1 >= N_EMB and hi >= N_EMB:
                seqs.append(emb[hi - N_EMB : hi])
                ends.append(window_end_sample(j))
        self._emb = emb[-N_EMB:]
        if not seqs:
            return []
        scores = self.model.classify(np.stack(seqs))
        self.last_score = float(scores[-1])
        fired = []
        for end, s in zip(ends, scores):
            if s >= self.threshold and (self._last_fire is None or end - self._last_fire >= self.refractory):
                self._last_fire = end
                fired.append(Detection(end, float(s)))
        if fired:
            self.detections.extend(fired)
        if self.detections:
            self.detections = [d for d in self.detections if self.position - d.sample <= self._keep]
        return fired

    def take(self, since_s: float) -> list[Detection]:
        """Detections at or after `since_s` (stream seconds), removed so that a later turn cannot claim them too;
        older ones are dropped: they belonged to nothing."""
        since = int(since_s * RATE)
        hits = [d for d in self.detections if d.sample >= since]
        self.detections = []
        return hits
