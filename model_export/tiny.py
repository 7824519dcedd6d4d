"""A tiny random-weight Qwen2 checkpoint with a real (small) BPE tokenizer.

Why: the engine, the prompt code and the bundle writer must be tested on a graph the real builder produced,
with the same I/O names, KV layout and chat template as the default bundle, but in seconds and without the
400 MB GGUF. Weights are random (seeded), so only plumbing, never answers, can be tested with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .tiny_tokenizer import as_hf_tokenizer, train_byte_bpe

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

# Qwen2.5's own chat template, trimmed of tool calling: the same <|im_start|>role ... <|im_end|> framing, so the
# prompt code exercises the real structure (system default, generation prompt) on the tiny bundle.
QWEN_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] != 'system' %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CORPUS = [
    "What is the capital of France? The capital of France is Paris.",
    "How many days are in a leap year? A leap year has three hundred and sixty six days.",
    "Set a timer for five minutes. Okay, a timer for five minutes starts now.",
    "What is twelve times eleven? Twelve times eleven is one hundred and thirty two.",
    "Hello, how are you today? I am fine, thank you. How can I help?",
    "You are a helpful assistant. Answer in one or two short spoken sentences.",
    "system user assistant the a an of to in is it and or but not yes no please thanks",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 . , ? ! : ; ' \" ( ) - \n",
]


def make_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on a few sentences: real merges, real special tokens, any text encodes."""
    tok = train_byte_bpe(_CORPUS, SPECIAL_TOKENS, vocab_size)
    return as_hf_tokenizer(
        tok,
        QWEN_CHAT_TEMPLATE,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )


def make_tiny_qwen2(
    out_dir: Path,
    *,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    seed: int = 0,
) -> Path:
    """Save a random Qwen2ForCausalLM (GQA, untied head) and its tokenizer into `out_dir`; returns out_dir."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer()
    vocab = len(tokenizer)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=2048,
        max_window_layers=layers,
        tie_word_embeddings=False,
        rope_theta=10000.0,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    config.architectures = ["Qwen2ForCausalLM"]
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval()
    model.generation_config.eos_token_id = eos
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
