"""Chat prompts from the bundle's own template, checked against transformers' apply_chat_template."""

from __future__ import annotations

import logging

from tests.support.engine import hf_twin, tiny
from voiced.model.prompt import ChatPrompt

HISTORY = [
    {"role": "system", "content": "You are a test model."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "How many days are in a leap year?"},
    {"role": "assistant", "content": "A leap year has three hundred and sixty six days."},
    {"role": "user", "content": "Set a timer for five minutes."},
]


def test_render_equals_transformers_apply_chat_template():
    from transformers import AutoTokenizer

    _, hf_dir = hf_twin()
    ref = AutoTokenizer.from_pretrained(hf_dir)
    prompt = ChatPrompt(tiny())
    for gen in (True, False):
        want = ref.apply_chat_template(HISTORY, add_generation_prompt=gen, tokenize=True)
        want = want["input_ids"] if isinstance(want, dict) or hasattr(want, "keys") else want
        assert prompt.render(HISTORY, add_generation_prompt=gen) == list(want)


def test_fit_drops_oldest_turns_keeps_system_and_logs(caplog):
    prompt = ChatPrompt(tiny())
    full = prompt.count(HISTORY)
    assert prompt.fit(HISTORY, full) == HISTORY
    with caplog.at_level(logging.INFO, logger="voiced.model.prompt"):
        fitted = prompt.fit(HISTORY, full - 5)
    assert fitted == [HISTORY[0]] + HISTORY[3:]  # the first exchange went, as a pair
    assert prompt.count(fitted) <= full - 5
    assert len([r for r in caplog.records if "dropped the 2 oldest messages" in r.message]) == 1
    tight = prompt.fit(HISTORY, 1)
    assert tight == [HISTORY[0], HISTORY[-1]]  # system and the newest message always stay
