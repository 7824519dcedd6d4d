"""espeak-ng through libespeak-ng's synchronous mode, so PCM arrives in ~100 ms pieces while it is synthesised.

libespeak-ng keeps one synthesiser per process (voice, rate and the audio callback are globals inside the C
library), so exactly one `_Libespeak` object owns it, serialising every synthesis behind its lock; the engines
share it. Synthesis runs in a worker thread that feeds a queue, which lets `synthesize` yield each chunk the
moment the callback delivers it and lets cancellation abort the C loop from the callback's return value.

If the shared library cannot be loaded, the `espeak-ng --stdout` command is streamed instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator

import numpy as np

from voiced.speech.tts import CHUNK_MS, TTSUnavailable, stream_from_thread

log = logging.getLogger(__name__)

# espeak_ng/speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_RATE = 1
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_EE_OK = 0
_EE_NOT_FOUND = 2

_INSTALL_FIX = "install it: sudo apt-get install espeak-ng libespeak-ng1"


def _voice_error(voice: str) -> TTSUnavailable:
    return TTSUnavailable(f"espeak-ng has no voice {voice!r}; pick one from `espeak-ng --voices` and set tts.voice")


class _Sink:
    """Where the C callback delivers one synthesis's audio, and how it learns to stop."""

    def __init__(self, put: Callable[[np.ndarray], None], stopped: Callable[[], bool]) -> None:
        self.put = put
        self.stopped = stopped


class _VoiceProperties(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


class _Libespeak:
    """The process's one libespeak-ng synthesiser."""

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        self._cb_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
        lib.espeak_SetSynthCallback.argtypes = [self._cb_type]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_VoiceProperties)]
        lib.espeak_SetVoiceByProperties.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        self._lib = lib
        self.lock = threading.Lock()
        self._sink: _Sink | None = None
        # The CFUNCTYPE object must outlive every call into the library: keep it on self.
        self._callback = self._cb_type(self._on_audio)
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, CHUNK_MS, None, _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise TTSUnavailable(f"libespeak-ng failed to initialise (its data files are missing?); {_INSTALL_FIX}")
        self.sample_rate = rate
        lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav: ctypes._Pointer[ctypes.c_short], numsamples: int, events: int | None) -> int:
        sink = self._sink
        if sink is None or sink.stopped():
            return 1  # abort the synthesis loop inside the library
        if wav and numsamples > 0:
            sink.put(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        return 0

    def _set_voice(self, voice: str) -> None:
        """By voice name, else by language code ('en-gb'), as the espeak-ng command does; lock held."""
        if self._lib.espeak_SetVoiceByName(voice.encode()) == _EE_OK:
            return
        props = _VoiceProperties(languages=voice.encode())
        if self._lib.espeak_SetVoiceByProperties(ctypes.byref(props)) != _EE_OK:
            raise _voice_error(voice)

    def check_voice(self, voice: str) -> None:
        with self.lock:
            self._set_voice(voice)

    def voice_language(self, voice: str) -> str | None:
        """The language of `voice` from espeak-ng's own voice record (its `languages`: a priority byte, then the
        tag); None when the record names none."""
        lib = self._lib
        lib.espeak_GetCurrentVoice.argtypes = []
        lib.espeak_GetCurrentVoice.restype = ctypes.POINTER(_VoiceProperties)
        with self.lock:
            self._set_voice(voice)
            current = lib.espeak_GetCurrentVoice()
            raw = current.contents.languages if current else None
        tag = raw[1:].decode("ascii", "replace") if raw and len(raw) > 1 else ""
        return tag or None

    def synth(self, text: str, voice: str, rate_wpm: int, sink: _Sink) -> None:
        data = text.encode("utf-8") + b"\0"
        with self.lock:
            self._set_voice(voice)
            self._lib.espeak_SetParameter(_RATE, rate_wpm, 0)
            self._sink = sink
            try:
                err = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None)
            finally:
                self._sink = None
        if err != _EE_OK and not sink.stopped():
            raise RuntimeError(f"espeak_Synth failed with error {err}; check that libespeak-ng1 is intact ({_INSTALL_FIX})")


@functools.cache
def _libespeak() -> _Libespeak:
    """The library is one per process, so the object that guards it is too (built on first use, never replaced)."""
    path = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
    return _Libespeak(path)


class EspeakEngine:
    """TTSEngine over libespeak-ng (or the espeak-ng command when the library will not load)."""

    def __init__(self, voice: str = "en-us", rate_wpm: int = 175, use_library: bool = True) -> None:
        self.voice = voice
        self.rate_wpm = rate_wpm
        self._lib: _Libespeak | None = None
        if use_library:
            try:
                self._lib = _libespeak()
            except OSError as e:
                log.warning("libespeak-ng did not load (%s); falling back to the espeak-ng command", e)
        self.language: str | None = voice.split("+")[0]  # espeak-ng takes a language tag as a voice name
        if self._lib is not None:
            self._lib.check_voice(voice)
            self.sample_rate = self._lib.sample_rate
            self.language = self._lib.voice_language(voice) or self.language
        else:
            exe = shutil.which("espeak-ng")
            if exe is None:
                raise TTSUnavailable(f"neither libespeak-ng nor the espeak-ng command is available; {_INSTALL_FIX}")
            self._exe = exe
            self.sample_rate = 22050  # checked against the WAV header of every synthesis

    @property
    def backend(self) -> str:
        return "library" if self._lib is not None else "command"

    def synthesize(self, text: str, cancel: threading.Event | None = None) -> Iterator[np.ndarray]:
        if not text.strip():
            return
        if self._lib is None:
            yield from self._synthesize_command(text, cancel)
            return

        def produce(put: Callable[[np.ndarray], None], stopped: Callable[[], bool]) -> None:
            assert self._lib is not None
            self._lib.synth(text, self.voice, self.rate_wpm, _Sink(put, stopped))

        yield from stream_from_thread(produce, cancel, "espeak-synth")

    def _synthesize_command(self, text: str, cancel: threading.Event | None) -> Iterator[np.ndarray]:
        # Text on stdin: a clause starting with '-' would otherwise be read as an option.
        proc = subprocess.Popen(
            [self._exe, "-v", self.voice, "-s", str(self.rate_wpm), "--stdout"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(text.encode("utf-8"))
            proc.stdin.close()
            fd = proc.stdout.fileno()
            header = _read_exact(fd, 44)
            if len(header) < 44 or header[:4] != b"RIFF":
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                if "voice" in err.lower():
                    raise _voice_error(self.voice)
                raise RuntimeError(f"espeak-ng produced no audio ({err.strip()}); {_INSTALL_FIX}")
            rate = int.from_bytes(header[24:28], "little")
            if rate != self.sample_rate:
                self.sample_rate = rate
            block = rate * CHUNK_MS // 1000 * 2
            pending = b""
            while not (cancel is not None and cancel.is_set()):
                data = os.read(fd, block - len(pending))
                if not data:
                    break
                pending += data
                if len(pending) >= block:
                    yield np.frombuffer(pending, dtype="<i2").copy()
                    pending = b""
            if pending and not (cancel is not None and cancel.is_set()):
                yield np.frombuffer(pending[: len(pending) // 2 * 2], dtype="<i2").copy()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for f in (proc.stdout, proc.stderr):
                if f:
                    f.close()


def _read_exact(fd: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        data = os.read(fd, n - len(out))
        if not data:
            break
        out += data
    return out
