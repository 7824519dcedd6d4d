"""The bundle manifest: the one contract between model_export (writer) and the engine (reader).

Everything the engine needs to know about a model is here, so that nothing in voiced/ is special-cased for a
model family, a test model or the default: two bundles that differ only in their manifests run the same code.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from voiced.audio import RATE

FORMAT_VERSION: Final = 1


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileEntry(_M):
    sha256: str
    bytes: int


class LayerKV(_M):
    """KV geometry of one decoder layer; Gemma 4 mixes two kinds (sliding: 8x256, full: 1x512)."""

    kind: Literal["full", "sliding"] = "full"
    kv_heads: int
    head_dim: int
    window: int | None = Field(None, description="sliding window length in tokens; None for full attention")
    shares_kv_with: int | None = Field(None, description="layer whose KV this one reads (KV-sharing layers have no cache of their own)")


class DecoderSpec(_M):
    """One ONNX graph, named like onnxruntime-genai's builder output so both routes meet the same engine.

    inputs: `input_ids` or `inputs_embeds` [1, S]; `attention_mask` [1, past+S] int64; `position_ids` [1, S]
    int64 when the graph has it; `past_key_values.{i}.key|value` [1, kv_heads, past, head_dim]; optionally
    `logits_to_keep` [1] int64 (k: the LM head runs on the last k positions; model_export/logits_keep.py).
    outputs: `logits` [1, S or k, vocab]; `present.{i}.key|value`; optionally `hidden_states` [1, S, hidden].
    """

    file: str = "decoder.onnx"
    input: Literal["input_ids", "inputs_embeds"] = "input_ids"
    hidden_size: int
    vocab_size: int
    max_context: int
    layers: list[LayerKV]
    kv_dtype: Literal["float32", "float16"] = "float32"
    hidden_output: str | None = Field(None, description="graph output name of the last hidden state, if exported")
    quantization: Literal["int4", "int8", "fp16", "fp32"] = "int4"
    logit_softcap: float | None = Field(None, description="applied inside the graph; recorded for drafters")
    past_present_share_buffer: bool = Field(
        False,
        description="full-attention layers update their KV in place when past and present are bound to one "
        "max_context buffer (GroupQueryAttention graphs of onnxruntime-genai's builder); False = present is "
        "concat(past, new)",
    )


class EmbeddingSpec(_M):
    """The token embedding table, for graphs that take inputs_embeds.

    dtype int4: `file` is the decoder's data file and the rows are the tied output head's MatMulNBits weight
    (packed [vocab, hidden/2] at `offset`, float32 scales [vocab, hidden/block_size] at `scale_offset`): one
    matrix serves both ends of the model (voiced.model.embeddings)."""

    file: str = "embed_tokens.npy"
    dtype: Literal["float32", "float16", "int8", "int4"] = "float16"
    scale_file: str | None = Field(None, description="per-row scales when dtype is int8")
    multiplier: float = Field(1.0, description="Gemma scales embeddings by sqrt(hidden); baked here, not in code")
    offset: int = Field(0, ge=0, description="int4: byte offset of the packed rows in `file`")
    scale_offset: int = Field(0, ge=0, description="int4: byte offset of the float32 block scales in `file`")
    block_size: int | None = Field(None, description="int4: weights per scale")


class AsrAudio(_M):
    """Cascade: a speech recogniser turns the segment into text tokens for the same engine."""

    kind: Literal["asr"] = "asr"
    engine: Literal["faster-whisper"] = "faster-whisper"
    dir: str = "asr"
    language: str | None = "en"


class ProjectorAudio(_M):
    """Encoder-free: raw 16 kHz frames -> RMSNorm + Linear -> spliced between boa and eoa."""

    kind: Literal["projector"] = "projector"
    file: str = "audio_projector.onnx"
    frame_samples: int = 640
    sample_rate: int = RATE
    max_frames: int = 750
    boa_id: int
    eoa_id: int
    audio_token_id: int


class TokenizerSpec(_M):
    file: str = "tokenizer.json"
    chat_template_file: str = "chat_template.jinja"
    bos_token: str | None = None
    eos_token: str | None = None
    stop_ids: list[int]
    special_tokens: dict[str, int] = Field(default_factory=dict)


class DrafterSpec(_M):
    file: str = "drafter.onnx"
    kind: Literal["mtp"] = "mtp"
    reads_layers: list[int] = Field(description="target layers whose KV the drafter attends to")
    hidden_size: int
    draft_vocab: int | None = Field(None, description="reduced output vocabulary size, if any")
    vocab_map_file: str | None = None
    acceptance: list[float] = Field(default_factory=list, description="measured per-position acceptance")
    auto: bool = Field(True, description="model.drafter=auto uses it; False where it measured slower than plain decoding")
    speedup: float | None = Field(None, description="measured decode tok/s ratio with/without it (benchmarks/decode.py)")
    source: dict[str, str] = Field(default_factory=dict, description="where it came from (checkpoint, training run)")


class Manifest(_M):
    format: Literal[1] = FORMAT_VERSION
    name: str
    family: str = Field(description="informational only: the engine never branches on it")
    description: str = ""
    source: dict[str, str] = Field(default_factory=dict, description="where the weights came from (packages, versions, checkpoint)")
    decoder: DecoderSpec
    embeddings: EmbeddingSpec | None = None
    audio: Annotated[AsrAudio | ProjectorAudio, Field(discriminator="kind")] | None = None
    tokenizer: TokenizerSpec
    drafter: DrafterSpec | None = None
    system_prompt: str | None = Field(None, description="a prompt suited to this model; config overrides it")
    files: dict[str, FileEntry] = Field(default_factory=dict, description="every file of the bundle, relative path -> hash")
