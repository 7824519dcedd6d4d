"""Streaming reply text -> clauses ready for TTS, the first one as early as it can be spoken well.

Latency is the point: the first clause goes to TTS while the model is still writing. A sentence end ends a
clause; before the first clause has been spoken, a comma, semicolon, colon or dash also does once at least
`first_min_words` words are pending (speech has started; what follows is generated faster than it is spoken).
Later clauses split on those marks only after `min_words`, so the prosody of ordinary sentences stays whole.
A model that rambles without punctuation is cut at `max_words` (`first_max_words` for the first clause).

First words at once: with `first_fragment_words` (N > 0) the first piece need not be a clause. Once N words
are complete it ends before the first word that opens a new phrase ("is", "and", "which", "on": "The capital
of France | is Paris"), when the word before it can end one (not "the", "of", "you"); ending anywhere else
cuts a noun phrase ("A spider has eight | legs") and sounds broken. The fragment is given a trailing comma,
so the voice keeps the level melody of a clause that goes on instead of a sentence's final fall. What follows is generated faster than the fragment is
spoken, so the next clause is ready before the fragment's audio ends (benchmarks/voice_to_voice.py --levers).

A boundary is only decided once the character after it has arrived, so "3." + "14" and "e.g" + ". " never
split: a full stop needs whitespace after it and must not end a known abbreviation, a dotted acronym ("U.S."),
an initial ("J.") or an ordered-list number at the start of a line. Code fences are dropped whole, and each
clause leaves through `speakable` (markdown, emoji, URLs, numbers), empty ones not at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from voiced.audio.endpoint import CONTINUATIONS
from voiced.speech.normalize import speakable

_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt vs etc eg ie approx no fig inc ltd co corp dept est ca cf al gen gov sen rep "
    "lt col capt sgt ave blvd rd jan feb mar apr jun jul aug sep sept oct nov dec mon tue wed thu fri sat sun "
    "vol ch pp op min max".split()
)
_DOTTED = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]$")  # e.g / i.e / U.S / a.m (the final dot is the candidate)
_SENTENCE_END = ".!?\u2026"
_CLAUSE_MARKS = ",;:"
_CLOSERS = "\"')]}\u201d\u2019*_"
_WORD = re.compile(r"\S+")
_FENCE = "```"
# Words a first fragment does not end on: those a sentence does not end on, and auxiliaries, subject pronouns
# and relatives that announce more ("The capital of France is", "I think you").
_NO_FRAGMENT_END = CONTINUATIONS | frozenset(
    """is are was were be been being am will would can could should shall may might must do does did has have had
    not no i you he she it we they that which who whose whom there here this these those so then just also""".split()
)
# Words that open a new phrase: a first fragment may end just before one.
_PHRASE_OPENERS = frozenset(
    """is are was were has have had will would can could and but or so because which who that where when while
    in on at of with for from by about to into over under after before during since until like than as
    equals plus minus times""".split()
)


@dataclass
class ClauseChunker:
    first_min_words: int = 4
    min_words: int = 10
    first_max_words: int = 12
    max_words: int = 30
    first_fragment_words: int = 3  # 0 = the first piece is a clause like the others
    _buf: str = field(default="", init=False, repr=False)
    _in_fence: bool = field(default=False, init=False, repr=False)
    _emitted: int = field(default=0, init=False, repr=False)
    _fragment_cut: bool = field(default=False, init=False, repr=False)

    def push(self, delta: str) -> list[str]:
        """The speakable clauses that `delta` completed (often none)."""
        self._buf += delta
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """Everything still pending, at the end of the reply; the chunker is ready for the next reply after."""
        out = self._drain(final=True)
        self._buf, self._in_fence, self._emitted = "", False, 0
        return out

    # -- internals ----------------------------------------------------------------------------------------------

    def _drain(self, final: bool) -> list[str]:
        out: list[str] = []
        while True:
            if self._in_fence:
                end = self._buf.find(_FENCE)
                if end < 0:
                    # Keep a possible partial closing fence; the code itself is never spoken.
                    self._buf = "" if final else self._buf[-2:]
                    return out
                self._buf = self._buf[end + len(_FENCE) :]
                self._in_fence = False
                continue
            fence = self._buf.find(_FENCE)
            text = self._buf if fence < 0 else self._buf[:fence]
            cut = self._boundary(text, final=final or fence >= 0)
            if cut is not None:
                self._emit(text[:cut], out, fragment=self._fragment_cut)
                self._buf = self._buf[cut:]
                continue
            if fence >= 0:
                self._emit(text, out)
                self._buf = self._buf[fence + len(_FENCE) :]
                self._in_fence = True
                continue
            if final:
                self._emit(self._buf, out)
                self._buf = ""
            return out

    def _emit(self, raw: str, out: list[str], fragment: bool = False) -> None:
        clause = speakable(raw)
        if clause and fragment and clause[-1].isalnum():
            clause += ","  # a clause that goes on: level melody, not a full stop's fall
        if clause:
            out.append(clause)
            self._emitted += 1

    def _boundary(self, text: str, final: bool) -> int | None:
        """End index (exclusive) of the first complete clause in `text`, or None while it is still open."""
        first = self._emitted == 0
        min_words = self.first_min_words if first else self.min_words
        max_words = self.first_max_words if first else self.max_words
        fragment = self.first_fragment_words if first else 0
        self._fragment_cut = False
        depth = 0
        words = 0
        in_word = False
        word_start = prev_start = prev_end = 0
        n = len(text)
        for i, ch in enumerate(text):
            if ch.isspace():
                if in_word and fragment and words > fragment and not depth:
                    if self._opens_phrase(text[word_start:i]) and self._fragment_end(text[prev_start:prev_end]):
                        self._fragment_cut = True
                        return prev_end
                if in_word:
                    prev_start, prev_end = word_start, i
                in_word = False
            elif not in_word:
                in_word = True
                word_start = i
                words += 1
                if words > max_words:
                    return i  # the word budget: cut before the word that overflows it
            if ch in "([":
                depth += 1
            elif ch in ")]" and depth:
                depth -= 1
            if i + 1 >= n:
                break  # the next character decides; it has not arrived
            nxt = text[i + 1]
            if ch == "\n" and words and (nxt == "\n" or _is_line_item(text, i + 1) or _is_heading(text, i)):
                return i + 1
            if depth:
                continue
            if ch in _SENTENCE_END:
                end = _after_closers(text, i + 1)
                if end < n and text[end].isspace() and not (ch == "." and self._not_an_end(text, i)):
                    return end
                if end >= n and not final:
                    return None
            elif ch in _CLAUSE_MARKS or ch in "\u2014\u2013" or ch == "-" and i and text[i - 1] == " ":
                if words >= min_words and (nxt.isspace() or ch == "\u2014"):
                    return _after_closers(text, i + 1)
        return None

    @staticmethod
    def _opens_phrase(word: str) -> bool:
        """Whether a first fragment may end just before `word` (complete: whitespace came after it)."""
        return word.strip("\"'").lower() in _PHRASE_OPENERS

    @staticmethod
    def _fragment_end(word: str) -> bool:
        """Whether a first fragment may end on `word` (complete: whitespace came after it)."""
        bare = word.strip("\"'()[]{}*_").lower()
        if not bare or not bare[-1].isalnum():
            return False  # "3.", "Dr.", "U.S.": the sentence rules decide those
        # A number may end one: the whitespace after it says it is whole ("15 plus 27 | equals 42"), and the
        # opener that must follow keeps a counted noun with it ("seven | days" never splits: "days" opens nothing).
        return bare not in _NO_FRAGMENT_END

    @staticmethod
    def _not_an_end(text: str, dot: int) -> bool:
        start = dot
        while start > 0 and not text[start - 1].isspace():
            start -= 1
        token = text[start:dot].lstrip("\"'([{*_")
        if not token:
            return False
        if token.lower() in _ABBREVIATIONS or _DOTTED.search(token):
            return True
        if len(token) == 1 and token.isupper():
            return True  # an initial: "J. R. R. Tolkien"
        if token.isdigit() and len(token) <= 3:
            line_start = text.rfind("\n", 0, start) + 1
            return not text[line_start:start].strip()  # "1. " opening a list item
        return False


def _after_closers(text: str, i: int) -> int:
    while i < len(text) and text[i] in _CLOSERS:
        i += 1
    return i


def _is_heading(text: str, newline: int) -> bool:
    line_start = text.rfind("\n", 0, newline) + 1
    return text[line_start:newline].lstrip().startswith("#")


def _is_line_item(text: str, i: int) -> bool:
    """A new line that starts a list item or heading ends the previous line's clause."""
    return re.match(r"[ \t]*(?:[-*+\u2022][ \t]|\d{1,3}[.)][ \t]|#{1,6}[ \t])", text[i : i + 8]) is not None
