"""ClauseChunker: clauses complete as early as they exist, whatever sizes the model's deltas come in."""

from __future__ import annotations

import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from voiced.speech.chunker import ClauseChunker

REPLY = (
    "Sure, the value of pi is about 3.14, which most people round. Dr. Smith said so, e.g. in the U.S. lab "
    "at 10:05 a.m. yesterday. It costs $5.50! Is that right? Yes."
)


def stream(text: str, sizes: list[int] | int, chunker: ClauseChunker | None = None) -> tuple[list[str], list[int]]:
    """Clauses, and for each the number of characters pushed when it came out (len(text)+1 = at flush)."""
    c = chunker or ClauseChunker()
    out, at, i, k = [], [], 0, 0
    while i < len(text):
        step = sizes if isinstance(sizes, int) else sizes[k % len(sizes)]
        k += 1
        got = c.push(text[i : i + step])
        i += step
        out += got
        at += [min(i, len(text))] * len(got)
    rest = c.flush()
    return out + rest, at + [len(text) + 1] * len(rest)


def test_first_clause_before_the_reply_is_done() -> None:
    clauses, at = stream(REPLY, 3, ClauseChunker(first_fragment_words=0))  # clauses only (no first fragment)
    assert clauses[0] == "Sure, the value of pi is about 3.14,"
    assert at[0] < len("Sure, the value of pi is about 3.14, which")
    assert len(clauses) >= 4
    assert at[-2] <= len(REPLY), "every clause but the last comes out before flush"


def test_numbers_and_abbreviations_never_split() -> None:
    clauses, _ = stream(REPLY, 1)
    joined = " | ".join(clauses)
    assert "3.14" in joined and "Dr. Smith said so, for example in the U.S. lab" in joined
    assert "10 oh 5 a m yesterday." in joined
    assert "5 dollars and 50 cents!" in joined
    assert clauses[-2:] == ["Is that right?", "Yes."]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=12))
def test_delta_sizes_do_not_change_the_clauses(sizes: list[int]) -> None:
    whole, _ = stream(REPLY, len(REPLY))
    assert stream(REPLY, sizes)[0] == whole


def test_short_lead_waits_for_four_words_before_a_comma() -> None:
    clauses, _ = stream("Well, honestly I think it is lovely, and we should go out now.", 2)
    assert clauses == ["Well, honestly I think it is lovely,", "and we should go out now."]


def test_later_commas_keep_short_sentences_whole() -> None:
    text = "Hello there my friend, how are you. Today, it is sunny, and warm, so go out."
    clauses, _ = stream(text, 4)
    assert clauses == ["Hello there my friend,", "how are you.", "Today, it is sunny, and warm, so go out."]


def test_word_budget_cuts_rambling_without_punctuation() -> None:
    words = [f"w{i}" for i in range(70)]
    clauses, at = stream(" ".join(words), 5)
    assert [len(c.split()) for c in clauses] == [12, 30, 28]
    assert " ".join(clauses).split() == words
    assert at[0] < len(" ".join(words[:14]))


def test_markdown_lists_and_code_are_not_read_out() -> None:
    text = "Here are the steps:\n1. Preheat the oven.\n2. Mix **flour** and eggs\n- a bullet\n```python\nprint(1)\n```\nDone! 🎉 ok"
    clauses, _ = stream(text, 3)
    assert clauses == ["Here are the steps:", "Preheat the oven.", "Mix flour and eggs", "a bullet", "Done!", "ok"]


def test_heading_line_is_its_own_clause() -> None:
    clauses, _ = stream("# Weather today\nIt is sunny and warm outside.", 2)
    assert clauses == ["Weather today", "It is sunny and warm outside."]


def test_quotes_initials_and_dashes() -> None:
    clauses, _ = stream('J. R. R. Tolkien left \u2014 quietly, as usual. He said "Go now." Then went.', 2)
    assert clauses == ["J. R. R. Tolkien left \u2014", "quietly, as usual.", 'He said "Go now."', "Then went."]


def test_flush_resets_for_the_next_reply() -> None:
    c = ClauseChunker()
    assert c.push("Unfinished thought without end") == []
    assert c.flush() == ["Unfinished thought without end"]
    assert c.push("One two three four, five.") == ["One two three four,"]
    assert c.flush() == ["five."]
    assert c.flush() == []


def test_nothing_speakable_yields_nothing() -> None:
    clauses, _ = stream("🎉🎉 ```\ncode only\n``` ---", 2)
    assert clauses == []


def test_random_replies_lose_no_words() -> None:
    rng = random.Random(7)
    vocab = ["alpha", "beta,", "gamma.", "delta;", "3.5", "e.g.", "Dr.", "U.S.", "ok!", "why?", "x"]
    for _ in range(30):
        text = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 60)))
        clauses, _ = stream(text, rng.randint(1, 6))
        assert " ".join(clauses).replace("for example", "e.g.").split() == text.split()


def test_first_fragment_ends_before_a_phrase_opener_and_never_inside_a_noun_phrase() -> None:
    frag = ClauseChunker(first_fragment_words=3)
    clauses, at = stream("The capital of France is Paris, a city on the Seine. It is lovely.", 1, frag)
    assert clauses[0] == "The capital of France,"  # a comma: the voice goes on level, not with a final fall
    assert at[0] <= len("The capital of France is ")  # out as soon as "is" is known to be a whole word
    assert clauses[1:] == ["is Paris, a city on the Seine.", "It is lovely."]
    # No phrase opener after a word that can end one: the clause rules apply ("eight | legs" would sound broken).
    assert stream("A spider has eight legs.", 1, ClauseChunker(first_fragment_words=3))[0] == ["A spider has eight legs."]
    # Never before N words, never after a word that announces more, never twice.
    two, _ = stream(
        "I think that you will like it and so will he, and then we can go to the park and play.", 1, ClauseChunker(first_fragment_words=4)
    )
    assert two == ["I think that you will like it and so will he,", "and then we can go to the park and play."]
    off, _ = stream("The capital of France is Paris, a city on the Seine.", 1, ClauseChunker(first_fragment_words=0))
    assert off[0] == "The capital of France is Paris,"  # off: the first piece is a clause
    assert stream("The capital of France is Paris.", 1)[0][0] == "The capital of France,"  # on by default
    # A number ends one once the whitespace after it says it is whole; a counted noun stays with its number.
    assert stream("15 plus 27 equals 42.", 1)[0] == ["15 plus 27,", "equals 42."]
    assert stream("You have 77 apples now.", 1)[0] == ["You have 77 apples now."]
    assert stream("It costs 1,000 dollars in total.", 2)[0] == ["It costs 1,000 dollars,", "in total."]


@given(st.text(alphabet="ab .,!?3\n", max_size=80), st.lists(st.integers(1, 9), min_size=1, max_size=5))
@settings(max_examples=60, deadline=None)
def test_fragments_lose_and_reorder_no_words(text: str, sizes: list[int]) -> None:
    text = "the cat of is and a dog " + text
    whole, _ = stream(text, len(text) + 1, ClauseChunker(first_fragment_words=2))
    pieces, _ = stream(text, sizes, ClauseChunker(first_fragment_words=2))
    assert pieces == whole  # the deltas' sizes never change where it cuts
    words = lambda xs: re.findall(r"\w+", " ".join(xs))  # noqa: E731  (words: a lone "?" is no word to lose)
    assert words(pieces) == words(stream(text, len(text) + 1, ClauseChunker(first_fragment_words=0))[0])
