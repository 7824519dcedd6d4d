"""Where a reply is heard: at the source that asked, not wherever voiced happens to have a speaker.

A reply goes to the sinks of the source that asked: the local speaker for the local microphone, the asking
WebSocket session (and listeners that asked for every reply: hello `replies: "all"`, the default of a client
without a microphone), the asking Wyoming connection. The local speaker plays other sources' replies only with
`audio.speaker_plays = "all"`: otherwise a question asked at a kitchen satellite was answered aloud in the room
where voiced runs as well.

A Wyoming `transcript` turn (Home Assistant's conversation agent) wants text only: Home Assistant speaks the
answer itself, through its TTS entity (voiced's own, if so configured), on the satellite that heard it. So such a
turn makes no audio in the pipeline and is not paced by any: `handled` goes back as soon as the text is complete,
and the cores are free for the TTS request that follows.
"""

from __future__ import annotations

from enum import Enum

from voiced.conversations import LOCAL

# The source of a reply nobody asked for in words (a due timer's announcement): it is for everyone, so it plays
# on the local speaker and goes to every listener, wherever the timer was set.
ANNOUNCE = "timers"


class Delivery(Enum):
    SPOKEN = "spoken"  # the asker hears the reply: audio to its sinks, paced as it is heard
    TEXT = "text"  # the asker takes the text and speaks it itself: no audio, nothing paced


def plays_locally(source: str, speaker_plays: str) -> bool:
    """Whether the local speaker plays the reply to `source` (`audio.speaker_plays`: "local" or "all")."""
    return source in (LOCAL, ANNOUNCE) or speaker_plays == "all"
