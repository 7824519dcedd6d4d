"""Chat prompts: the bundle's own chat template rendered with jinja2, history trimmed to a token budget.

Why the bundle's template and never a hard-coded one: each family frames turns differently (Qwen's
<|im_start|>, Gemma 4's <|turn>), and a wrong frame silently degrades answers. Why render then tokenize the
whole string: special tokens in the template (added tokens) are matched by the tokenizer exactly as the model's
own processor does, and an unchanged history renders to an unchanged token prefix, which Conversation.sync keeps.
"""

from __future__ import annotations

import logging
from datetime import datetime

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from voiced.model.bundle import Bundle, BundleError

log = logging.getLogger(__name__)

# One chat message as the templates read it: {"role": "system" | "user" | "assistant", "content": text}.
Message = dict[str, str]


def _raise(message: str) -> None:
    raise TemplateError(message)


class ChatPrompt:
    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        spec = bundle.manifest.tokenizer
        # the settings transformers renders chat templates with, so the same template gives the same text
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        env.filters["tojson"] = _tojson  # jinja's own escapes HTML
        try:
            self._template = env.from_string(bundle.path(spec.chat_template_file).read_text())
        except (OSError, TemplateError) as e:
            raise BundleError(bundle.dir, f"{spec.chat_template_file} does not load ({e})") from None
        self._specials = {"bos_token": spec.bos_token or "", "eos_token": spec.eos_token or ""}

    def render_text(self, messages: list[Message], add_generation_prompt: bool = True) -> str:
        return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt, **self._specials)

    def render(self, messages: list[Message], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of the rendered conversation (the template writes BOS itself where the family wants it)."""
        text = self.render_text(messages, add_generation_prompt)
        return self.bundle.tokenizer.encode(text, add_special_tokens=False).ids

    def count(self, messages: list[Message], add_generation_prompt: bool = True) -> int:
        return len(self.render(messages, add_generation_prompt))

    def fit(self, messages: list[Message], budget_tokens: int) -> list[Message]:
        """The newest messages that fit `budget_tokens` (generation prompt included): system messages stay, the
        oldest other turns go first, a user turn leaves with the assistant reply that follows it. The last
        message is always kept, even when it alone is over budget (the engine then reports the overflow)."""
        msgs = list(messages)
        n_before = len(msgs)
        tokens = self.count(msgs)
        if tokens <= budget_tokens:
            return msgs
        start_tokens = tokens
        while tokens > budget_tokens:
            droppable = [k for k, m in enumerate(msgs) if m.get("role") != "system"][:-1]
            if not droppable:
                break
            k = droppable[0]
            drop = [k]
            if msgs[k].get("role") == "user" and k + 1 < len(msgs) - 1 and msgs[k + 1].get("role") == "assistant":
                drop.append(k + 1)
            msgs = [m for j, m in enumerate(msgs) if j not in drop]
            tokens = self.count(msgs)
        log.info(
            "prompt: dropped the %d oldest messages (%d -> %d tokens) to fit the budget of %d tokens",
            n_before - len(msgs), start_tokens, tokens, budget_tokens,
        )  # fmt: skip
        return msgs


def _tojson(value: object, indent: int | None = None) -> str:
    import json

    return json.dumps(value, indent=indent, ensure_ascii=False)
