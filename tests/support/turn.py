"""A whole daemon in the test's event loop: tiny real model + real Whisper + espeak + the real server.

The tiny bundle is a random-weight Qwen2 made by the real builder route, given the real Whisper tiny.en as its
ASR cascade: the turn's mechanics (VAD, ASR, KV-cached prompt, chunker, TTS, fan-out, barge-in) are exercised
for real in seconds; the answer quality of the real default model is tested in test_default_answers.py.
"""

from __future__ import annotations

import json
import shutil
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from tests.support.asr import tiny_en_dir
from tests.support.bundles import test_cache, tiny_bundle
from voiced.assistant import Assistant
from voiced.config import Settings, load_settings
from voiced.model.bundle import load_bundle
from voiced.pipeline import Pipeline
from voiced.server.ws import VoicedServer
from voiced.speech.tts import make_tts
from voiced.turn_cli import Collector


def asr_tiny_bundle() -> Path:
    """The tiny int4 bundle with `audio = asr` pointing at Whisper tiny.en (a symlink, not a copy)."""
    src = tiny_bundle("int4")
    out = test_cache() / f"asr-{src.name}"
    if (out / "manifest.json").is_file() and (out / "asr").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    (tmp / "asr").symlink_to(tiny_en_dir(), target_is_directory=True)
    manifest = json.loads((tmp / "manifest.json").read_text())
    manifest["audio"] = {"kind": "asr", "engine": "faster-whisper", "dir": "asr", "language": "en"}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def turn_settings(**sections: dict[str, Any]) -> Settings:
    base: dict[str, dict[str, Any]] = {
        "server": {"port": 0},
        "model": {"max_new_tokens": 24, "threads": 2},
        "audio": {"input_device": "none", "output_device": "none", "hangover_ms": 400},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    settings, _ = load_settings(None, base)
    return settings


_ASSISTANTS: dict[str, Assistant] = {}


def shared_assistant(settings: Settings) -> Assistant:
    """Loading the graph and Whisper costs seconds: tests share one assistant, each with fresh memory."""
    act = settings.activation
    hotwords = ", ".join(act.wake_phrases) if act.mode == "wake" else None
    key = f"{settings.model.max_new_tokens}-{hotwords}"
    a = _ASSISTANTS.get(key)
    if a is None:
        a = _ASSISTANTS[key] = Assistant(load_bundle(asr_tiny_bundle()), settings.model, hotwords=hotwords)
    a.settings = settings.model
    a.forget_all()
    a.select("local")
    return a


@asynccontextmanager
async def daemon(
    settings: Settings, token: str = "test-token-0123456789abcdef", assistant: Assistant | None = None, **pipeline_kw: Any
) -> AsyncIterator[tuple[Pipeline, VoicedServer, Collector]]:
    """A pipeline and a real server on 127.0.0.1; `assistant` defaults to the shared one of the settings' bundle."""
    pipeline = Pipeline(settings, assistant or shared_assistant(settings), make_tts(settings.tts), **pipeline_kw)
    collector = Collector()
    pipeline.add_publisher(collector)
    server = VoicedServer(settings.server, pipeline, token, activation=settings.activation.mode)
    pipeline.add_publisher(server)
    async with server:
        try:
            yield pipeline, server, collector
        finally:
            await pipeline.aclose()
