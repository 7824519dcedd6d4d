"""voiced/server auth and limits as plain code: token file, bearer header, origin allowlist, audio budget."""

from __future__ import annotations

import os
import stat

import pytest

from voiced.server.auth import TokenError, bearer, load_or_create_token, origin_allowed, read_token, token_matches
from voiced.server.limits import AudioBudget


def test_token_created_private_then_reused(tmp_path):
    path = tmp_path / "cfg" / "voiced" / "token"
    token = load_or_create_token(path)
    assert len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_or_create_token(path) == token
    assert read_token(path) == token
    assert load_or_create_token(tmp_path / "other") != token


def test_token_readable_by_others_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "token"
    load_or_create_token(path)
    os.chmod(path, 0o644)
    with pytest.raises(TokenError, match=f"chmod 600 {path}"):
        load_or_create_token(path)


def test_client_without_token_names_voiced_serve(tmp_path):
    with pytest.raises(TokenError, match="voiced serve"):
        read_token(tmp_path / "missing")


def test_bearer_and_comparison():
    assert bearer("Bearer abc") == "abc"
    assert bearer("bearer   abc ") == "abc"
    assert bearer("Basic abc") is None
    assert bearer(None) is None
    assert token_matches("secret-token", "secret-token")
    assert not token_matches("secret-token", "secret-tokeN")
    assert not token_matches("secret-token", None)


def test_origin_allowlist():
    assert origin_allowed(None, 8765, [])
    assert origin_allowed("http://127.0.0.1:8765", 8765, [])
    assert origin_allowed("http://localhost:8765/", 8765, [])
    assert not origin_allowed("http://localhost:9999", 8765, [])
    assert not origin_allowed("https://evil.example", 8765, [])
    assert origin_allowed("https://Home.example", 8765, ["https://home.example"])
    assert not origin_allowed("null", 8765, [])


def test_audio_budget_allows_a_burst_then_the_speed():
    now = [0.0]
    b = AudioBudget(speed=2.0, burst_s=3.0, clock=lambda: now[0])
    assert b.take(2.0) and b.take(1.0)
    assert not b.take(0.1)  # burst spent
    now[0] = 0.5  # refilled 1.0 s of audio
    assert b.take(1.0)
    assert not b.take(0.05)
    now[0] = 100.0
    assert b.take(3.0) and not b.take(0.01)  # never more than the burst
