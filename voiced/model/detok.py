"""Streaming detokenisation: token ids in, text deltas out, never half a UTF-8 character.

Why decode a short window twice instead of decoding each token alone: byte-level BPE splits one character over
several tokens (each decodes to U+FFFD alone), and SentencePiece decoders strip or merge spaces at the start of a
sequence. Decoding the window [prefix, now) and [prefix, read) with the same start makes both effects cancel, and a
trailing U+FFFD means "wait for the next token" (the scheme of text-generation-inference).
"""

from __future__ import annotations

from tokenizers import Tokenizer

_REPLACEMENT = "\ufffd"


class StreamDetokenizer:
    def __init__(self, tokenizer: Tokenizer, context: list[int] | None = None, skip_special_tokens: bool = True):
        """`context`: tokens already in the text before the first pushed one (a few of them are enough), so that
        the first delta gets the leading space a tokenizer only shows mid-sequence."""
        self._tok = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = list(context or [])[-4:]
        self._prefix = 0
        self._read = len(self._ids)

    def _decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=self._skip)

    def push(self, token_id: int) -> str:
        """The text this token completes ('' while a character is still incomplete)."""
        self._ids.append(int(token_id))
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        new_text = self._decode(self._ids[self._prefix :])
        if len(new_text) > len(prefix_text) and not new_text.endswith(_REPLACEMENT):
            delta = new_text[len(prefix_text) :]
            self._prefix, self._read = self._read, len(self._ids)
            return delta
        return ""

    def flush(self) -> str:
        """Whatever is still held back at the end of a reply (an incomplete character stays U+FFFD)."""
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        new_text = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return new_text[len(prefix_text) :] if len(new_text) > len(prefix_text) else ""
