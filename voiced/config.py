"""Typed settings: defaults < config.toml < VOICED_<SECTION>__<KEY> env < CLI flags.

One model for the whole daemon so that a bad value is refused at start, naming the key, instead of surfacing
as a strange failure minutes later in a worker thread.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from pathlib import Path
from typing import Any, Literal, TypedDict
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from voiced.errors import VoicedError


def config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "voiced"


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "voiced"


def default_config_path() -> Path:
    return config_home() / "config.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AudioSettings(_Section):
    input_device: str | int | None = Field(
        None, description="PortAudio input device name (substring) or index; none = system default; 'none' = no local microphone"
    )
    output_device: str | int | None = Field(None, description="PortAudio output device; none = system default; 'none' = no local speaker")
    sample_rate: Literal[16000] = Field(16000, description="internal rate of the whole front end (VAD and models)")
    frame_ms: Literal[10, 20, 30] = Field(30, description="webrtcvad frame length")
    vad_aggressiveness: int = Field(2, ge=0, le=3)
    vad: Literal["webrtc", "silero", "both"] = Field(
        "both",
        description="voice detector per frame: webrtc = webrtcvad + the noise gate; silero = the Silero VAD model (voiced model prepare silero-vad); both = Silero must agree for a turn to open, webrtcvad + the gate find its pauses",
    )
    silero_threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="audio.vad = silero/both: Silero's p(speech) that counts as voice (0.15 less keeps a turn going)"
    )
    pre_roll_ms: int = Field(300, ge=0, le=2000, description="audio kept before speech start so it is not clipped")
    start_window_ms: int = Field(150, ge=10, le=2000, description="window in which voiced frames must dominate to start speech")
    start_ratio: float = Field(0.7, gt=0.0, le=1.0)
    hangover_ms: int = Field(600, ge=60, le=5000, description="silence after speech that ends a turn")
    stalled_stream_ms: int = Field(
        500,
        ge=60,
        le=60000,
        description="a source that sends no audio for this long inside a turn (a satellite gating its silence) has its wall-clock gap counted as silence, so the turn still ends",
    )
    min_speech_ms: int = Field(250, ge=0, le=5000, description="shorter segments are clicks, not turns")
    max_segment_s: float = Field(30.0, gt=1.0, le=300.0, description="longer speech is split")
    half_duplex: bool = Field(True, description="mute the local mic from VAD while the speaker plays (no echo canceller)")
    speaker_plays: Literal["local", "all"] = Field(
        "local",
        description="replies the local speaker plays: local = the local microphone's; all = every source's (otherwise a reply is heard only where it was asked)",
    )


class ServerSettings(_Section):
    host: str = Field("127.0.0.1", description="bind address; anything but loopback exposes the microphone to the network")
    port: int = Field(8765, ge=0, le=65535)
    allowed_origins: list[str] = Field(default_factory=list, description="extra browser origins allowed besides the daemon's own page")
    token_file: Path | None = Field(None, description="default: $XDG_CONFIG_HOME/voiced/token")
    max_clients: int = Field(64, ge=1, le=10000)
    max_message_bytes: int = Field(1 << 20, ge=1024)
    client_queue: int = Field(256, ge=4, description="messages queued per client before a stalled client is dropped")
    client_queue_bytes: int = Field(
        8 << 20, ge=1 << 16, description="bytes queued per client (WebSocket or Wyoming) before a stalled client is dropped"
    )
    max_waiting_turns: int = Field(
        4,
        ge=1,
        le=1000,
        description="requests waiting for the model, all clients together; more get a busy error (a client's new request replaces its waiting one)",
    )
    idle_timeout_s: float = Field(
        300.0,
        gt=0.0,
        le=86400.0,
        description="a Wyoming connection that sends nothing this long while nothing is in progress for it is closed",
    )
    hello_timeout_s: float = Field(
        5.0, gt=0.0, le=120.0, description="a connection that has not sent a valid hello (with its token) by then is closed"
    )
    max_audio_speed: float = Field(
        4.0, ge=1.0, le=1000.0, description="how many times faster than real time a client may push microphone audio"
    )
    audio_burst_s: float = Field(
        30.0, ge=1.0, le=3600.0, description="seconds of microphone audio a client may send at once before max_audio_speed applies"
    )
    audio_frame_ms: int = Field(100, ge=10, le=2000, description="longest reply-audio binary frame sent to clients")
    wyoming: str | None = Field(None, description="e.g. tcp://127.0.0.1:10700 to serve the Wyoming protocol")
    wyoming_zeroconf: bool = Field(
        True,
        description="announce the Wyoming endpoint on the LAN (_wyoming._tcp, mDNS) when it binds beyond loopback, so Home Assistant discovers it",
    )
    wyoming_requires_external_vad: bool = Field(
        False,
        description="false: voiced's own end of turn ends a Wyoming transcription's command (Home Assistant 2026.5+ then skips its fixed 0.7 s silence cut-off); true: the client's audio-stop does",
    )

    @field_validator("host")
    @classmethod
    def _host_nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be an address such as 127.0.0.1")
        return v

    @field_validator("wyoming")
    @classmethod
    def _wyoming_uri(cls, v: str | None) -> str | None:
        # refused here, at start, rather than when the Wyoming server binds after the model has loaded
        if v is None or wyoming_uri_ok(v):
            return v
        raise ValueError("must be tcp://HOST:PORT, e.g. tcp://127.0.0.1:10700 (or unix://PATH)")


def wyoming_uri_ok(uri: str) -> bool:
    """The URI forms the Wyoming server can listen on: tcp://HOST:PORT and unix://PATH."""
    parsed = urlsplit(uri)
    if parsed.scheme == "unix":
        return bool(parsed.netloc or parsed.path)
    if parsed.scheme != "tcp":
        return False
    try:
        return bool(parsed.hostname) and parsed.port is not None
    except ValueError:
        return False


class ModelSettings(_Section):
    bundle: str = Field("default", description="bundle name in the cache (voiced model list) or a bundle directory")
    threads: int = Field(0, ge=0, le=256, description="onnxruntime intra-op threads; 0 = all cores")
    max_new_tokens: int = Field(96, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    system_prompt: str | None = Field(None, description="none = the bundle's own prompt suited to its model")
    history_turns: int = Field(8, ge=0, le=1000, description="exchanges remembered; oldest dropped first")
    history_tokens: int = Field(1536, ge=64, description="token budget of the whole prompt; oldest turns dropped first")
    conversations: int = Field(
        16,
        ge=1,
        le=10000,
        description="conversations remembered at once (one per source: local mic, WebSocket session, Home Assistant conversation); least recently used dropped first",
    )
    conversation_idle_s: float = Field(1800.0, gt=0.0, description="a conversation unused this long is forgotten")
    asr_window_s: float = Field(
        15.0,
        ge=5.0,
        le=30.0,
        description="ASR bundles: Whisper's encoder window for a short segment (30 = Whisper's own, exact; shorter is faster; shorter than 15 mishears the words up to a pause: benchmarks/pause_asr.py, benchmarks/asr.py --windows)",
    )
    asr_threads: int = Field(
        1,
        ge=0,
        le=256,
        description="ASR bundles: Whisper's threads (0 = model.threads); one decodes faster than two and leaves a core free (benchmarks/voice_to_voice.py --levers asr1,asr2)",
    )
    drafter: Literal["auto", "on", "off"] = "auto"
    draft_tokens: int = Field(0, ge=0, le=16, description="0 = adapt k to the measured acceptance")

    def recognizer_threads(self, threads: int | None = None) -> int:
        """Whisper's threads: `asr_threads`, or when that is 0 the model's (`threads` stands in for `self.threads`)."""
        return self.asr_threads or (self.threads if threads is None else threads)


class TTSSettings(_Section):
    engine: Literal["espeak", "piper"] = "espeak"
    voice: str = Field("en-us", description="espeak-ng voice name, or piper voice")
    rate_wpm: int = Field(175, ge=80, le=450)


class PrivacySettings(_Section):
    save_audio: bool = False
    save_transcripts: bool = False
    log_transcripts: bool = Field(
        False,
        description="put what was said and the reply text in the daemon's log lines (the journal is usually on disk); ids, lengths and timings are logged anyway",
    )
    data_dir: Path | None = Field(None, description="where saved audio/transcripts go when enabled")
    save_reminders: bool = Field(
        False, description="keep timers, alarms and reminders (with their words) in data_dir so they survive a restart"
    )


class ActivationSettings(_Section):
    mode: Literal["always", "wake", "push"] = "always"
    wake_phrases: list[str] = Field(default_factory=lambda: ["hey voiced"])
    wake_threshold: float = Field(0.75, gt=0.0, le=1.0)
    model_threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="encoder-free bundles in wake mode: the model's p(yes, I was addressed) a turn needs to be answered",
    )
    wake_detector: Literal["transcript", "model"] = Field(
        "transcript",
        description="wake mode: 'transcript' matches wake_phrases in what the ASR heard; 'model' runs the wake-word model on the audio (works for encoder-free bundles too)",
    )
    wake_model: str = Field(
        "hey_voiced",
        min_length=1,
        description="wake_detector=model: a classifier shipped in voiced/audio/wakeword_models by name, or a path to one (.onnx)",
    )
    wake_model_threshold: float = Field(
        0.9, gt=0.0, lt=1.0, description="wake_detector=model: the classifier score that counts as the wake phrase (benchmarks/wakeword.py)"
    )
    follow_up_s: float = Field(8.0, ge=0.0, le=600.0)
    query_window_s: float = Field(
        8.0, ge=0.0, le=600.0, description="after the wake phrase said alone, how long the next turn counts as the query"
    )
    end_of_turn: Literal["fixed", "adaptive", "model"] = Field(
        "adaptive",
        description="fixed: audio.hangover_ms always; adaptive: shorter when the words so far sound finished, longer mid-sentence; model: adaptive, with the Smart Turn model's p(end of turn) from the audio as well (voiced model prepare smart-turn)",
    )
    turn_model_threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="end_of_turn = model: the Smart Turn probability above which the audio says the turn is finished"
    )
    prefill_while_speaking_s: float = Field(
        2.0,
        ge=0.0,
        le=30.0,
        description="ASR bundles: every this many seconds of speech, transcribe the segment so far and prefill its words while the user still speaks (0 = off)",
    )
    guess_after_ms: int = Field(
        60,
        ge=0,
        le=2000,
        description="ASR bundles: how far into a pause the guess (the transcript that decides the end of turn) takes its audio; 0 = the pause's first frame",
    )
    preemptive_reply: bool = Field(
        True,
        description="ASR bundles: at a pause whose words are addressed to us, start the reply and hold it until the turn is confirmed (dropped, unheard and unremembered, if the user goes on); never for a command",
    )
    hangover_complete_ms: int = Field(
        250, ge=60, le=5000, description="adaptive end of turn: silence that ends a turn that sounds finished"
    )
    hangover_incomplete_ms: int = Field(
        1500, ge=60, le=10000, description="adaptive end of turn: silence allowed mid-sentence ('... and', 'um', a trailing comma)"
    )
    stop_words: list[str] = Field(default_factory=lambda: ["stop", "cancel"])
    barge_in_min_ms: int = Field(300, ge=0, le=5000)


class CommandsSettings(_Section):
    enabled: bool = Field(True, description="timers, alarms, reminders and the clock run as commands before the model (voiced.commands)")
    timezone: str | None = Field(None, description="IANA zone for the clock, alarms and reminders, e.g. Europe/Berlin; none = the system's")
    ring_every_s: float = Field(4.0, ge=0.5, le=600.0, description="pause between repeats of a due timer's announcement")
    ring_for_s: float = Field(60.0, ge=0.0, le=3600.0, description="how long a due timer keeps being announced unless stopped (0 = once)")
    max_items: int = Field(100, ge=1, le=10000, description="timers, alarms and reminders kept at once")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str | None) -> str | None:
        if v is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError("not a known time zone; use an IANA name such as Europe/Berlin or America/New_York") from None
        return v


class BrainSettings(_Section):
    """Which model answers: the embedded engine (`local`) or one served elsewhere over OpenAI's chat completions
    (`server`: vLLM, llama.cpp's server, Ollama). Generation settings (max_new_tokens, temperature, top_p,
    system_prompt, history_turns) come from [model] either way; with a server, model.bundle only gives the
    recogniser (send = "transcript") and the system prompt."""

    kind: Literal["local", "server"] = Field(
        "local", description="local = voiced's own engine on model.bundle; server = the model server at brain.url"
    )
    url: str = Field("http://127.0.0.1:8000/v1", description="the server's OpenAI base URL (ends in /v1)")
    model: str = Field("", description="the model name the server serves (GET /v1/models); empty = the only one it lists")
    api_key_file: Path | None = Field(None, description="a file holding the API key (never printed or logged)")
    api_key_env: str = Field("VOICED_BRAIN_API_KEY", description="the environment variable holding the API key, if no file is given")
    send: Literal["transcript", "audio"] = Field(
        "transcript",
        description="what a spoken turn sends: the local recogniser's words, or the speech itself as input_audio (the server's model must hear)",
    )
    dialect: Literal["auto", "vllm", "llama.cpp", "ollama", "openai"] = Field(
        "auto", description="which extra request fields the server understands; auto = from /v1/models' owned_by"
    )
    thinking: bool = Field(
        False, description="let a thinking model think before it speaks (off: chat_template_kwargs.enable_thinking / think = false)"
    )
    audio_prefix_tokens: int = Field(
        384,
        ge=32,
        le=100000,
        description="send = audio: most (estimated) tokens of system prompt and history before the audio; older history is dropped",
    )
    max_audio_s: float = Field(
        30.0, gt=0.5, le=30.0, description="send = audio: longest clip sent (one per request); the rest of a longer turn is cut"
    )
    connect_timeout_s: float = Field(3.0, gt=0.0, le=120.0)
    first_token_timeout_s: float = Field(
        60.0, gt=0.0, le=600.0, description="how long the server may take to its first streamed event (its prefill)"
    )
    stall_timeout_s: float = Field(
        15.0, gt=0.0, le=600.0, description="a stream with no event for longer (keep-alive comments do not count) is abandoned as stalled"
    )
    retry_initial_s: float = Field(
        1.0, gt=0.0, le=600.0, description="server down: first wait before probing it again (doubles up to retry_max_s)"
    )
    retry_max_s: float = Field(30.0, gt=0.0, le=3600.0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// base URL such as http://127.0.0.1:8000/v1")
        return v.rstrip("/")


_SECTIONS = ("audio", "server", "model", "tts", "privacy", "activation", "commands", "brain")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VOICED_", env_nested_delimiter="__", extra="forbid", validate_default=True, nested_model_default_partial_update=True
    )

    audio: AudioSettings = Field(default_factory=AudioSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    tts: TTSSettings = Field(default_factory=TTSSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    activation: ActivationSettings = Field(default_factory=ActivationSettings)
    commands: CommandsSettings = Field(default_factory=CommandsSettings)
    brain: BrainSettings = Field(default_factory=BrainSettings)

    @model_validator(mode="after")
    def _privacy_dir(self) -> "Settings":
        if (self.privacy.save_audio or self.privacy.save_transcripts) and self.privacy.data_dir is None:
            raise ValueError("privacy.save_audio/save_transcripts need privacy.data_dir (a directory to write to)")
        if self.privacy.save_reminders and self.privacy.data_dir is None:
            raise ValueError("privacy.save_reminders needs privacy.data_dir (a directory to write to)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init (CLI flags) > env > the TOML file named by model_config (load_settings sets it per call).
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    def token_path(self) -> Path:
        return self.server.token_file or config_home() / "token"


# Redacted by exact name (a substring match hid max_new_tokens and friends): keys that would hold a secret.
_SECRET_KEYS = frozenset({"token", "api_key", "password", "secret"})


class ConfigError(VoicedError):
    """A configuration the daemon refuses; the message names key, value and what is allowed."""


def _read_toml(path: Path, explicit: bool) -> dict[str, Any]:
    if not path.exists():
        if explicit:
            raise ConfigError(f"config file {path} does not exist; create it or drop --config")
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML ({e}); fix the line it names") from e
    unknown = [k for k in data if k not in _SECTIONS]
    if unknown:
        raise ConfigError(f"config file {path}: unknown section(s) {unknown}; allowed: {list(_SECTIONS)}")
    return data


def _env_layer() -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for key, value in os.environ.items():
        if not key.startswith("VOICED_") or "__" not in key:
            continue
        section, _, name = key[len("VOICED_") :].lower().partition("__")
        out.setdefault(section, {})[name] = value
    return out


def _section_model(section: str) -> type[BaseModel]:
    model = Settings.model_fields[section].annotation
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"Settings.{section} is not a section model; declare it as a BaseModel subclass")
    return model


def _env_keys() -> list[str]:
    return [f"VOICED_{s.upper()}__{k.upper()}" for s in _SECTIONS for k in _section_model(s).model_fields]


def _check_env_names(env: dict[str, dict[str, str]]) -> None:
    """A typo in a VOICED_<SECTION>__<KEY> name is refused, not silently ignored (pydantic-settings drops an
    unknown section without a word), naming the closest real name."""
    known = _env_keys()
    for section, values in env.items():
        for name in values:
            var = f"VOICED_{section.upper()}__{name.upper()}"
            if var in known:
                continue
            close = difflib.get_close_matches(var, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else "`voiced config` lists every key (VOICED_<SECTION>__<KEY>)"
            raise ConfigError(f"environment variable {var} is not a voiced setting; {hint} Rename or unset it.")


def _format_error(e: ValidationError, origin: dict[tuple[str, str], str]) -> str:
    lines = ["invalid configuration:"]
    for err in e.errors():
        parts = [str(p) for p in err["loc"]]
        loc = ".".join(parts)
        where = origin.get((parts[0], parts[1]), "default") if len(parts) >= 2 else "default"
        value = err.get("input")
        lines.append(f"  {loc} = {value!r} (from {where}): {err['msg']}")
    lines.append("Fix the value(s) above; `voiced config` shows every key, its value and where it came from.")
    return "\n".join(lines)


def load_settings(
    config_path: Path | None = None, overrides: dict[str, dict[str, Any]] | None = None
) -> tuple[Settings, dict[tuple[str, str], str]]:
    """Build Settings and a map (section, key) -> the source that set it ('default', a file, 'env', 'flag')."""
    path = config_path or default_config_path()
    toml_data = _read_toml(path, explicit=config_path is not None)
    overrides = {k: v for k, v in (overrides or {}).items() if v}
    origin: dict[tuple[str, str], str] = {}
    for section, values in toml_data.items():
        for key in values if isinstance(values, dict) else ():
            origin[(section, key)] = str(path)
    env = _env_layer()
    _check_env_names(env)
    for section, values in env.items():
        for key in values:
            origin[(section, key)] = f"env VOICED_{section.upper()}__{key.upper()}"
    for section, values in overrides.items():
        for key in values:
            origin[(section, key)] = "flag"
    reader = type("_FileSettings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": path if toml_data else None}})
    try:
        settings = reader(**overrides)
    except ValidationError as e:
        raise ConfigError(_format_error(e, origin)) from None
    return settings, origin


class ConfigRow(TypedDict):
    """One key of `voiced config`: "section.key", its value as JSON gives it, and the source that set it."""

    key: str
    value: object
    source: str


def describe(settings: Settings, origin: dict[tuple[str, str], str]) -> list[ConfigRow]:
    """Every key with its effective value (secrets redacted) and where it came from."""
    rows: list[ConfigRow] = []
    for section in _SECTIONS:
        sec = getattr(settings, section)
        for key, value in sec.model_dump(mode="json").items():
            if isinstance(getattr(sec, key), SecretStr) or key in _SECRET_KEYS:
                value = "***"
            rows.append({"key": f"{section}.{key}", "value": value, "source": origin.get((section, key), "default")})
    return rows
