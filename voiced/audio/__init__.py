"""The audio front end: sources (file, microphone) -> 16 kHz mono int16 -> speech segments.

Submodules are imported directly (`from voiced.audio.vad import Segmenter`) so that using the segmenter or a
WAV file never loads PortAudio.
"""

# The front end's one sample rate: the VAD, the wake word, the end-of-turn models and the recogniser all take
# 16 kHz mono int16, and every source is resampled to it on the way in. It lives here, importing nothing, so that
# any module may use it; `protocol/` keeps its own list of rates because it imports nothing from `voiced/`.
RATE = 16000
