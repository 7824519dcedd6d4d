"""A conversation per source: who asked decides which memory the model answers from.

Sources and their conversation keys (the pipeline builds them; see `key_of`):

- the local microphone: "local";
- a WebSocket session: its session id, or `ws:NAME` when its hello names a conversation (sessions that name the
  same one share it, e.g. the browser page and the CLI continuing one talk);
- a Wyoming peer: `wyoming:ID` from the `conversation_id` Home Assistant puts in a transcript's context (it keeps
  one per chat session), else its `satellite_id` / `device_id`, else the connection; a satellite's spoken turns
  (run-pipeline) use the connection.

Namespaces keep one kind of source from joining another's conversation by picking a colliding name.

One engine serves every conversation: its KV cache holds whichever was answered last, and a turn in another
conversation costs a prefill of that conversation's history (the system prompt, shared by all, stays cached).
That is why conversations are bounded (least recently used dropped first) and forgotten after an idle time:
memory grows with their number, and an old one would only be prefilled again. Pure: `now` is a parameter.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping

from voiced.memory import Memory

LOCAL = "local"


def key_of(source: str, named: str | None = None) -> str:
    """The conversation of `source`; `named` is the conversation its client asked for (already namespaced)."""
    return named if named else source


def wyoming_key(context: Mapping[str, object] | None, connection: str) -> str:
    """Home Assistant's conversation, from a transcript's context (conversation.py sends conversation_id, and
    device_id / satellite_id when it knows them); the connection when the peer sends none."""
    for field in ("conversation_id", "satellite_id", "device_id"):
        value = (context or {}).get(field)
        if isinstance(value, str) and value.strip():
            return f"wyoming:{value.strip()[:128]}"
    return connection


class ConversationStore:
    """Memories by conversation key: at most `max_conversations`, each forgotten `idle_s` after its last use."""

    def __init__(self, make: Callable[[], Memory], max_conversations: int, idle_s: float) -> None:
        if max_conversations < 1:
            raise ValueError("max_conversations must be at least 1 (model.conversations)")
        self._make = make
        self.max_conversations = max_conversations
        self.idle_s = idle_s
        self._memories: OrderedDict[str, tuple[Memory, float]] = OrderedDict()  # least recently used first
        self.evicted = 0  # dropped for room or idleness (a benchmark and the tests read it)

    def get(self, key: str, now: float) -> Memory:
        """The memory of `key` (a new one when unknown or forgotten); marks it used at `now`."""
        self.expire(now)
        entry = self._memories.get(key)
        memory = entry[0] if entry is not None else self._make()
        self._memories[key] = (memory, now)  # never absent meanwhile: `peek` from another thread always finds it
        self._memories.move_to_end(key)
        while len(self._memories) > self.max_conversations:
            self._memories.popitem(last=False)
            self.evicted += 1
        return memory

    def peek(self, key: str) -> Memory | None:
        """The memory of `key` if it is kept, without marking it used."""
        entry = self._memories.get(key)
        return entry[0] if entry is not None else None

    def expire(self, now: float) -> list[str]:
        """Forget every conversation idle for longer than `idle_s`; returns their keys."""
        gone = [k for k, (_, used) in self._memories.items() if now - used > self.idle_s]
        for k in gone:
            del self._memories[k]
        self.evicted += len(gone)
        return gone

    def forget(self, key: str) -> None:
        self._memories.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._memories

    def __len__(self) -> int:
        return len(self._memories)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._memories))
