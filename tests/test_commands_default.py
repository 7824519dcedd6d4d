"""No pretending, on the real default model: asked for what no command does, it says it cannot.

The real 1.5B default bundle with the system prompt voiced composes at run time (voiced.commands.prompt): the
bundle's own prompt told it to confirm timers, which is how "set a timer" used to get "I have set a timer".
"""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.support.bundles import default_bundle
from tests.support.speech import compose, write_wav
from voiced.assistant import Assistant
from voiced.commands import prompt
from voiced.config import load_settings
from voiced.model.bundle import load_bundle
from voiced.pipeline import Pipeline
from voiced.speech.tts import make_tts
from voiced.turn_cli import run_turn

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

CLAIMS = ("i've turned", "i have turned", "turned on", "done", "is now on", "are now on", "i turned", "switched on", "okay, turning")
REFUSALS = ("can't", "cannot", "can not", "unable", "not able", "don't have", "do not have", "no way to", "not possible")


@pytest.fixture(scope="module")
def pipeline_factory():
    settings, _ = load_settings(
        None, {"model": {"threads": 2, "max_new_tokens": 48}, "audio": {"input_device": "none", "output_device": "none"}}
    )
    assistant = Assistant(load_bundle(default_bundle()), settings.model)
    return lambda: Pipeline(settings, assistant, make_tts(settings.tts), None, pace=False)


@pytest.mark.parametrize("request_text", ["Turn on the kitchen light.", "Play some jazz."])
def test_the_model_says_it_cannot_do_what_no_command_does(pipeline_factory, tmp_path, request_text: str) -> None:
    async def ask() -> tuple[dict, str]:
        wav = write_wav(tmp_path / "q.wav", compose([0.4, request_text, 1.0], wpm=150).pcm)
        pipeline = pipeline_factory()
        pipeline.assistant.forget()
        try:
            return (await run_turn(pipeline, wav, None, timeout_s=300)).result(), pipeline.assistant.memory.system_prompt
        finally:
            await pipeline.aclose()

    result, system = asyncio.run(ask())
    assert prompt.STALE not in system and prompt.CANNOT in system
    reply = result["reply_text"].lower().replace("\u2019", "'")
    heard = result["transcript"] or ""
    assert set(re.findall(r"[a-z]+", request_text.lower())) & set(re.findall(r"[a-z]+", heard.lower())), heard
    assert result["timings_ms"].get("decode_tokens", 0) > 0, "this request must reach the model"
    assert not [c for c in CLAIMS if re.search(rf"\b{re.escape(c)}\b", reply)], f"claims it did it: {reply!r}"
    assert any(r in reply for r in REFUSALS), f"does not say it cannot: {reply!r}"


def test_asked_how_to_do_something_it_still_explains(pipeline_factory) -> None:
    """The honesty sentence must not turn into refusing everything that names a device."""

    async def ask() -> str:
        pipeline = pipeline_factory()
        pipeline.assistant.forget()
        try:
            return (await run_turn(pipeline, None, "How do I change a light bulb?", timeout_s=300)).result()["reply_text"]
        finally:
            await pipeline.aclose()

    reply = asyncio.run(ask()).lower().replace("\u2019", "'")
    assert "bulb" in reply and not any(r in reply for r in REFUSALS), reply
