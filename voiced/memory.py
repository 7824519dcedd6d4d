"""Conversation memory: what was said, in order, including replies cut short by the user.

Kept as plain messages so the model's own chat template renders it; the engine's KV cache then keeps the
rendered prefix between turns, so remembered turns cost no prefill on the next turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Exchange:
    user: str
    assistant: str
    interrupted: bool = False


@dataclass
class Memory:
    system_prompt: str
    max_turns: int = 8
    exchanges: list[Exchange] = field(default_factory=list)

    def messages(self, user: str | None = None) -> list[dict[str, str]]:
        """System prompt, the remembered turns, and (if given) the new user message."""
        out = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        for ex in self.exchanges:
            out.append({"role": "user", "content": ex.user})
            # An interrupted reply stays as far as it was heard, marked so the model sees it was cut off.
            out.append({"role": "assistant", "content": ex.assistant + (" ..." if ex.interrupted else "")})
        if user is not None:
            out.append({"role": "user", "content": user})
        return out

    def add(self, user: str, assistant: str, interrupted: bool = False) -> None:
        self.exchanges.append(Exchange(user, assistant.strip(), interrupted))
        if self.max_turns >= 0 and len(self.exchanges) > self.max_turns:
            del self.exchanges[: len(self.exchanges) - self.max_turns]

    def drop_oldest(self, kept: int) -> None:
        """Keep only the last `kept` exchanges (the prompt's token budget decided)."""
        if kept < len(self.exchanges):
            del self.exchanges[: len(self.exchanges) - kept]

    def forget(self) -> None:
        self.exchanges.clear()
