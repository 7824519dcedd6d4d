"""The byte-level BPE recipe shared by the tiny test checkpoints (model_export.tiny, model_export.tiny_gemma4).

Why one recipe: both tiny models need a real tokenizer (real merges, real special tokens, any text encodes) that
trains in milliseconds from a few sentences. Keeping the recipe here keeps the two from drifting apart.

Why nothing here may change its output: the tiny Qwen2 bundles are cached on versions (EXPORTER_VERSION,
transformers, onnxruntime-genai), not on this file's text, so a change that altered a single merge would leave
stale cached bundles that no longer match what a fresh build produces. Change the output only together with a
bump of voiced.model.catalog.EXPORTER_VERSION. (The tiny Gemma 4 cache hashes this file, so it rebuilds anyway.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the export extra (tokenizers, transformers) is imported only when a tokenizer is built
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

# The corpus is seen this many times: the cached tiny bundles were built so; a different count changes merges.
CORPUS_REPEATS = 4


def train_byte_bpe(corpus: Sequence[str], special_tokens: Sequence[str], vocab_size: int, unk_token: str | None = None) -> Tokenizer:
    """Train a byte-level BPE on `corpus`; `special_tokens` take the first ids, in order (models rely on it)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=unk_token))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus) * CORPUS_REPEATS, trainer=trainer)
    return tok


def as_hf_tokenizer(tok: Tokenizer, chat_template: str, **special_tokens: object) -> PreTrainedTokenizerFast:
    """Wrap `tok` as the transformers tokenizer a checkpoint folder carries, with its chat template set.

    `special_tokens` are PreTrainedTokenizerFast's own keywords (eos_token=..., pad_token=..., ...), passed
    through unchanged, so each model keeps the exact tokenizer_config.json it wrote before this module existed.
    """
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **special_tokens)
    fast.chat_template = chat_template
    return fast
