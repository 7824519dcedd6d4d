"""Home Assistant (and any Wyoming peer) talks to voiced over the Wyoming protocol.

The `wyoming` package owns the framing and the TCP/Unix servers; this module only maps its events onto voiced.
What `describe` advertises, and why it is the honest mapping of what voiced is:

- **asr**: the bundle's recogniser (Whisper in the default bundle). Plain Wyoming speech to text, as Home
  Assistant's STT provider drives it: `transcribe` (optional), `audio-start`, `audio-chunk`*, `audio-stop`
  -> one `transcript`. Any rate / width / channels is converted to 16 kHz mono with voiced.audio.resample (audio).
  voiced ends the command with its own VAD unless `server.wyoming_requires_external_vad` says the client does (stt).
- **tts**: the configured engine and voice. `synthesize` -> `audio-start` / `audio-chunk`* / `audio-stop` at the
  engine's own rate, streamed as the engine makes it; streamed text (`synthesize-start` / `-chunk` / `-stop`) is
  spoken clause by clause, then `synthesize-stopped` (tts). `info`: info.
- **handle**: the assistant. Wyoming models "a thing that answers what was said" as an intent *handler*: Home
  Assistant's conversation agent sends the user's words as a `transcript` event and waits for `handled` (or
  `not-handled`) with the text to speak. That is exactly voiced's model step, so the assistant is advertised as a
  handle program (not as an `intent` recogniser: voiced returns an answer, not a structured intent, and it does
  not control the home, so `supports_home_control` is false). The text goes through the same Pipeline as a
  WebSocket `text_query` (the single model thread), in the conversation Home Assistant names in the
  transcript's context (voiced.conversations), as text only: `handled` goes back when the text is complete, and
  nothing is spoken by voiced, since Home Assistant speaks the answer where it was asked (voiced.routing).
- **the spoken turn** (audio in -> spoken reply out) has no program type in `info`: in Wyoming a *satellite*
  streams its microphone to whoever runs the pipeline and gets events back. voiced plays the role Home Assistant
  plays for a satellite: the client sends `run-pipeline` (start_stage asr or wake, end_stage tts), then its
  microphone as `audio-chunk`s (an `audio-start` is welcome but, as with Home Assistant, not required), and
  gets back what Home Assistant would send a satellite: `voice-started` / `voice-stopped` from voiced's VAD,
  `transcript`, the reply audio as `audio-start` / `audio-chunk`* / `audio-stop`, and then `handled` with the
  reply text (`not-handled` when nothing was recognised or the utterance was not addressed to us). The audio
  is fed to the same Pipeline as a WebSocket microphone (`pipeline.feed` under a per-connection source id), so
  VAD, wake phrase, barge-in and memory behave the same; an end_stage other than tts gets the same events
  without the audio.

Wyoming has no authentication: anyone who can reach the port can use the assistant, so bind it to loopback (the
default in the docs) or to a network you trust; a non-loopback bind is logged as a warning.

The modules, one job each: `framing` reads one event under the input limits (pure checks around a StreamReader);
`audio` turns chunks of any format into 16 kHz mono and charges them to the audio budgets; `translate` maps one
connection's events both ways without sockets; `info` (describe), `stt` (voiced's end of a command, a
transcription), `tts` (streamed synthesis), `zeroconf` (mDNS); `connection` is one peer's I/O; `server` binds the
endpoint and routes the pipeline's events to connections. Everything reaches the daemon through one
voiced.server.handler.SpeechBackend (the pipeline): its ASR and TTS threads, never an executor of Wyoming's own.
"""

from voiced.server.wyoming.audio import AudioIn
from voiced.server.wyoming.framing import InputLimit, InputLimits, read_event
from voiced.server.wyoming.server import WyomingError, WyomingServer, serve_wyoming, wyoming_endpoint
from voiced.server.wyoming.translate import MAX_TEXT_CHARS, PONG_TEXT_CHARS, Translator

__all__ = [
    "MAX_TEXT_CHARS",
    "PONG_TEXT_CHARS",
    "AudioIn",
    "InputLimit",
    "InputLimits",
    "Translator",
    "WyomingError",
    "WyomingServer",
    "read_event",
    "serve_wyoming",
    "wyoming_endpoint",
]
