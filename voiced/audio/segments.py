"""`voiced segments FILE`: the audio front end over a WAV file, for checking VAD settings on one's own audio.

With --json, stdout carries exactly one JSON array of {"start_s", "end_s"}: scripts and checks parse it, so
every other word goes to stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from voiced.audio import RATE
from voiced.audio.assets import FrontendModelError
from voiced.audio.capture import AudioFileError, load_wav_16k
from voiced.audio.vad import Segmenter, SpeechEnded
from voiced.config import AudioSettings

_BLOCK = RATE  # one second per feed: the segmenter does not care, and it keeps memory flat


def segment_file(path: Path | str, settings: AudioSettings) -> list[SpeechEnded]:
    """Every turn of a WAV file (any rate, channels, sample width), as the daemon would cut it."""
    pcm = load_wav_16k(path)
    seg = Segmenter(settings, source=str(path))
    events = []
    for i in range(0, len(pcm), _BLOCK):
        events += seg.feed(pcm[i : i + _BLOCK])
    events += seg.flush()
    return [e for e in events if isinstance(e, SpeechEnded)]


def segments_command(path: Path, settings: AudioSettings, as_json: bool) -> int:
    try:
        turns = segment_file(path, settings)
    except (AudioFileError, FrontendModelError) as e:  # a bad file, or audio.vad's Silero file not prepared
        print(f"voiced: {e}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps([{"start_s": round(t.t_start, 3), "end_s": round(t.t_end, 3)} for t in turns]))
        return 0
    if not turns:
        print(f"{path}: no speech found", file=sys.stderr)
    for i, turn in enumerate(turns, 1):
        note = "" if turn.reason == "silence" else f"  ({turn.reason})"
        print(f"{i:>3}  {turn.t_start:8.2f} s - {turn.t_end:8.2f} s  ({turn.t_end - turn.t_start:5.2f} s){note}")
    return 0
