"""Between turns the assistant's cache holds the system prompt, the history and the next user turn's opening,
so a turn prefills only its own words and the generation prompt; on the tiny Qwen2 bundle (its real chat
template) and on the tiny Gemma 4 one (whose template folds the system prompt into the first user turn)."""

from __future__ import annotations

import pytest

from tests.support import gemma4
from tests.support.engine import tiny
from voiced.assistant import Assistant
from voiced.config import load_settings
from voiced.model.bundle import load_bundle


def _assistant(bundle) -> Assistant:
    settings, _ = load_settings(
        None, {"model": {"max_new_tokens": 6, "threads": 1}, "audio": {"input_device": "none", "output_device": "none"}}
    )
    return Assistant(bundle, settings.model)


@pytest.mark.parametrize("family", ["qwen2", "gemma4"])
def test_idle_prefill_leaves_a_turn_only_its_words(family: str) -> None:
    bundle = tiny("int4") if family == "qwen2" else load_bundle(gemma4.tiny_bundle("fp32"))
    a = _assistant(bundle)
    a.warm_up()
    for question in ("What is the capital of France?", "Set a timer for five minutes."):
        full = a._prompt_ids(question)
        opening = a._prompt_ids(None)
        assert len(opening) > 0 and full[: len(opening)] == opening  # a true prefix of the next prompt
        words = a.prompt.bundle.tokenizer.encode(question, add_special_tokens=False).ids
        assert full[len(opening) : len(opening) + len(words)] == words  # what is left: the words, then the template's close
        assert a.prepare(None) == 0  # already there: nothing more to do
        left = a.prepare(question)
        assert left == len(full) - len(opening), (left, len(full), len(opening))
        reply = "".join(d.text for d in a.reply(question))
        assert a.conversation.last_stats["prefill_tokens"] == left  # the turn's prefill: none of the idle work
        a.remember(question, reply, interrupted=False)
        assert a.prepare_next_turn() > 0  # the reply's close and the next opening, prefilled while idle
