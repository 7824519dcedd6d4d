"""torch modules that trace into the bundle's ONNX graphs (decoder step with explicit KV, audio projector).

Why our own wrapper rather than exporting transformers' forward: transformers hides the KV cache in a `Cache`
object and builds masks in Python from it, which neither exporter can turn into a graph with one named
past/present tensor per layer. The wrapper reuses transformers' own submodules (projections, norms, MLP,
rotary frequencies), so the weights and the numerics stay theirs; only the attention plumbing (KV concat, masks,
GQA) is re-expressed, following modeling_gemma4_unified.py line for line.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LayerGeometry:
    """What the graph (and the manifest) need to know about one decoder layer."""

    kind: str  # "sliding" | "full"
    kv_heads: int
    head_dim: int
    window: int | None
    shares_kv_with: int | None


def layer_geometry(text_config) -> list[LayerGeometry]:
    """Per-layer KV geometry read from the config exactly as the attention module reads it."""
    modes = text_config.kv_sharing_modes
    types = text_config.layer_types
    n = text_config.num_hidden_layers
    first_shared = n - text_config.num_kv_shared_layers
    out: list[LayerGeometry] = []
    for i in range(n):
        per = text_config.per_layer_config[i]
        sliding = types[i] == "sliding_attention"
        shares = None
        if modes[i] == "reuse":
            # transformers reuses the KV of the last non-shared layer of the same type
            shares = max(j for j in range(first_shared) if types[j] == types[i])
        out.append(
            LayerGeometry(
                kind="sliding" if sliding else "full",
                kv_heads=per.num_key_value_heads,
                head_dim=per.head_dim,
                window=text_config.sliding_window if sliding else None,
                shares_kv_with=shares,
            )
        )
    return out


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Gemma4DecoderStep(nn.Module):
    """One prefill chunk or decode step of the Gemma 4 text decoder with explicit per-layer KV.

    forward(inputs_embeds [1,S,H], attention_mask [1,T], position_ids [1,S], *past (key, value per cached layer))
      -> (logits [1,S,V], hidden_states [1,S,H], *present (key, value per cached layer))
    See /tmp/h7_contract.md (and the README of model_export) for the mask rule.
    """

    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        lm = hf_model.model.language_model
        cfg = lm.config
        self.cfg = cfg
        self.layers = lm.layers
        self.norm = lm.norm
        self.lm_head = hf_model.lm_head
        self.geometry = layer_geometry(cfg)
        self.softcap = cfg.final_logit_softcapping
        self.num_heads = cfg.num_attention_heads
        rot = lm.rotary_emb
        # inv_freq / scaling per layer type, taken from transformers' own rotary module (default and proportional
        # RoPE both reduce to cos/sin of position * inv_freq, with zero frequencies for unrotated dims)
        self.rope: dict[str, tuple[torch.Tensor, float]] = {}
        for t in set(cfg.layer_types):
            self.rope[t] = (getattr(rot, f"{t}_inv_freq").detach().clone().float(), float(getattr(rot, f"{t}_attention_scaling")))

    @property
    def cached_layers(self) -> list[int]:
        return [i for i, g in enumerate(self.geometry) if g.shares_kv_with is None]

    def _cos_sin(self, layer_type: str, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq, scaling = self.rope[layer_type]
        freqs = position_ids[..., None].float() * inv_freq  # [1,S,d/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * scaling)[:, :, None, :], (emb.sin() * scaling)[:, :, None, :]  # [1,S,1,d]

    @staticmethod
    def _mask(attention_mask: torch.Tensor, q_len: int, kv_len, window: int | None) -> torch.Tensor:
        """Additive mask [1,1,S,L] from absolute indices: the newest key is the newest token of attention_mask."""
        total = attention_mask.shape[1]
        q_idx = torch.arange(q_len, dtype=torch.int64) + (total - q_len)
        k_idx = torch.arange(kv_len, dtype=torch.int64) + (total - kv_len)
        allowed = k_idx[None, :] <= q_idx[:, None]
        if window is not None:
            allowed = allowed & ((q_idx[:, None] - k_idx[None, :]) < window)
        valid = attention_mask[0, total - kv_len :].to(torch.bool)
        allowed = allowed & valid[None, :]
        zero = torch.zeros((), dtype=torch.float32)
        neg = torch.full((), torch.finfo(torch.float32).min, dtype=torch.float32)
        return torch.where(allowed, zero, neg)[None, None, :, :]

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, *past: torch.Tensor):
        hidden = inputs_embeds
        q_len = inputs_embeds.shape[1]
        cos_sin = {t: self._cos_sin(t, position_ids) for t in self.rope}
        presents: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        past_it = iter(range(0, len(past), 2))
        past_of: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for i in self.cached_layers:
            j = next(past_it)
            past_of[i] = (past[j], past[j + 1])
        for i, layer in enumerate(self.layers):
            geo = self.geometry[i]
            attn = layer.self_attn
            layer_type = self.cfg.layer_types[i]
            cos, sin = cos_sin[layer_type]
            residual = hidden
            x = layer.input_layernorm(hidden)
            q = attn.q_proj(x).view(1, q_len, self.num_heads, geo.head_dim)
            q = attn.q_norm(q)
            q = (q * cos + _rotate_half(q) * sin).transpose(1, 2)
            if geo.shares_kv_with is not None:
                k, v = presents[geo.shares_kv_with]
            else:
                raw_k = attn.k_proj(x).view(1, q_len, geo.kv_heads, geo.head_dim)
                raw_v = attn.v_proj(x).view(1, q_len, geo.kv_heads, geo.head_dim) if attn.v_proj is not None else raw_k
                k = attn.k_norm(raw_k)
                k = (k * cos + _rotate_half(k) * sin).transpose(1, 2)
                v = attn.v_norm(raw_v).transpose(1, 2)
                pk, pv = past_of[i]
                k = torch.cat((pk, k), dim=2)
                v = torch.cat((pv, v), dim=2)
                presents[i] = (k, v)
            kv_len = k.shape[2]
            mask = self._mask(attention_mask, q_len, kv_len, geo.window)
            groups = self.num_heads // geo.kv_heads
            if groups > 1:
                k_rep = k[:, :, None].expand(1, geo.kv_heads, groups, kv_len, geo.head_dim).reshape(1, self.num_heads, kv_len, geo.head_dim)
                v_rep = v[:, :, None].expand(1, geo.kv_heads, groups, kv_len, geo.head_dim).reshape(1, self.num_heads, kv_len, geo.head_dim)
            else:
                k_rep, v_rep = k, v
            scores = torch.matmul(q, k_rep.transpose(2, 3)) * attn.scaling + mask
            probs = torch.softmax(scores, dim=-1)
            out = torch.matmul(probs, v_rep).transpose(1, 2).reshape(1, q_len, self.num_heads * geo.head_dim)
            out = attn.o_proj(out)
            out = layer.post_attention_layernorm(out)
            hidden = residual + out
            residual = hidden
            x = layer.pre_feedforward_layernorm(hidden)
            x = layer.mlp(x)
            x = layer.post_feedforward_layernorm(x)
            hidden = (residual + x) * layer.layer_scalar
        hidden = self.norm(hidden)
        logits = self.lm_head(hidden)
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        flat: list[torch.Tensor] = []
        for i in self.cached_layers:
            flat.extend(presents[i])
        return (logits, hidden, *flat)


class AudioProjector(nn.Module):
    """Raw frames [N, 640] -> transformers' embed_audio (RMSNorm without scale, Linear) -> [N, H]."""

    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        self.embed_audio = hf_model.model.embed_audio

    def forward(self, audio_frames: torch.Tensor) -> torch.Tensor:
        return self.embed_audio(audio_frames)
