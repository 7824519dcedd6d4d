"""Speculative decoding is exact: with any drafter, greedy output equals plain greedy output token for token.

On the tiny Gemma 4 bundle (5 sliding layers, window 16, + 1 full) so replies cross the window, and with audio in
the prompt; on the tiny Qwen2 bundle for the shared-buffer KV path. The drafters are model-free (tests/support/
drafter.py): a random one (nearly every round rolls back) and a scripted one that knows the answer with some noise
(long accepted runs, rollbacks at every position).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from tests.support.drafter import RandomDrafter, ScriptedDrafter, varied_gemma4_bundle
from tests.support.engine import tiny as qwen_tiny
from tests.support.speech import espeak
from voiced.model.audio_in import AudioProjector
from voiced.model.bundle import load_bundle
from voiced.model.engine import Engine, GenerationConfig
from voiced.model.speculative import Draft, KPolicy, target_probs, verify

GREEDY = GenerationConfig(max_new_tokens=60, stop_ids=[])


@functools.cache
def g4():
    return load_bundle(varied_gemma4_bundle())


@functools.cache
def plain_engine():
    return Engine(g4(), threads=1, prefill_chunk=7)


def g4_engine(drafter, draft_tokens=0, **kw):
    return Engine(g4(), threads=1, prefill_chunk=7, drafter=drafter, draft_tokens=draft_tokens, **kw)


def text_prompt() -> list[int]:
    tok = g4().tokenizer
    return (
        [2, 5]
        + tok.encode("user\nWhat is the weather like today?", add_special_tokens=False).ids
        + [6, 10, 5]
        + tok.encode("model\n", add_special_tokens=False).ids
    )


@functools.cache
def speech_embeds() -> tuple[np.ndarray, int]:
    m = g4().manifest
    return AudioProjector(g4().dir, m.audio, threads=1).project(espeak("set a timer for ten minutes"))


def run(engine: Engine, audio: bool = False, cfg: GenerationConfig = GREEDY):
    conv = engine.conversation()
    ids = text_prompt()
    if audio:
        a = g4().manifest.audio
        embeds, n = speech_embeds()
        conv.sync(ids[:2] + [a.boa_id])
        conv.append_embeds(embeds, [a.audio_token_id] * n)
        conv.sync(conv.tokens + [a.eoa_id] + ids[2:])
        ids = conv.tokens
    else:
        conv.sync(ids)
    out = [t for d in conv.generate(cfg) for t in d.token_ids]
    return conv, ids, out


@functools.cache
def reference(audio: bool = False) -> tuple[list[int], list[int]]:
    conv, ids, out = run(plain_engine(), audio)
    return ids, out


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6])
def test_random_drafter_gives_plain_greedy_output_for_every_k(k):
    ids, ref = reference()
    assert len(set(ref)) > len(ref) // 3  # a reply that varies, so a wrong cache would show
    assert len(ids) + len(ref) > 3 * 16  # the reply runs well past the sliding window
    drafter = RandomDrafter(g4().manifest.decoder.vocab_size, seed=k, reads_layers=[4, 5])
    conv, _, got = run(g4_engine(drafter, draft_tokens=k))
    assert got == ref
    assert conv.tokens == ids + ref
    s = conv.last_stats
    assert drafter.calls > 0 and s["drafted"] > 0 and s["decode_tokens"] == len(ref)
    assert_cache_equals_fresh(conv)


def assert_cache_equals_fresh(conv) -> None:
    """After many rollbacks every layer's KV equals that of one plain prefill of the same tokens."""
    fresh = plain_engine().conversation()
    fresh.sync(conv.tokens[:-1])
    assert conv._kv.length == fresh._kv.length == len(conv.tokens) - 1
    for i in range(len(g4().manifest.decoder.layers)):
        for a, b in zip(conv._kv.arrays(i), fresh._kv.arrays(i)):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("noise", [0.0, 0.25])
def test_scripted_drafter_accepts_and_rolls_back_exactly(k, noise):
    ids, ref = reference()
    drafter = ScriptedDrafter(ids + ref, g4().manifest.decoder.vocab_size, noise=noise, seed=k)
    conv, _, got = run(g4_engine(drafter, draft_tokens=k))
    assert got == ref and conv.tokens == ids + ref
    s = conv.last_stats
    if noise == 0.0:  # a perfect drafter: every round but the budget-capped last ones accepts all k
        assert s["accepted"] == s["drafted"] and s["rounds"] <= -(-(len(ref) - 1) // (k + 1)) + 1
    else:
        assert 0 < s["accepted"] < s["drafted"]
    assert_cache_equals_fresh(conv)
    # the next turn keeps the whole reply: the cache is exactly what plain decoding leaves
    assert conv.sync(ids + ref) == 1
    np.testing.assert_allclose(conv.logits, _logits_after(ids + ref), atol=1e-4)


def _logits_after(ids: list[int]) -> np.ndarray:
    c = plain_engine().conversation()
    c.sync(ids)
    return c.logits


@pytest.mark.parametrize("k", [1, 3, 6])
def test_audio_prompt_gives_plain_greedy_output(k):
    ids, ref = reference(audio=True)
    assert len(ids) > 20 and 8 in ids  # audio placeholders are in the prompt
    assert ref != reference()[1] and len(set(ref)) > len(ref) // 3  # the audio changes the reply
    drafter = ScriptedDrafter(ids + ref, g4().manifest.decoder.vocab_size, noise=0.3, seed=k)
    conv, _, got = run(g4_engine(drafter, draft_tokens=k), audio=True)
    assert got == ref


class SteadyCosts(KPolicy):
    """Adaptive k fed fixed costs (a verify of k+1 positions = 10 + 3k ms, a draft step 0.5 ms) instead of the
    measured ones, so what it learns depends on acceptance only and the test does not depend on machine load."""

    def observe(self, k, accepted, draft_ms, verify_ms):
        super().observe(k, accepted, 0.5 * k, 10.0 + 3.0 * k)


def run_adaptive(drafter):
    conv = g4_engine(drafter).conversation()
    conv._policy = SteadyCosts(k_max=8)
    conv.sync(text_prompt())
    return conv, [t for d in conv.generate(GREEDY) for t in d.token_ids]


def test_adaptive_k_is_exact_and_learns():
    ids, ref = reference()
    conv, got = run_adaptive(ScriptedDrafter(ids + ref, g4().manifest.decoder.vocab_size, noise=0.0))
    assert got == ref
    assert conv.last_stats["rounds"] < len(ref) / 2  # a right drafter: k grows, far fewer decoder calls
    conv, got = run_adaptive(RandomDrafter(g4().manifest.decoder.vocab_size, seed=3))
    assert got == ref
    assert conv.last_stats["drafted"] < len(ref) / 2  # a wrong drafter: k falls to 0 apart from probes


def test_stop_token_inside_an_accepted_run_ends_the_reply_there():
    ids, ref = reference()
    stop_at = next(i for i in range(5, len(ref)) if ref[i] not in ref[:i])
    cfg = GenerationConfig(max_new_tokens=60, stop_ids=[ref[stop_at]])
    conv, _, plain = run(plain_engine(), cfg=cfg)
    conv2, _, got = run(g4_engine(ScriptedDrafter(ids + ref, 384), draft_tokens=6), cfg=cfg)
    assert got == plain == ref[:stop_at]
    assert conv2.tokens == conv.tokens == ids + ref[: stop_at + 1]
    assert conv2.last_stats["finish"] == "stop"
    assert conv2.sync(conv2.tokens) == 1  # the stop token is pending, as after plain decoding


@pytest.mark.parametrize("share_buffer", [False, True], ids=["concat", "shared"])
def test_qwen_bundle_shared_and_concat_kv(share_buffer):
    b = qwen_tiny()
    ids = b.tokenizer.encode("<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n").ids
    plain = Engine(b, threads=1, share_buffer=share_buffer).conversation()
    plain.sync(ids)
    ref = [t for d in plain.generate(GREEDY) for t in d.token_ids]
    for k in (2, 5):
        conv = Engine(
            b,
            threads=1,
            share_buffer=share_buffer,
            drafter=ScriptedDrafter(ids + ref, b.manifest.decoder.vocab_size, 0.3, k),
            draft_tokens=k,
        ).conversation()
        conv.sync(ids)
        assert [t for d in conv.generate(GREEDY) for t in d.token_ids] == ref


def test_drafter_off_and_missing():
    assert Engine(g4(), threads=1, drafter="auto").drafter is None  # the tiny bundle has none
    with pytest.raises(ValueError, match="model.drafter"):
        Engine(g4(), threads=1, drafter="on")


@pytest.mark.parametrize("top_p", [1.0, 0.8])
@pytest.mark.parametrize("with_q", [False, True])
def test_rejection_sampling_keeps_the_target_distribution(top_p, with_q):
    """First emitted token of a round (accepted draft or resample) is distributed as the target's p."""
    rng = np.random.default_rng(0)
    v = 6
    logits = rng.normal(size=(3, v)) * 1.5
    cfg = GenerationConfig(temperature=0.9, top_p=top_p)
    p = target_probs(logits[0], cfg)
    q = rng.dirichlet(np.ones(v))
    n = 20000
    counts = np.zeros(v)
    for _ in range(n):
        d = int(rng.choice(v, p=q)) if with_q else 2  # without q: a deterministic (greedy) drafter's guess
        draft = Draft([d, 0], [q, np.full(v, 1 / v)] if with_q else None)
        m, nxt = verify(logits, draft, cfg, rng)
        counts[d if m >= 1 else nxt] += 1
    np.testing.assert_allclose(counts / n, p, atol=0.015)
    assert counts.sum() == n


def test_k_policy_fixed_and_adaptive():
    assert KPolicy(fixed=4).next_k() == 4
    pol = KPolicy(k_max=8)
    for _ in range(50):
        pol.observe(pol.next_k() or 1, 0, draft_ms=5.0, verify_ms=10.0)
    assert pol.next_k() == 0 or pol.rounds % pol.probe_every == 0
    good = KPolicy(k_max=8)
    for _ in range(50):
        k = good.next_k()
        good.observe(k, k, draft_ms=0.1 * k, verify_ms=10.0)
    assert good.next_k() >= 6
    assert good.per_position()[0] == 1.0
