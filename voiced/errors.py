"""The one base of voiced's own errors, so that a caller (the CLI, the server, a test) can tell them from bugs.

Every subclass's message names the fix: what to run, install or change, not only what went wrong.
"""

from __future__ import annotations


class VoicedError(Exception):
    """An error voiced raises on purpose; every subclass's message names the fix."""
