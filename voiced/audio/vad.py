"""Speech segmentation: 16 kHz int16 in, turn events out. Pure code (no devices, no clocks but the samples).

Times are seconds on the source's own clock: samples fed so far / 16000, so a WAV file and a live microphone
give the same numbers for the same audio, and tests need no wall clock.

The event stream of one segment is

    SpeechStarted  SpeechFrames*  (SpeechPaused SpeechFrames* (SpeechResumed SpeechFrames*)?)*  SpeechEnded | SpeechDiscarded

- `SpeechFrames` carry every frame from the speech onset on (pre-roll excluded), hangover silence included, so
  that `concatenate(frames) == SpeechEnded.audio[len(SpeechStarted.pre_roll):]`: a consumer that streams the
  frames into a model has exactly the audio the final event describes. Frames of one `feed()` call are merged
  into one event where no other event falls between them.
- `SpeechPaused` comes on the first silent frame after speech, so the pipeline can start speculative
  end-of-turn work during the hangover; `SpeechResumed` takes it back. Short unvoiced frames inside words
  also cause a pause/resume pair: consumers that do costly work on a pause should wait a little themselves.
- `SpeechDiscarded` closes a segment that turned out not to be a turn: shorter than `min_speech_ms` (a cough,
  a click), or dropped because the segmenter was muted (half duplex: our own speaker is talking). Its `t` is
  the discarded segment's start, equal to its `SpeechStarted.t`.
- `SpeechEnded.reason`: "silence" (hangover elapsed), "max_length" (split at `max_segment_s`; the next segment
  starts at once, with an empty pre-roll since that audio was in the previous one) or "flush" (end of input).
  Its `t_end` is the end of the last voiced frame; its `audio` runs from the pre-roll to the last frame fed.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
import webrtcvad

from voiced.audio import RATE
from voiced.audio.silero import SileroStream, shared_model
from voiced.config import AudioSettings

# webrtcvad calls steady hum and loud white noise speech. A frame only counts as voiced when it is also this much
# louder than the noise floor: the third-lowest frame energy over the last NOISE_WINDOW_S (the third, so that one
# or two odd frames, such as the one where a stream switches from zeros to room noise, cannot drag it down).
# Speech dips to the floor between syllables and words well within that window; stationary noise never rises
# above it. The price: noise that switches on mid-stream can pass for speech until the window has seen it.
# After digital silence (a browser's noise suppression, a gated satellite, a WAV file's padding)
# there is no floor yet, and the gate measures the first syllables against their own quietest frames: the onset
# came ~0.4 s late, past the pre-roll, and Whisper lost the first word ("What is the capital of France?" ->
# "the capital of France."). So once the gate has opened a turn, its onset moves back to the first sound after
# the digital silence, when that is at most BACKDATE_MS earlier: on such a stream, any sound is the signal.
# Gaps of zeros shorter than ZERO_GAP_MS are inside the speech (synthetic voices put exact zeros between words).
# Noise that switches on after zeros still has to pass the gate to open a turn at all. The start of a stream
# counts as such a silence when the stream opens on the voice itself (its first frames within HOT_START_DB of
# the turn's level): a WAV question that starts on its first word (`voiced ask --wav` of an espeak file: "How
# many legs does a spider have?" -> "Next, let us either have.") has no floor either.
NOISE_MARGIN_DB = 6.0
NOISE_WINDOW_S = 1.5
_FLOOR_RANK = 2
_DIGITAL_SILENCE_DB = -90.0
BACKDATE_MS = 900
ZERO_GAP_MS = 150
HOT_START_DB = 15.0
# Silero's score must fall this far below audio.silero_threshold to count a frame in a turn as silence: the
# hysteresis Silero's own iterator uses, so that a soft syllable does not pause the turn.
SILERO_HYSTERESIS = 0.15
# Silero's score rises a window or three after the voice does, so a turn it opens starts back at the first of
# the frames just before its onset that webrtcvad + the gate called voiced, at most SILERO_LEAD_MS earlier.
SILERO_LEAD_MS = 300


def _energy_db(frames: np.ndarray) -> np.ndarray:
    """dBFS of each int16 frame (rows)."""
    f = frames.astype(np.float32)
    db: np.ndarray = 10.0 * np.log10(np.einsum("ij,ij->i", f, f) / (frames.shape[1] * 32768.0**2) + 1e-10)
    return db  # named and typed: numpy's stubs give einsum's result as Any


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    source: str
    t: float
    pre_roll: np.ndarray


@dataclass(frozen=True, slots=True)
class SpeechFrames:
    source: str
    t: float
    pcm: np.ndarray


@dataclass(frozen=True, slots=True)
class SpeechPaused:
    source: str
    t: float


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    source: str
    t: float


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    source: str
    t_start: float
    t_end: float
    audio: np.ndarray
    reason: Literal["silence", "max_length", "flush"]


@dataclass(frozen=True, slots=True)
class SpeechDiscarded:
    source: str
    t: float


Event = SpeechStarted | SpeechFrames | SpeechPaused | SpeechResumed | SpeechEnded | SpeechDiscarded

_EMPTY = np.zeros(0, np.int16)


class Segmenter:
    """A voice detector per frame (audio.vad: webrtcvad + the noise gate, Silero, or both: Silero confirming
    the frames that open a turn), a start window that must be mostly voiced, a hangover of silence to end it."""

    def __init__(self, settings: AudioSettings, source: str = "local", silero: SileroStream | None = None) -> None:
        self.settings = settings
        self.source = source
        self._detector = settings.vad
        # One Silero session serves every source; the recurrent state is this stream's own.
        self._silero = silero if silero is not None or settings.vad == "webrtc" else shared_model().stream()
        self._silero_on = settings.silero_threshold
        self._silero_off = max(0.01, settings.silero_threshold - SILERO_HYSTERESIS)
        self.frame_len = RATE * settings.frame_ms // 1000
        self._vad = webrtcvad.Vad(settings.vad_aggressiveness)
        self._window_frames = max(1, round(settings.start_window_ms / settings.frame_ms))
        self._start_count = math.ceil(settings.start_ratio * self._window_frames - 1e-9)
        self._pre_roll_frames = round(settings.pre_roll_ms / settings.frame_ms)
        self._backdate_frames = round(BACKDATE_MS / settings.frame_ms)
        self._silero_lead_frames = round(SILERO_LEAD_MS / settings.frame_ms)
        self._zero_gap_frames = max(1, round(ZERO_GAP_MS / settings.frame_ms))
        self._max_frames = max(1, round(settings.max_segment_s * 1000 / settings.frame_ms))
        self._min_speech_s = settings.min_speech_ms / 1000
        self._noise_frames = max(1, round(NOISE_WINDOW_S * 1000 / settings.frame_ms))
        self.hangover_ms = settings.hangover_ms
        self._muted = False
        self.held = False  # push-to-talk held: no silence ends the turn (the release flushes); max_segment_s splits
        self._queued: list[Event] = []
        self.reset()

    # -- settable knobs -------------------------------------------------------------------------------------

    @property
    def hangover_ms(self) -> int:
        return self._hangover_ms

    @hangover_ms.setter
    def hangover_ms(self, value: int) -> None:
        """Turn-taking may lengthen it after a question or shorten it after a command; applies at once."""
        if value < self.settings.frame_ms:
            raise ValueError(f"hangover_ms must be at least one frame ({self.settings.frame_ms} ms), got {value}")
        self._hangover_ms = int(value)
        self._hangover_frames = math.ceil(value / self.settings.frame_ms)

    @property
    def muted(self) -> bool:
        return self._muted

    @muted.setter
    def muted(self, value: bool) -> None:
        """Half duplex: muting drops an open segment (a SpeechDiscarded comes out of the next feed/flush)."""
        value = bool(value)
        if value and not self._muted:
            if self._in_speech:
                self._queued.append(SpeechDiscarded(self.source, self._t_start))
            self._to_idle()
        self._muted = value

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def silence_s(self) -> float:
        """Seconds of silence heard since the open segment's last voiced frame (0 outside a segment)."""
        return self._silent_run * self.frame_len / RATE if self._in_speech else 0.0

    # -- feeding --------------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to a fresh stream: clock at 0, no open segment, nothing buffered, no event owed."""
        self._pending = _EMPTY
        self._pos = 0  # samples consumed into frames (the clock of frame starts)
        self._floor = np.full(max(self._noise_frames, _FLOOR_RANK + 1), np.inf)  # frame energies (dB), a ring
        self._queued = []
        if self._silero is not None:
            self._silero.reset()
        self._to_idle()

    def feed(self, pcm: np.ndarray) -> list[Event]:
        """Any number of int16 16 kHz mono samples; the partial frame at the end waits for the next call."""
        out: list[Event] = self._queued
        self._queued = []
        pcm = np.asarray(pcm)
        if pcm.dtype != np.int16:
            raise TypeError(f"Segmenter.feed takes int16 samples at 16 kHz, got {pcm.dtype}; convert with voiced.audio.resample")
        if self._pending.size:
            pcm = np.concatenate((self._pending, pcm.reshape(-1)))
        else:
            pcm = pcm.reshape(-1).copy()  # frames are kept (pre-roll, segment); the caller may reuse its buffer
        n = len(pcm) // self.frame_len
        self._pending = pcm[n * self.frame_len :]
        if n == 0:
            return out
        frames = pcm[: n * self.frame_len].reshape(n, self.frame_len)
        if self._muted:
            self._pos += n * self.frame_len
            return out
        energy_db = _energy_db(frames).tolist()
        probs = self._silero.frame_probs(frames).tolist() if self._silero is not None else [1.0] * n
        detector = self._detector
        run: list[np.ndarray] = []  # speech frames not yet emitted
        run_t = 0.0
        is_speech = self._vad.is_speech
        floor = self._floor
        for frame, db, p in zip(frames, energy_db, probs):
            t = self._pos / RATE
            k = self._pos // self.frame_len
            # Zeros (a stream opening, a muted source) are no room's noise floor: they do not count.
            floor[k % floor.size] = db if db > _DIGITAL_SILENCE_DB else np.inf
            noise_db = np.partition(floor, _FLOOR_RANK)[_FLOOR_RANK]
            margin = NOISE_MARGIN_DB / 2 if self._in_speech else NOISE_MARGIN_DB  # hysteresis: fewer false pauses
            # webrtcvad adapts to what it hears, so it sees every frame, whatever the energy gate says.
            webrtc = is_speech(frame.tobytes(), RATE, self.frame_len) and db > noise_db + margin
            heard = p >= (self._silero_off if self._in_speech else self._silero_on) and db > _DIGITAL_SILENCE_DB
            # "both": Silero must agree for a turn to open (noise, hum and music do not), and inside a turn
            # webrtcvad + the gate alone find the pauses, since Silero's score lags the end of a word.
            voiced = (
                webrtc
                if detector == "webrtc" or (self._in_speech and detector == "both")
                else heard
                if detector == "silero"
                else webrtc and heard
            )
            self._pos += self.frame_len
            if not self._in_speech:
                self._idle_frame(frame, voiced, t, out, webrtc)
                continue
            events = self._speech_frame(frame, voiced, t)
            if not events:
                if not run:
                    run_t = t
                run.append(frame)
                continue
            for ev in events:
                if isinstance(ev, SpeechFrames):
                    if not run:
                        run_t = ev.t
                    run.append(ev.pcm)
                    continue
                if run:
                    out.append(SpeechFrames(self.source, run_t, np.concatenate(run)))
                    run = []
                out.append(ev)
        if run:
            out.append(SpeechFrames(self.source, run_t, np.concatenate(run)))
        return out

    def flush(self) -> list[Event]:
        """End of input: close an open segment (reason "flush") and drop the partial frame from the VAD."""
        out: list[Event] = self._queued
        self._queued = []
        tail, self._pending = self._pending, _EMPTY
        if self._in_speech and not self._muted:
            if tail.size:
                out.append(SpeechFrames(self.source, self._pos / RATE, tail))
                self._audio.append(tail)
            out.append(self._close("flush"))
        self._pos += tail.size
        self._to_idle()
        return out

    # -- the two states -------------------------------------------------------------------------------------

    def _to_idle(self) -> None:
        self._in_speech = False
        self._ring: deque[np.ndarray] = deque(maxlen=self._pre_roll_frames + self._window_frames + self._backdate_frames)
        self._window: deque[bool] = deque(maxlen=self._window_frames)
        self._lead: deque[bool] = deque(maxlen=self._ring.maxlen)  # webrtcvad + gate per ring frame
        self._audio: list[np.ndarray] = []
        self._pre_roll_len = 0
        self._t_start = 0.0
        self._t_last_voiced = 0.0
        self._silent_run = 0
        self._speech_frames = 0

    def _idle_frame(self, frame: np.ndarray, voiced: bool, t: float, out: list[Event], webrtc: bool) -> None:
        self._ring.append(frame)
        self._lead.append(webrtc)
        self._window.append(voiced)
        if len(self._window) < self._window_frames or sum(self._window) < self._start_count:
            return
        # Speech starts at the first voiced frame of the window; what lies before it is pre-roll.
        onset = self._window.index(True)
        ring = list(self._ring)
        k = len(ring) - self._window_frames + onset
        from_start = round(t * RATE / self.frame_len) + 1 == len(ring)  # ring[0] is the stream's first frame
        backdated = self._backdate(ring, k, from_start)
        if not backdated and self._detector != "webrtc":
            lead = list(self._lead)
            while backdated < self._silero_lead_frames and k - backdated > 0 and lead[k - backdated - 1]:
                backdated += 1
        pre = ring[max(0, k - backdated - self._pre_roll_frames) : k - backdated]
        speech = ring[k - backdated :]
        pre_roll = np.concatenate(pre) if pre else _EMPTY
        t_start = t - (len(speech) - 1) * self.frame_len / RATE
        flags = [True] * backdated + list(self._window)[onset:]
        self._open(t_start, pre_roll)
        self._audio.extend(speech)
        self._speech_frames = len(speech)
        last_voiced = max(i for i, v in enumerate(flags) if v)
        self._t_last_voiced = t_start + (last_voiced + 1) * self.frame_len / RATE
        self._silent_run = len(flags) - 1 - last_voiced
        out.append(SpeechStarted(self.source, t_start, pre_roll))
        out.append(SpeechFrames(self.source, t_start, np.concatenate(speech)))
        if self._silent_run:
            out.append(SpeechPaused(self.source, self._t_last_voiced))

    def _backdate(self, ring: list[np.ndarray], k: int, from_start: bool) -> int:
        """How many frames before `ring[k]` belong to the turn: the sound since the last stretch of digital
        silence (ZERO_GAP_MS or longer) or since the stream began (`from_start`: ring[0] is its first frame),
        when that was at most BACKDATE_MS earlier; 0 otherwise. Once per turn start, so the energies are measured
        again here rather than kept for every idle frame."""
        lo = max(0, k - self._backdate_frames)
        if lo == k:
            return 0
        db = _energy_db(np.stack(ring))
        j, zeros = k, 0
        for i in range(k - 1, lo - 1, -1):
            if db[i] > _DIGITAL_SILENCE_DB:
                j, zeros = i, 0
            else:
                zeros += 1
                if zeros >= self._zero_gap_frames:
                    return k - j
        # The stream began on this sound when its first frames are as loud as the turn the gate found (within
        # HOT_START_DB of its median): nothing before it to learn a floor from. A stream that opened on room noise
        # had one, and the gate's onset stands (noise 35 dB under the voice must not pull the turn back to 0 s).
        if from_start and lo == 0 and db[:3].max() >= np.median(db[k:]) - HOT_START_DB:
            return k - j
        return 0  # no long silence within reach: the stream is not one of zeros, the gate's onset stands

    def _open(self, t_start: float, pre_roll: np.ndarray) -> None:
        self._in_speech = True
        self._t_start = t_start
        self._audio = [pre_roll] if pre_roll.size else []
        self._pre_roll_len = pre_roll.size
        self._silent_run = 0
        self._speech_frames = 0
        self._ring.clear()
        self._lead.clear()
        self._window.clear()

    def _speech_frame(self, frame: np.ndarray, voiced: bool, t: float) -> list[Event]:
        """Appends the frame; returns [] in the common case, else the events it causes (frames included)."""
        self._audio.append(frame)
        self._speech_frames += 1
        events: list[Event] = []
        if voiced:
            self._t_last_voiced = t + self.frame_len / RATE
            if self._silent_run:
                self._silent_run = 0
                events = [SpeechResumed(self.source, t), SpeechFrames(self.source, t, frame)]
        else:
            self._silent_run += 1
            if self._silent_run == 1:
                events = [SpeechPaused(self.source, t), SpeechFrames(self.source, t, frame)]
        if self._silent_run >= self._hangover_frames and not self.held:
            events = events or [SpeechFrames(self.source, t, frame)]
            events.append(self._close("silence"))
            self._to_idle()
        elif self._speech_frames >= self._max_frames:
            events = events or [SpeechFrames(self.source, t, frame)]
            t_split = t + self.frame_len / RATE
            ended = self._close("max_length", t_end=t_split)
            silent = self._silent_run
            self._to_idle()
            self._open(t_split, _EMPTY)
            self._silent_run = silent
            self._t_last_voiced = t_split
            events += [ended, SpeechStarted(self.source, t_split, _EMPTY)]
        return events

    def _close(self, reason: Literal["silence", "max_length", "flush"], t_end: float | None = None) -> Event:
        t_end = self._t_last_voiced if t_end is None else t_end
        if reason != "max_length" and t_end - self._t_start < self._min_speech_s:
            return SpeechDiscarded(self.source, self._t_start)
        audio = np.concatenate(self._audio) if self._audio else _EMPTY
        return SpeechEnded(self.source, self._t_start, t_end, audio, reason)
