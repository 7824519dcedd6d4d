"""What voiced says about itself to a Wyoming peer (`describe` -> `info`), in the terms Home Assistant shows.

Home Assistant builds its entities from this (homeassistant/components/wyoming/{stt,tts,conversation}.py): each
program's `name` is an entity's name (and the first one the config entry's title), each model's or voice's
`languages` the entity's languages, which an Assist pipeline must match. So:

- every program is named "voiced": the entry and its speech-to-text, text-to-speech and conversation entities
  read as voiced's, not as an internal part name; models carry what a user knows them by (Whisper, espeak-ng or
  Piper and the voice, the bundle's model);
- languages are BCP-47 tags from the parts' own metadata: the recogniser's language from the bundle manifest,
  the TTS voice's from the voice itself (espeak-ng's voice record, a Piper voice's config), never from a voice
  name or a file path. Home Assistant compares tags by language and region, so `en-US` matches its `en` and
  `en-US` pipelines as Piper's `en_US` does.
- `supports_synthesize_streaming`: voiced speaks streamed text clause by clause (voiced.server.wyoming.tts).
- `requires_external_vad` is `server.wyoming_requires_external_vad` (default false: voiced's adaptive end of turn
  ends the command, voiced.server.wyoming.stt; true: the client's `audio-stop` does).
"""

from __future__ import annotations

import re

from wyoming.info import AsrModel, AsrProgram, Attribution, HandleModel, HandleProgram, Info, TtsProgram, TtsVoice

from voiced import __version__
from voiced.model.manifest import AsrAudio
from voiced.server.handler import SpeechBackend

NAME = "voiced"
_ATTRIBUTION = Attribution(name="voiced", url="")  # no public home page to point at (yet); never invent one
_ENGINES = {"espeak": "espeak-ng", "piper": "Piper"}


def bcp47(code: str | None) -> str | None:
    """'en-us', 'en_US', 'EN' -> 'en-US', 'en-US', 'en'; script subtags title-cased ('zh-hans' -> 'zh-Hans').
    None for what is not a language tag (a path, a voice's name)."""
    if not code:
        return None
    parts = re.split(r"[-_]", code.strip())
    if not re.fullmatch(r"[A-Za-z]{2,3}", parts[0]) or not all(re.fullmatch(r"[A-Za-z0-9]{1,8}", p) for p in parts[1:]):
        return None
    out = [parts[0].lower()]
    for i, p in enumerate(parts[1:], 1):
        if any(len(q) == 1 for q in parts[1:i]):  # after a singleton ("x-"): extension or private use, as written
            out.append(p.lower())
        elif len(p) == 2 and p.isalpha() or len(p) == 3 and p.isdigit():
            out.append(p.upper())
        elif len(p) == 4 and p.isalpha():
            out.append(p.title())
        else:
            out.append(p.lower())
    return "-".join(out)


def describe_info(backend: SpeechBackend) -> Info:
    """`info` for a peer's `describe`: what `backend` hears and says, in Home Assistant's terms (see above)."""
    manifest = backend.manifest
    audio = manifest.audio
    language = bcp47(audio.language if isinstance(audio, AsrAudio) else None) or "en"
    settings = backend.settings
    tts_settings = settings.tts
    engine = _ENGINES.get(tts_settings.engine, tts_settings.engine)
    voice_lang = bcp47(backend.voice_language)  # the engine's own (espeak-ng's voice record, a Piper voice's config)
    asr = []
    if backend.hears_audio and isinstance(audio, AsrAudio):
        program_model = AsrModel(
            name="Whisper",
            attribution=_ATTRIBUTION,
            installed=True,
            version=None,
            languages=[language],
            description=f"Whisper ({audio.engine}) of the {manifest.name} bundle",
        )
        program = AsrProgram(
            name=NAME,
            attribution=_ATTRIBUTION,
            installed=True,
            version=__version__,
            description="voiced speech to text (Whisper)",
            models=[program_model],
        )
        program.requires_external_vad = settings.server.wyoming_requires_external_vad  # after: not in old wyoming
        asr.append(program)
    voice = TtsVoice(
        name=tts_settings.voice,
        attribution=_ATTRIBUTION,
        installed=True,
        version=None,
        languages=[voice_lang] if voice_lang else [],
        description=f"{engine} {_voice_label(tts_settings.voice)}",
    )
    handle = HandleModel(
        name=manifest.name,
        attribution=_ATTRIBUTION,
        installed=True,
        version=None,
        languages=[language],
        description=manifest.description or f"voiced assistant ({manifest.family})",
    )
    tts_program = TtsProgram(
        name=NAME,
        attribution=_ATTRIBUTION,
        installed=True,
        version=__version__,
        description=f"voiced text to speech ({engine})",
        voices=[voice],
    )
    tts_program.supports_synthesize_streaming = True  # set after: wyoming releases before 1.7 lack the field
    return Info(
        asr=asr,
        tts=[tts_program],
        handle=[
            HandleProgram(
                name=NAME,
                attribution=_ATTRIBUTION,
                installed=True,
                version=__version__,
                description="voiced local assistant (spoken turns: run-pipeline)",
                models=[handle],
            )
        ],
    )  # supports_home_control and supports_handled_streaming keep their defaults, False


def _voice_label(voice: str) -> str:
    """A voice setting as a person reads it: a Piper voice file by its name, not its path."""
    name = re.split(r"[\\/]", voice)[-1]
    return name[: -len(".onnx")] if name.endswith(".onnx") else name or "default voice"
