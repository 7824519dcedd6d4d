"""Speech recognition for ASR-cascade bundles: one VAD segment (int16, 16 kHz mono) -> text.

The bundle ships a faster-whisper (CTranslate2) model in its `asr/` folder (Whisper tiny.en in the default
bundle). The settings are chosen for latency on 2 cores, where every 100 ms before the first reply token counts:

- int8 weights, greedy (beam 1): beam 5 costs ~2x compute for a fraction of a WER point on short turns.
- no VAD filter: our webrtcvad segmenter already cut the segment; Silero on top would cost ~30 ms and can
  clip the first word the segmenter deliberately kept in its pre-roll.
- without_timestamps and condition_on_previous_text=False: one decode pass per 30 s window, no timestamp
  tokens to generate, and no carry-over of a hallucination from one window into the next.
- a token budget from the audio length (`_token_budget`): greedy decoding without temperature fallback can loop.
- a cheap energy gate: a segment with no sample above ~-50 dBFS is returned as "" without running the model
  (Whisper likes to hallucinate "Thank you." on silence, and it saves ~0.3 s).

Concurrency: the pipeline transcribes speculatively at the first pause (SpeechPaused) from a worker thread, and
again at the end of the turn, possibly while the speculative call is still running. `transcribe()` may be
called from any number of threads; calls are serialised by a lock (CTranslate2 with one worker would queue them
anyway, and two concurrent decodes on 2 cores would each run at half speed, so nothing is lost). A call waits
for the one in flight to finish; it does not cancel it. Callers that no longer want a result simply ignore it.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voiced.model.manifest import AsrAudio

SAMPLE_RATE = 16000
# Peak below this (int16 units, about -50 dBFS) means nothing to recognise.
_SILENCE_PEAK = 100
_MAX_TOKENS = 220  # Whisper's context is 448; leave room for the prompt (hotwords) and the start tokens
_MODEL_FILES = ("model.bin", "config.json")


class AsrError(Exception):
    """The recogniser cannot run or was given audio it cannot take; the message names the fix."""


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Transcript:
    """What was said in one segment.

    `ms` is the compute time of this call (not counting a wait for another call), so the pipeline can report
    where a turn's latency went. `words` is filled only when asked for (it costs an alignment pass).
    """

    text: str
    ms: float
    audio_ms: float = 0.0
    words: tuple[Word, ...] = field(default_factory=tuple)

    @property
    def empty(self) -> bool:
        return not self.text


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class Recognizer:
    """A loaded faster-whisper model. Construct once per daemon; loading takes ~1.5 s."""

    def __init__(
        self,
        model_dir: Path,
        threads: int = 0,
        language: str | None = "en",
        *,
        hotwords: str | None = None,
        compute_type: str = "int8",
    ) -> None:
        """`hotwords` biases the decoder toward words it would otherwise miss, such as a wake phrase
        ("hey voiced" is heard as "hey boys" without it); benchmarks/asr.py measures what it costs in WER."""
        model_dir = Path(model_dir)
        missing = [f for f in _MODEL_FILES if not (model_dir / f).is_file()]
        if missing:
            raise AsrError(
                f"no faster-whisper model in {model_dir} (missing {', '.join(missing)}); "
                "rebuild the bundle with `voiced model prepare` or point model.bundle at a complete one"
            )
        from faster_whisper import WhisperModel  # heavy import, only when a cascade bundle is loaded

        self.model_dir = model_dir
        self.language = language
        self.hotwords = hotwords or None
        self.threads = threads or _default_threads()
        self._lock = threading.Lock()
        try:
            self._model = WhisperModel(
                str(model_dir), device="cpu", compute_type=compute_type, cpu_threads=self.threads, num_workers=1
            )
        except (RuntimeError, ValueError) as e:
            raise AsrError(f"cannot load the faster-whisper model in {model_dir} ({e}); rebuild the bundle with `voiced model prepare`") from e
        if language is not None and not self._model.model.is_multilingual and language != "en":
            raise AsrError(f"the model in {model_dir} is English-only; set the bundle's audio.language to 'en' or null")

    def warm_up(self) -> None:
        """The first decode allocates buffers and is ~3x slower; pay that at daemon start, not on a turn."""
        rng = np.random.default_rng(0)
        self._run(rng.normal(0, 0.01, SAMPLE_RATE).astype(np.float32), words=False)

    def transcribe(self, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE, *, words: bool = False) -> Transcript:
        """Recognise one segment. Thread-safe; see the module docstring for how concurrent calls behave."""
        audio = _as_float(pcm, sample_rate)
        audio_ms = 1000.0 * len(audio) / SAMPLE_RATE
        if audio.size == 0 or float(np.max(np.abs(audio))) * 32768 < _SILENCE_PEAK:
            return Transcript("", 0.0, audio_ms)
        text, took, found = self._run(audio, words=words)
        return Transcript(text, took, audio_ms, found)

    def _run(self, audio: np.ndarray, words: bool) -> tuple[str, float, tuple[Word, ...]]:
        with self._lock:
            t0 = time.perf_counter()
            segments, _ = self._model.transcribe(
                audio,
                language=self.language,
                beam_size=1,
                best_of=1,
                temperature=0.0,
                vad_filter=False,
                without_timestamps=True,
                condition_on_previous_text=False,
                word_timestamps=words,
                hotwords=self.hotwords,
                max_new_tokens=_token_budget(len(audio)),
            )
            segments = list(segments)  # the generator decodes lazily: consume it inside the lock
            took = 1000.0 * (time.perf_counter() - t0)
        text = " ".join(s.text.strip() for s in segments if s.text.strip())
        found = tuple(
            Word(w.word.strip(), float(w.start), float(w.end), float(w.probability)) for s in segments for w in (s.words or ()) if w.word.strip()
        )
        return text, took, found


def _token_budget(samples: int) -> int:
    """Greedy Whisper can fall into a loop ("1, 0, 1, 0, ..." for 400 tokens, ~5 s on 2 cores). Nobody says
    more than ~6 tokens a second, so a budget from the audio length bounds both the garbage and the latency."""
    return int(min(_MAX_TOKENS, 16 + 8 * min(samples / SAMPLE_RATE, 30.0)))


def _as_float(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    """Refuse what the model would silently misread: another rate plays Whisper sped up or slowed down."""
    if sample_rate != SAMPLE_RATE:
        raise AsrError(
            f"audio at {sample_rate} Hz given to the recogniser, which takes {SAMPLE_RATE} Hz only; "
            "resample first (voiced.audio.capture does it, or soxr.resample(pcm, rate, 16000))"
        )
    pcm = np.asarray(pcm)
    if pcm.ndim != 1:
        raise AsrError(f"audio of shape {pcm.shape} given to the recogniser, which takes mono 1-D int16; mix the channels down first")
    if pcm.dtype != np.int16:
        raise AsrError(f"audio of dtype {pcm.dtype} given to the recogniser, which takes int16 PCM; convert with (x * 32767).astype(np.int16)")
    return pcm.astype(np.float32) / 32768.0


def recognizer_for(bundle_dir: Path, spec: AsrAudio, threads: int = 0, *, hotwords: str | None = None) -> Recognizer:
    """The recogniser a cascade bundle's manifest asks for (its `audio` entry)."""
    if spec.engine != "faster-whisper":  # the manifest's Literal keeps this unreachable today; a new engine lands here
        raise AsrError(f"ASR engine {spec.engine!r} is not supported; this voiced runs faster-whisper bundles")
    return Recognizer(Path(bundle_dir) / spec.dir, threads=threads, language=spec.language, hotwords=hotwords)
