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

import time
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


class Memories:
    """The conversations a brain answers from: one selected (`current`, the one its cache or request holds), the
    others kept by key in a ConversationStore, all with one system prompt. The embedded Assistant and the remote
    brain both keep theirs here, so a conversation means the same whichever model answers."""

    def __init__(self, system_prompt: str, max_turns: int, max_conversations: int, idle_s: float, now: float) -> None:
        self._system_prompt = system_prompt
        self.store = ConversationStore(lambda: Memory(system_prompt=self._system_prompt, max_turns=max_turns), max_conversations, idle_s)
        self.key = LOCAL
        self.current = self.store.get(LOCAL, now)

    @property
    def system_prompt(self) -> str:
        return self._system_prompt

    @system_prompt.setter
    def system_prompt(self, text: str) -> None:
        """Every conversation's system prompt, those kept now and those made later."""
        self._system_prompt = text
        for key in self.store:
            memory = self.store.peek(key)
            if memory is not None:
                memory.system_prompt = text

    def select(self, key: str, now: float) -> Memory:
        self.current = self.store.get(key, now)
        self.key = key
        return self.current

    def of(self, conversation: str | None) -> Memory | None:
        """`conversation`'s memory (the current one for None); None when it was forgotten (idle, evicted, its
        client gone) while a reply to it was being spoken."""
        return self.current if conversation is None else self.store.peek(conversation)

    def remember(self, user: str, reply: str, interrupted: bool, conversation: str | None = None) -> None:
        memory = self.of(conversation)
        if memory is not None:
            memory.add(user, reply, interrupted)

    def forget(self, conversation: str | None = None) -> None:
        memory = self.of(conversation)
        if memory is not None:
            memory.forget()

    def drop(self, conversation: str) -> None:
        """Forget `conversation` entirely: nobody can reach it again (its client left)."""
        self.store.forget(conversation)

    def forget_all(self, now: float) -> None:
        """Every conversation's memory; the local microphone's (new, empty) becomes the current one."""
        for key in self.store:
            self.store.forget(key)
        self.select(LOCAL, now)


class HasConversations:
    """What a brain offers the pipeline about its conversations, kept in `self.memories` (a Memories)."""

    memories: Memories

    @property
    def system_prompt(self) -> str:
        return self.memories.system_prompt

    @system_prompt.setter
    def system_prompt(self, text: str) -> None:
        self.memories.system_prompt = text

    @property
    def memory(self) -> Memory:
        """The conversation answered last (the one the engine's cache holds)."""
        return self.memories.current

    @property
    def conversations(self) -> ConversationStore:
        return self.memories.store

    def select(self, key: str, now: float | None = None) -> None:
        """Answer from conversation `key` from now on (model thread)."""
        self.memories.select(key, time.monotonic() if now is None else now)

    def remember(self, user: str, reply: str, interrupted: bool, conversation: str | None = None) -> None:
        """Into `conversation`'s memory (the current one when None), named by the caller: by the time a reply has
        been spoken, another turn may have selected another conversation."""
        self.memories.remember(user, reply, interrupted, conversation)

    def forget(self, conversation: str | None = None) -> None:
        self.memories.forget(conversation)

    def drop_conversation(self, conversation: str) -> None:
        self.memories.drop(conversation)

    def forget_all(self) -> None:
        self.memories.forget_all(time.monotonic())
