"""The audio front end: sources (file, microphone) -> 16 kHz mono int16 -> speech segments.

Submodules are imported directly (`from voiced.audio.vad import Segmenter`) so that using the segmenter or a
WAV file never loads PortAudio.
"""
