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
- a shorter encoder window (`window_s`, default 15 s): Whisper's encoder always sees 30 s, zero-padded, and on
  2 cores that costs ~500 ms for a 2 s question whatever its length; CTranslate2 takes shorter inputs, so a
  segment is padded to max(window_s, its length + 3 s) instead. Measured on the real recorded speech
  (benchmarks/asr.py --windows 15,10,8): on whole clips 10 s keeps 15 s's word error rate, but on the segments
  up to a pause that the guess transcribes it mishears more (benchmarks/pause_asr.py), and at 8 s Whisper repeats
  itself, so 15 s it is; a result that compresses too well (a loop) is redone on the full 30 s window. 30 reproduces faster-whisper's own transcription token for token.

Concurrency: the pipeline transcribes speculatively at the first pause (SpeechPaused) from a worker thread, and
again at the end of the turn, possibly while the speculative call is still running. `transcribe()` may be
called from any number of threads; calls are serialised by a lock (CTranslate2 with one worker would queue them
anyway, and two concurrent decodes on 2 cores would each run at half speed, so nothing is lost). A call waits
for the one in flight to finish; it does not cancel it. Callers that no longer want a result simply ignore it.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from voiced.audio import RATE as SAMPLE_RATE
from voiced.errors import VoicedError
from voiced.model.manifest import AsrAudio

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
# Peak below this (int16 units, about -50 dBFS) means nothing to recognise.
_SILENCE_PEAK = 100
_MAX_TOKENS = 220  # Whisper's context is 448; leave room for the prompt (hotwords) and the start tokens
_MODEL_FILES = ("model.bin", "config.json")
_FULL_WINDOW_S = 30.0  # Whisper's native window
_WINDOW_PAD_S = 3.0  # zero-padding after the speech, at least; less makes Whisper cut or repeat the last words
_LOOP_RATIO = 2.4  # gzip compression ratio above which a transcript is a loop (Whisper's own threshold)
_LOOP_RUN = 4  # the same word this many times in a row: a loop too short for gzip to see ("5, 5, 5, 5, 5, 5,")
_NO_SPEECH = (0.6, -1.0)  # no-speech probability above and mean log-prob below: silence (faster-whisper's rule)


class AsrError(VoicedError):
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
    `window_s`: the encoder window that gave the text (30 after a loop on the short one; 0 when no model ran).
    """

    text: str
    ms: float
    audio_ms: float = 0.0
    words: tuple[Word, ...] = field(default_factory=tuple)
    window_s: float = 0.0

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
        window_s: float = 15.0,
    ) -> None:
        """`hotwords` biases the decoder toward words it would otherwise miss, such as a wake phrase
        ("hey voiced" is heard as "hey boys" without it); benchmarks/asr.py measures what it costs in WER.
        `window_s`: the shortest encoder window (see the module docstring); 30 = Whisper's own."""
        if not 1.0 <= window_s <= _FULL_WINDOW_S:
            raise AsrError(f"ASR window of {window_s} s: it must be between 1 and 30 s (Whisper's window); set model.asr_window_s")
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
        self.window_s = float(window_s)
        self._lock = threading.Lock()
        try:
            self._model = WhisperModel(str(model_dir), device="cpu", compute_type=compute_type, cpu_threads=self.threads, num_workers=1)
        except (RuntimeError, ValueError) as e:
            raise AsrError(
                f"cannot load the faster-whisper model in {model_dir} ({e}); rebuild the bundle with `voiced model prepare`"
            ) from e
        if language is not None and not self._model.model.is_multilingual and language != "en":
            raise AsrError(f"the model in {model_dir} is English-only; set the bundle's audio.language to 'en' or null")
        self._short: _ShortWindow | None = None
        if self.window_s < _FULL_WINDOW_S and language is not None:  # a multilingual guess needs the full pass
            self._short = _ShortWindow(self._model, language, self.hotwords)

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
        text, took, found, window = self._run(audio, words=words)
        return Transcript(text, took, audio_ms, found, window)

    def _run(self, audio: np.ndarray, words: bool) -> tuple[str, float, tuple[Word, ...], float]:
        seconds = len(audio) / SAMPLE_RATE
        with self._lock:
            t0 = time.perf_counter()
            if self._short is not None and not words and seconds + _WINDOW_PAD_S <= _FULL_WINDOW_S:
                window = max(self.window_s, seconds + _WINDOW_PAD_S)
                text = self._short.transcribe(audio, window, _token_budget(len(audio)))
                if text is not None:
                    return text, 1000.0 * (time.perf_counter() - t0), (), window
                # a loop on the short window: the full window below decides
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
            Word(w.word.strip(), float(w.start), float(w.end), float(w.probability))
            for s in segments
            for w in (s.words or ())
            if w.word.strip()
        )
        return text, took, found, _FULL_WINDOW_S


class _ShortWindow:
    """One greedy decode of a segment on an encoder window shorter than 30 s, with faster-whisper's own feature
    extractor, prompt and token suppression (so at 30 s it is the same decode as `WhisperModel.transcribe`)."""

    def __init__(self, model: WhisperModel, language: str, hotwords: str | None) -> None:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self.model = model
        self.tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language)
        self.prompt = model.get_prompt(self.tokenizer, [], without_timestamps=True, hotwords=hotwords)
        self.suppress = list(get_suppressed_tokens(self.tokenizer, [-1]))

    def encode(self, audio: np.ndarray, window_s: float) -> object:  # a ctranslate2.StorageView, opaque here
        """The encoder's output for `audio` (float32, 16 kHz) on a `window_s` window."""
        # log-mel, [mels, 100 per second]; faster-whisper drops the last frame (the STFT's padding), and so must we
        # to give its decode: on some CPUs that one frame flips a greedy token (test_asr.py's 30 s test)
        features = self.model.feature_extractor(audio)[:, :-1]
        frames = int(round(window_s * 100))
        have = features.shape[-1]
        if have < frames:  # zeros, as faster-whisper pads its 30 s window
            features = np.pad(features, ((0, 0), (0, frames - have)))
        else:
            features = features[:, :frames]
        return self.model.encode(np.ascontiguousarray(features))

    def transcribe(self, audio: np.ndarray, window_s: float, max_tokens: int) -> str | None:
        """The text, "" for silence, or None when the decode looped and the full window should decide."""
        encoded = self.encode(audio, window_s)
        result = self.model.model.generate(
            encoded, [self.prompt], beam_size=1, max_length=len(self.prompt) + max_tokens, return_scores=True,
            return_no_speech_prob=True, suppress_blank=True, suppress_tokens=self.suppress,
        )[0]  # fmt: skip
        tokens = [t for t in result.sequences_ids[0] if t < self.tokenizer.eot]
        text: str = self.tokenizer.decode(tokens).strip()
        mean_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if result.no_speech_prob > _NO_SPEECH[0] and mean_logprob < _NO_SPEECH[1]:
            return ""
        if looks_like_loop(text):
            return None
        return text


def looks_like_loop(text: str) -> bool:
    """Greedy Whisper repeating itself: a transcript that compresses too well (Whisper's own rule, for long
    loops), or one word _LOOP_RUN times in a row (short loops: "five five" heard at a pause as "5, 5, 5, 5, 5, 5,"
    on real speech, "4.3.3.3.3.3.3.3" on espeak). A speaker who really says "no no no no" costs one full-window
    pass, which then decides."""
    from faster_whisper.transcribe import get_compression_ratio

    if not text:
        return False
    if get_compression_ratio(text) > _LOOP_RATIO:
        return True
    run, last = 0, None
    for w in re.findall(r"\w+", text.lower()):
        run = run + 1 if w == last else 1
        last = w
        if run >= _LOOP_RUN:
            return True
    return False


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
        raise AsrError(
            f"audio of dtype {pcm.dtype} given to the recogniser, which takes int16 PCM; convert with (x * 32767).astype(np.int16)"
        )
    return pcm.astype(np.float32) / 32768.0


def recognizer_for(
    bundle_dir: Path, spec: AsrAudio, threads: int = 0, *, hotwords: str | None = None, window_s: float = 15.0
) -> Recognizer:
    """The recogniser a cascade bundle's manifest asks for (its `audio` entry)."""
    if spec.engine != "faster-whisper":  # the manifest's Literal keeps this unreachable today; a new engine lands here
        raise AsrError(f"ASR engine {spec.engine!r} is not supported; this voiced runs faster-whisper bundles")
    return Recognizer(Path(bundle_dir) / spec.dir, threads=threads, language=spec.language, hotwords=hotwords, window_s=window_s)
