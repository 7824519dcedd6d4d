"""voiced: a local, always-on, audio-first voice assistant daemon."""

__version__ = "0.1.0"
