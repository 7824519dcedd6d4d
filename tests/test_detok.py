"""Streaming detokenisation on the tiny bundle's byte-level BPE: multi-byte characters are split over several
tokens there (its merges saw ASCII only), so every delta must still be whole characters."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.engine import tiny
from voiced.model.detok import StreamDetokenizer

TEXT = "Héllo wörld — 日本語 🎉 ok"


def stream(ids: list[int], context=None) -> list[str]:
    d = StreamDetokenizer(tiny().tokenizer, context=context)
    out = [d.push(t) for t in ids]
    out.append(d.flush())
    return out


def test_multibyte_characters_split_across_tokens_are_never_emitted_in_halves():
    tok = tiny().tokenizer
    ids = tok.encode(TEXT, add_special_tokens=False).ids
    singles = [tok.decode([t]) for t in ids]
    assert any("\ufffd" in s for s in singles)  # the premise: some tokens are partial characters
    deltas = stream(ids)
    assert "".join(deltas) == TEXT
    assert all("\ufffd" not in d for d in deltas)
    assert "" in deltas  # held back while a character was incomplete


def test_special_tokens_are_not_text_and_context_keeps_leading_space():
    tok = tiny().tokenizer
    ids = tok.encode("<|im_start|>assistant\nHi there", add_special_tokens=False).ids
    assert "".join(stream(ids)) == "assistant\nHi there"
    head = tok.encode("Hi", add_special_tokens=False).ids
    tail = tok.encode("Hi there", add_special_tokens=False).ids[len(head) :]
    assert "".join(stream(tail, context=head)) == " there"


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_any_text_round_trips_in_whole_characters(text):
    ids = tiny().tokenizer.encode(text, add_special_tokens=False).ids
    deltas = stream(ids)
    assert "".join(deltas) == tiny().tokenizer.decode(ids)
    assert all("\ufffd" not in d for d in deltas) or "\ufffd" in text
