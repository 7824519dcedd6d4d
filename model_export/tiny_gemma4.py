"""A tiny random-weight Gemma4UnifiedForConditionalGeneration checkpoint, for tests and benchmarks.

Same classes as the 12B (transformers' gemma4_unified), same layer pattern (5 sliding + 1 full), k_eq_v full
layers with their own head size and KV head count, proportional RoPE on full layers, final softcap; only the
sizes shrink. The tokenizer is a small byte-level BPE trained here on a few sentences, carrying the Gemma 4
special tokens (turn markers, audio/image markers) under their Gemma 4 spellings, with ids of its own; the
config's token ids point at them. Weights are redrawn with larger spreads than transformers' init (and random
norm gains / layer scalars) so that a wrong norm, scalar or mask changes the logits visibly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from .tiny_tokenizer import as_hf_tokenizer, train_byte_bpe

if TYPE_CHECKING:
    from tokenizers import Tokenizer

GEMMA4_SPECIALS = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<mask>",
    "<|turn>",
    "<turn|>",
    "<|audio>",
    "<|audio|>",
    "<audio|>",
    "<|image>",
    "<|image|>",
    "<image|>",
    "<|video|>",
    "<|channel>",
    "<channel|>",
    "<|tool_response>",
]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<|turn>' + role + '\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'audio' -%}{{ '<|audio|>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<turn|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|turn>model\n' }}{%- endif -%}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the weather like today? It is sunny and warm.",
    "Set a timer for ten minutes, please.",
    "You are a voice assistant. Answer in one or two short spoken sentences.",
    "Hello there! How can I help you this morning?",
    "Play some music in the kitchen and turn the lights down.",
]


def build_tokenizer(vocab_size: int = 384) -> Tokenizer:
    """A byte-level BPE with Gemma 4's special tokens first (ids 0..16): pad=0, eos=1, bos=2 as in Gemma."""
    return train_byte_bpe(_CORPUS, GEMMA4_SPECIALS, vocab_size, unk_token="<unk>")


def tiny_text_config(sliding_window: int = 16, num_kv_shared_layers: int = 0, num_layers: int = 6) -> dict:
    return dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        global_head_dim=32,
        num_global_key_value_heads=1,
        attention_k_eq_v=True,
        sliding_window=sliding_window,
        final_logit_softcapping=30.0,
        max_position_embeddings=4096,
        num_kv_shared_layers=num_kv_shared_layers,
        pad_token_id=0,
        eos_token_id=[1, 6],
        bos_token_id=2,
    )


def build_tiny_checkpoint(
    out_dir: Path, seed: int = 0, sliding_window: int = 16, num_kv_shared_layers: int = 0, num_layers: int = 6
) -> Path:
    """Write a loadable checkpoint folder (config, safetensors, tokenizer, chat template). A few hundred KB."""
    import torch
    from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    ids = {t: tok.token_to_id(t) for t in GEMMA4_SPECIALS}
    text = tiny_text_config(sliding_window, num_kv_shared_layers, num_layers)
    text["vocab_size"] = tok.get_vocab_size()
    cfg = Gemma4UnifiedConfig(
        text_config=text,
        audio_config={},
        vision_config=None,
        boa_token_id=ids["<|audio>"],
        audio_token_id=ids["<|audio|>"],
        eoa_token_index=ids["<audio|>"],
        boi_token_id=ids["<|image>"],
        image_token_id=ids["<|image|>"],
        eoi_token_id=ids["<image|>"],
        video_token_id=ids["<|video|>"],
    )
    torch.manual_seed(seed)
    model = Gemma4UnifiedForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif p.ndim == 2:
                p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5 * (1.0 if "embed_tokens" not in name else 3.0))
        for layer in model.model.language_model.layers:
            layer.layer_scalar.copy_(0.5 + torch.rand_like(layer.layer_scalar))
    model.save_pretrained(out_dir)

    fast = as_hf_tokenizer(
        tok,
        CHAT_TEMPLATE,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={
            "audio_token": "<|audio|>",
            "boa_token": "<|audio>",
            "eoa_token": "<audio|>",
            "image_token": "<|image|>",
            "boi_token": "<|image>",
            "eoi_token": "<image|>",
        },
    )
    fast.save_pretrained(out_dir)
    (out_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (out_dir / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 2, "eos_token_id": [ids["<eos>"], ids["<turn|>"]], "pad_token_id": 0})
    )
    return out_dir
