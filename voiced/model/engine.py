"""The ONNX Runtime engine: one decoder session, and conversations that each own a KV cache across turns.

Why a conversation rather than `generate(prompt)`: on two cores prefill is the latency, so the system prompt and
history stay in the cache between turns and the user's words are fed while they still speak (`sync`); only what
changed is prefilled. Everything about the model comes from the manifest: a tiny test bundle and the 12B take the
same code path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from voiced.errors import VoicedError
from voiced.model.bundle import Bundle, BundleError
from voiced.model.detok import StreamDetokenizer
from voiced.model.embeddings import EmbeddingTable
from voiced.model.kv import ConcatLayer, KVCache, KVNames, Layer, SharedLayer, SlidingLayer
from voiced.model.sampling import GenerationConfig, Sampler
from voiced.model.speculative import Draft, Drafter, DraftInput, KPolicy, OnnxDrafter, verify

__all__ = ["ContextOverflow", "Conversation", "Delta", "Engine", "GenerationConfig"]

log = logging.getLogger(__name__)

_ORT_FLOAT = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class ContextOverflow(VoicedError, ValueError):
    """More tokens than the decoder's context; the pipeline answers by dropping old turns (ChatPrompt.fit)."""

    def __init__(self, tokens: int, max_context: int):
        self.tokens, self.max_context = tokens, max_context
        super().__init__(
            f"{tokens} tokens do not fit the model's context of {max_context}. Fix: drop old turns first "
            f"(ChatPrompt.fit with a budget below {max_context} minus the reply length), or lower "
            "model.history_tokens"
        )


@dataclass(frozen=True)
class Delta:
    text: str
    token_ids: list[int]


@dataclass
class _Stats:
    prefill_tokens: int = 0
    prefill_ms: float = 0.0
    first_token_ms: float = 0.0
    decode_tokens: int = 0
    decode_ms: float = 0.0
    finish: str = ""
    rounds: int = 0  # decoder calls while decoding (= decode steps without a drafter)
    drafted: int = 0
    accepted: int = 0
    draft_ms: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


class Engine:
    """Loads the decoder of a bundle into one InferenceSession; `conversation()` makes independent KV caches."""

    def __init__(
        self,
        bundle: Bundle,
        threads: int = 0,
        prefill_chunk: int = 128,
        share_buffer: bool | None = None,
        rollback_slack: int = 64,
        drafter: str | Drafter = "auto",
        draft_tokens: int = 0,
        prune_logits: bool = True,
    ):
        """`share_buffer`: None follows the manifest (`decoder.past_present_share_buffer`); False forces the
        concat path (kept for measuring both). `rollback_slack`: rows sliding layers hold beyond their window so
        that a rollback of up to that many tokens needs no replay. `drafter`: "auto" drafts when the bundle has
        a drafter that its manifest marks as a speed-up here, "on" whenever it has one, "off" never; or a
        Drafter object (tests, experiments). `draft_tokens`: fixed k; 0 adapts k to the measured acceptance.
        `prune_logits`: on a graph with a `logits_to_keep` input, a prefill asks for its last position's logits
        only; False asks for every position's, as graphs without that input give (benchmarks/prefill_logits.py
        measures both)."""
        self.bundle = bundle
        m = bundle.manifest
        self.spec = m.decoder
        self.prefill_chunk = max(1, prefill_chunk)
        self.stop_ids = list(m.tokenizer.stop_ids)
        self.max_context = self.spec.max_context
        self.rollback_slack = rollback_slack

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(bundle.path(self.spec.file)), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
            raise BundleError(bundle.dir, f"{self.spec.file} does not load ({str(e).splitlines()[0][:300]})") from None

        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        problems = [f"input {n}" for n in (self.spec.input, "attention_mask") if n not in inputs]
        if "logits" not in outputs:
            problems.append("output logits")
        self.has_position_ids = "position_ids" in inputs
        # graphs from model_export 7 on run the LM head on the last `logits_to_keep` positions only
        # (model_export/logits_keep.py says why); older bundles return every position's logits
        self.has_logits_to_keep = "logits_to_keep" in inputs
        self.prune_logits = prune_logits
        self._embed_dtype = _ORT_FLOAT.get(inputs[self.spec.input].type, np.float32) if self.spec.input in inputs else None
        self._kv_dtype = np.dtype(self.spec.kv_dtype)

        self.kv_names: list[KVNames | None] = []
        for i, layer in enumerate(self.spec.layers):
            if layer.shares_kv_with is not None:
                self.kv_names.append(None)
                continue
            past = tuple(n for n in (f"past_key_values.{i}.key", f"past_key_values.{i}.value") if n in inputs)
            present = tuple(n.replace("past_key_values.", "present.") for n in past)
            if not past:
                problems.append(f"input past_key_values.{i}.key")
            problems += [f"output {n}" for n in present if n not in outputs]
            self.kv_names.append(KVNames(i, past, present))
        if problems:
            raise BundleError(bundle.dir, f"{self.spec.file} does not match manifest.json (missing {', '.join(problems)})")

        wanted = self.spec.past_present_share_buffer if share_buffer is None else share_buffer
        self.share_buffer = bool(wanted)
        self._embeddings = self._load_embeddings() if self.spec.input == "inputs_embeds" else None
        self.drafter = self._open_drafter(drafter, threads)
        self.draft_tokens = min(draft_tokens, rollback_slack)
        self.hidden_output = self.spec.hidden_output if self.spec.hidden_output in outputs else None
        if self.drafter is not None and isinstance(self.drafter, OnnxDrafter) and self.hidden_output is None:
            raise BundleError(bundle.dir, f"{self.spec.file} has no hidden_states output, which its drafter needs")

    def _open_drafter(self, choice: str | Drafter, threads: int) -> Drafter | None:
        if not isinstance(choice, str):
            return choice
        spec = self.bundle.manifest.drafter
        if choice == "off" or spec is None:
            if choice == "on":
                raise ValueError(
                    f"model.drafter is 'on' but bundle {self.bundle.dir.name} has no drafter. Fix: set model.drafter "
                    "to auto or off, or add one (`python -m model_export train-drafter BUNDLE_DIR`)"
                )
            return None
        if choice == "auto" and not spec.auto:
            return None
        return OnnxDrafter(self, spec, threads=threads)

    def _load_embeddings(self) -> EmbeddingTable:
        spec = self.bundle.manifest.embeddings
        if spec is None:
            raise BundleError(self.bundle.dir, "manifest.json has no `embeddings` but the decoder takes inputs_embeds")
        scale_path = self.bundle.path(spec.scale_file) if spec.scale_file else None
        try:
            return EmbeddingTable(spec, self.bundle.path(spec.file), scale_path, self.spec.hidden_size, self.spec.vocab_size)
        except (OSError, ValueError) as e:
            raise BundleError(self.bundle.dir, f"{spec.file} does not load as the embedding table ({e})") from None

    def embed(self, ids: list[int]) -> np.ndarray:
        """Token embeddings [len(ids), hidden] as the decoder wants them (table row x scale x multiplier)."""
        assert self._embeddings is not None, "embed() is for inputs_embeds bundles"
        return self._embeddings.rows(np.asarray(ids, dtype=np.int64)).astype(self._embed_dtype, copy=False)

    def new_cache(self) -> KVCache:
        layers: list[Layer] = []
        for names, spec in zip(self.kv_names, self.spec.layers):
            if names is None:
                continue
            if spec.window is not None:
                layers.append(SlidingLayer(names, spec, self._kv_dtype, self.rollback_slack))
            elif self.share_buffer:
                layers.append(SharedLayer(names, spec, self.max_context, self._kv_dtype))
            else:
                layers.append(ConcatLayer(names, spec, self._kv_dtype))
        return KVCache(layers, self.max_context)

    def conversation(self) -> Conversation:
        return Conversation(self)


class Conversation:
    """One KV cache and the tokens it holds. Not thread-safe: one owner (the pipeline's turn) at a time."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._kv = engine.new_cache()
        self._ids: list[int] = []  # tokens whose KV is in the cache
        self._pending: list[int] = []  # tokens that are ours but not yet run through the graph
        self._embeds: dict[int, np.ndarray] = {}  # position -> embedding row fed instead of the table's
        self._logits: np.ndarray | None = None  # logits after the last cached token
        self._hidden: np.ndarray | None = None  # decoder hidden state of the last cached token (for drafters)
        self._policy: KPolicy | None = None  # k for drafting, learnt across this conversation's turns
        self._ones = np.ones((1, engine.max_context), np.int64)
        self.last_stats: dict[str, object] = _Stats().as_dict()
        # tokens and ms prefilled since the last generate(): that turn's prefill
        self._prefill_tokens, self._prefill_ms = 0, 0.0

    # ----- state -----
    @property
    def tokens(self) -> list[int]:
        return self._ids + self._pending

    @property
    def logits(self) -> np.ndarray | None:
        """Logits for the next token after everything in the cache (None until computed)."""
        return None if self._pending else self._logits

    def truncate(self, n: int) -> None:
        """Forget every token from position n on (revised partial transcript, rejected drafts)."""
        n = max(0, min(n, len(self.tokens)))
        if n >= len(self._ids):
            self._pending = self._pending[: n - len(self._ids)]
        else:
            self._pending = []
            if not self._kv.truncate(n):  # a sliding layer lost rows it would need: replay from the start
                self._pending = self._ids[:n]
                self._ids = []
            else:
                self._ids = self._ids[:n]
            self._logits = self._hidden = None
        for p in [p for p in self._embeds if p >= n]:
            del self._embeds[p]

    def reset_stats(self) -> None:
        """Forget the prefill counted so far (work done ahead of any turn, such as warming up the system prompt)."""
        self._prefill_tokens, self._prefill_ms = 0, 0.0

    def reset(self) -> None:
        self.truncate(0)

    # ----- feeding -----
    def sync(self, ids: list[int], cancel: threading.Event | None = None) -> int:
        """Make the cache hold exactly `ids`: keep the common prefix, drop the rest, prefill what is new."""
        ids = [int(t) for t in ids]
        if len(ids) > self.engine.max_context:
            raise ContextOverflow(len(ids), self.engine.max_context)
        cur = self.tokens
        common = 0
        for a, b in zip(cur, ids):
            if a != b:
                break
            common += 1
        if common == len(ids) and common == len(cur) and self.logits is not None:
            return 0
        if common == len(ids) and common > 0:
            common -= 1  # re-run the last token so its logits are ready for generate()
        self.truncate(common)
        self._pending = self._pending + ids[common:]
        return self._flush(cancel)

    def append_embeds(self, embeds: np.ndarray, ids: list[int], cancel: threading.Event | None = None) -> int:
        """Append positions whose embeddings are given (projected audio frames), `ids` being their placeholders."""
        if self.engine._embeddings is None:
            raise ValueError(f"{self.engine.spec.file} takes input_ids, not inputs_embeds: this bundle has no audio projector path")
        embeds = np.asarray(embeds).reshape(len(ids), self.engine.spec.hidden_size)
        if len(self.tokens) + len(ids) > self.engine.max_context:
            raise ContextOverflow(len(self.tokens) + len(ids), self.engine.max_context)
        start = len(self.tokens)
        for k, row in enumerate(embeds):
            self._embeds[start + k] = row
        self._pending = self._pending + [int(t) for t in ids]
        return self._flush(cancel)

    def _flush(self, cancel: threading.Event | None = None) -> int:
        """Prefill the pending tokens in chunks; returns how many were run."""
        t0 = time.perf_counter()
        done = 0
        chunk = self.engine.prefill_chunk
        while self._pending:
            if cancel is not None and cancel.is_set():
                break
            part = self._pending[:chunk]
            self._logits = self._forward(part)
            self._ids += part
            self._pending = self._pending[len(part) :]
            done += len(part)
        ms = (time.perf_counter() - t0) * 1e3
        self._prefill_tokens += done
        self._prefill_ms += ms
        self.last_stats = _Stats(prefill_tokens=done, prefill_ms=ms).as_dict()
        return done

    def trace(self, ids: list[int], chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Prefill `ids` into an empty cache keeping, for every position, the decoder's argmax and hidden state.

        Why: training a drafter (model_export train-drafter) needs what the runtime graph computes, on the same
        kernels the drafter's guesses are verified with, not a second implementation of the model. The cache
        keeps the tokens, so `kv_arrays` then gives the KV the drafter will read."""
        if self.engine.hidden_output is None:
            raise ValueError(f"{self.engine.spec.file} has no hidden-state output: re-export it with hidden states")
        self.reset()
        ids = [int(t) for t in ids]
        if len(ids) > self.engine.max_context:
            raise ContextOverflow(len(ids), self.engine.max_context)
        top, hidden = [], []
        for i in range(0, len(ids), chunk):
            part = ids[i : i + chunk]
            top.append(np.argmax(self._forward(part, every=True, hidden=True), axis=-1))
            hidden.append(np.array(self._hidden_rows, dtype=np.float32))
            self._ids += part
        return np.concatenate(top).astype(np.int64), np.concatenate(hidden)

    def kv_arrays(self, layer: int) -> list[np.ndarray]:
        """[key, value] of a decoder layer for the cached tokens, each [1, kv_heads, rows, head_dim] (views)."""
        return self._kv.arrays(layer)

    def _forward(self, ids: list[int], every: bool = False, hidden: bool = False) -> np.ndarray:
        """Run the decoder over `ids` at the cache's end; returns the last position's logits (float32), or every
        position's [len(ids), vocab] when `every` (verifying drafts). Keeps the last hidden state for drafters
        (or whenever `hidden`)."""
        eng = self.engine
        start, s = self._kv.length, len(ids)
        total = start + s
        binding = eng.session.io_binding()
        if eng.spec.input == "input_ids":
            binding.bind_cpu_input("input_ids", np.asarray([ids], dtype=np.int64))
        else:
            x = eng.embed(ids)
            for p in range(start, total):
                if p in self._embeds:
                    x[p - start] = self._embeds[p]
            binding.bind_cpu_input("inputs_embeds", np.ascontiguousarray(x[None]))
        binding.bind_cpu_input("attention_mask", self._ones[:, :total])
        if eng.has_position_ids:
            binding.bind_cpu_input("position_ids", np.arange(start, total, dtype=np.int64)[None])
        if eng.has_logits_to_keep:
            keep = s if every or not eng.prune_logits else 1
            binding.bind_cpu_input("logits_to_keep", np.array([keep], dtype=np.int64))
        binding.bind_output("logits", "cpu")
        want_hidden = (hidden or eng.drafter is not None) and eng.hidden_output is not None
        if want_hidden:
            binding.bind_output(eng.hidden_output, "cpu")
        self._kv.bind(binding, first_output=2 if want_hidden else 1)
        eng.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        self._kv.update(outputs, s)
        logits = outputs[0].numpy()[0]
        if want_hidden:
            self._hidden_rows = outputs[1].numpy()[0]
            self._hidden = np.array(self._hidden_rows[-1], dtype=np.float32)
        if every:
            return np.asarray(logits, dtype=np.float32)
        return np.array(logits[-1], dtype=np.float32)

    # ----- generation -----
    def generate(self, cfg: GenerationConfig, cancel: threading.Event | None = None) -> Iterator[Delta]:
        """Stream the reply to what the cache holds. The sampled tokens (and the stop token) join `tokens`, so the
        next turn's sync keeps them; the last one is run through the graph only when the next sync needs it.

        Each round runs the decoder once over the last chosen token and the drafter's k guesses (k = 0 without a
        drafter: plain decoding); the decoder's own choices decide what is kept, so the reply is the one plain
        decoding gives (token for token when greedy), and the cache is rolled back past rejected guesses."""
        eng = self.engine
        stop = set(eng.stop_ids if cfg.stop_ids is None else cfg.stop_ids)
        t0 = time.perf_counter()
        stats = _Stats()
        if self.logits is None:
            if not self._pending and not self._ids:
                raise ValueError("generate() needs a prompt: sync() the conversation first")
            if not self._pending:  # after a truncate the last logits are gone: run the last token again
                last = self._ids[-1]
                self.truncate(len(self._ids) - 1)
                self._pending = [last]
            self._flush(cancel)
        stats.prefill_tokens, stats.prefill_ms = self._prefill_tokens, round(self._prefill_ms, 3)
        self._prefill_tokens, self._prefill_ms = 0, 0.0
        sampler = Sampler(cfg)
        drafter = eng.drafter
        if drafter is not None and self._policy is None:
            spec = eng.bundle.manifest.drafter
            prior = list(spec.acceptance) if spec is not None and isinstance(drafter, OnnxDrafter) else []
            self._policy = KPolicy(fixed=eng.draft_tokens, k_max=min(8, eng.rollback_slack), prior=prior)
        policy = self._policy
        detok = StreamDetokenizer(eng.bundle.tokenizer, context=self._ids[-4:])
        held: list[int] = []
        decode_t = 0.0
        finish = ""
        first = self._logits
        if cfg.max_new_tokens == 0:
            finish = "length"
        elif (cancel is not None and cancel.is_set()) or first is None or self._pending:
            finish = "cancelled"  # cancelled during the prefill above
        chosen = [sampler(first)] if not finish and first is not None else []  # decided by the last round, in order
        base = len(self._ids)  # tokens before chosen[0]
        while not finish:
            last = 0
            for j, tok in enumerate(chosen):
                last = j
                if stats.decode_tokens == 0:
                    stats.first_token_ms = (time.perf_counter() - t0) * 1e3
                stats.decode_tokens += 1
                if tok in stop:
                    finish = "stop"
                    break
                held.append(tok)
                text = detok.push(tok)
                if text:
                    yield Delta(text, held)
                    held = []
                if base + j + 1 >= eng.max_context:
                    finish = "context"
                    break
                if stats.decode_tokens >= cfg.max_new_tokens:
                    finish = "length"
                    break
            # as after a plain step: the cache holds everything before the last emitted token, which is pending
            if len(self._ids) > base + last:  # the reply ended on an accepted draft: drop the drafts after it
                self._kv_rollback(base + last)
                self._logits = self._hidden = None
            self._pending = [chosen[last]]
            if finish:
                break
            if cancel is not None and cancel.is_set():
                finish = "cancelled"
                break
            ts = time.perf_counter()
            k = 0
            if drafter is not None and policy is not None:
                room = min(cfg.max_new_tokens - stats.decode_tokens - 1, eng.max_context - len(self._ids) - 2)
                k = max(0, min(policy.next_k(), room))
            draft = Draft([])
            draft_ms = 0.0
            if k > 0 and drafter is not None:  # (k > 0 only with a drafter)
                kv = {i: self._kv.arrays(i) for i in drafter.reads_layers}
                draft = drafter.propose(DraftInput(self._pending[0], self._hidden, len(self._ids), kv), k)
                draft.tokens = [int(t) for t in draft.tokens[:k]]
                k = len(draft.tokens)
                draft_ms = (time.perf_counter() - ts) * 1e3
            tv = time.perf_counter()
            start = len(self._ids)
            run = self._pending + draft.tokens
            logits = self._forward(run, every=True)
            verify_ms = (time.perf_counter() - tv) * 1e3
            self._ids += run
            self._pending = []
            if k == 0:
                m, nxt = 0, sampler(logits[0])
            else:
                m, nxt = verify(logits, draft, cfg, sampler.rng)
                if m < k:  # roll back past the rejected drafts (no copy: rows beyond the length are overwritten)
                    self._kv_rollback(start + 1 + m)
                stats.drafted += k
                stats.accepted += m
                stats.draft_ms += draft_ms
            if policy is not None:  # k, m and draft_ms are 0 when nothing was drafted
                policy.observe(k, m, draft_ms, verify_ms)
            if self._hidden is not None:
                self._hidden = np.array(self._hidden_rows[m], dtype=np.float32)
            self._logits = logits[m]
            stats.rounds += 1
            decode_t += time.perf_counter() - ts
            chosen = draft.tokens[:m] + [nxt]
            base = start + 1
        tail = detok.flush()
        if tail or held:
            yield Delta(tail, held)
        stats.decode_ms = decode_t * 1e3
        stats.finish = finish
        stats.draft_ms = round(stats.draft_ms, 3)
        self.last_stats = stats.as_dict()
        if policy is not None:
            self.last_stats["draft_k"] = policy.fixed or None
            self.last_stats["acceptance"] = policy.per_position()

    def _kv_rollback(self, n: int) -> None:
        """Keep the first n cached tokens; drafts never roll back further than the sliding layers' slack."""
        if not self._kv.truncate(n):
            raise RuntimeError(
                "rolling back drafts needed a replay: draft_tokens exceeds the engine's rollback_slack. "
                "Fix: construct the Engine with rollback_slack >= draft_tokens"
            )
        self._ids = self._ids[:n]
