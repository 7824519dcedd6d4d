"""Encoder-free turns: the same pipeline runs a Gemma 4 bundle whose model hears the audio itself."""

from __future__ import annotations

import asyncio
import math

from protocol import messages as m
from tests.support.gemma4 import tiny_bundle
from tests.support.speech import compose
from voiced.assistant import SPOKEN, Assistant
from voiced.config import load_settings
from voiced.model.bundle import load_bundle
from voiced.pipeline import Pipeline
from voiced.speech.tts import make_tts
from voiced.turn_cli import Collector


class CacheAtReply(Collector):
    """Keeps the cache's tokens as each reply is done, before the idle prefill of the next turn's opening
    replaces the heard audio with its history text ("(spoken)")."""

    def __init__(self, assistant: Assistant) -> None:
        super().__init__()
        self.assistant = assistant
        self.tokens: list[list[int]] = []

    def broadcast(self, msg) -> None:
        if isinstance(msg, m.ReplyDone):
            self.tokens.append(list(self.assistant.conversation.tokens))
        super().broadcast(msg)


async def test_spoken_turns_reach_a_projector_bundle_as_audio_frames() -> None:
    settings, _ = load_settings(
        None, {"model": {"max_new_tokens": 12, "threads": 2}, "audio": {"input_device": "none", "output_device": "none"}}
    )
    bundle = load_bundle(tiny_bundle("fp32"))
    spec = bundle.manifest.audio
    assistant = Assistant(bundle, settings.model)
    assert assistant.hears_audio and not assistant.transcribes
    pipeline = Pipeline(settings, assistant, make_tts(settings.tts), None, pace=False)
    collector = CacheAtReply(assistant)
    pipeline.add_publisher(collector)
    try:
        for seed, words in enumerate(["What is the capital of France?", "And of Spain?"]):
            rec = compose([0.4, words, 2.0], seed=seed)
            for i in range(0, len(rec.pcm), 480):
                await pipeline.feed("local", rec.pcm[i : i + 480])
            async with asyncio.timeout(60):
                while len([x for x in collector.messages if isinstance(x, m.ReplyDone)]) <= seed:
                    await asyncio.sleep(0.02)
            ended = [x for x in collector.messages if isinstance(x, m.SpeechEnded)][-1]
            # the cache holds boa, one placeholder per 40 ms frame of the segment, eoa
            tokens = collector.tokens[seed]
            start = len(tokens) - 1 - tokens[::-1].index(spec.boa_id)
            n = tokens[start + 1 :].index(spec.eoa_id)
            assert set(tokens[start + 1 : start + 1 + n]) == {spec.audio_token_id}
            segment = pipeline.turns_done[-1]
            assert n >= math.floor((ended.t_end - ended.t_start) * 25)
            assert segment.text.strip() or segment.timings_ms["decode_tokens"] > 0
    finally:
        await pipeline.aclose()
    assert [e.user for e in assistant.memory.exchanges] == [SPOKEN, SPOKEN]
    assert not any(isinstance(x, m.Transcript) for x in collector.messages), "an encoder-free bundle has no transcript"
