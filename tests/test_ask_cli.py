"""`voiced ask` as a user runs it: the running daemon when one answers, in-process otherwise (or with --local),
and the same output either way (counts printed as counts)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from protocol.cli import format_timings
from tests.support.bundles import REPO, tiny_bundle
from tests.support.server import ServerThread
from tests.test_protocol_cli import ReplyingHandler
from voiced.server.auth import load_or_create_token

SHARED_KEYS = {"transcript", "reply_text", "timings_ms", "interrupted", "audio_rate", "audio_s"}


def _voiced(tmp_path: Path, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[server]\nport = {port}\ntoken_file = "{tmp_path / "token"}"\n[model]\nmax_new_tokens = 12\nthreads = 2\n'
                   '[audio]\ninput_device = "none"\noutput_device = "none"\n')  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICED_")}
    return subprocess.run(
        [sys.executable, "-m", "voiced", "--config", str(cfg), "ask", *args],
        env={**env, "PYTHONPATH": str(REPO)}, cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_timings_print_counts_as_counts() -> None:
    line = format_timings({"asr": 254.7, "first_audio": 702.3, "prefill_tokens": 14.0, "decode_tokens": 12.0})
    assert line == "timings: asr 255 ms, first_audio 702 ms, prefill_tokens 14, decode_tokens 12"


def test_ask_uses_the_running_daemon_without_url(tmp_path: Path) -> None:
    srv = ServerThread()
    srv.token = load_or_create_token(tmp_path / "token")
    srv.handler = ReplyingHandler()
    with srv:
        r = _voiced(tmp_path, srv.server.port, "--text", "what is the weather", "--json")
        assert r.returncode == 0, r.stderr
        assert f"asking the daemon at ws://127.0.0.1:{srv.server.port}" in r.stderr
        result = json.loads(r.stdout)  # stdout stays one JSON object
        assert result["reply_text"] == "It is sunny." and SHARED_KEYS <= set(result)
        assert srv.handler.calls, "the daemon, not this process, answered"
        text = _voiced(tmp_path, srv.server.port, "--text", "what is the weather")
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines() == ["you: what is the weather", "It is sunny."]
    assert "timings: first_audio 2 ms, total 9 ms" in text.stderr


def test_ask_local_runs_in_process_with_the_same_output(tmp_path: Path) -> None:
    bundle = tiny_bundle()
    srv = ServerThread()
    srv.token = load_or_create_token(tmp_path / "token")
    srv.handler = ReplyingHandler()
    with srv:
        r = _voiced(tmp_path, srv.server.port, "--local", "--text", "Hello there", "--bundle", str(bundle), "--json")
        text = _voiced(tmp_path, srv.server.port, "--local", "--text", "Hello there", "--bundle", str(bundle))
        assert not srv.handler.calls, "--local: the daemon was not asked"
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert SHARED_KEYS <= set(result) and result["reply_text"].strip()
    assert text.returncode == 0, text.stderr
    timings = [line for line in text.stderr.splitlines() if line.startswith("timings: ")]
    assert len(timings) == 1, text.stderr
    assert re.search(r"prefill_tokens \d+(,|$)", timings[0]), timings[0]  # a count, not "13ms"
    assert not re.search(r"_tokens \d+ ?ms", timings[0]) and re.search(r"first_token \d+ ms", timings[0]), timings[0]
    assert text.stdout.strip(), "the reply is printed on stdout"


def test_ask_without_a_daemon_does_not_try_one(tmp_path: Path) -> None:
    from voiced.config import load_settings
    from voiced.turn_cli import daemon_answers

    (tmp_path / "token").write_text("t" * 32 + "\n")
    settings, _ = load_settings(None, {"server": {"port": 1, "token_file": str(tmp_path / "token")}})
    assert not daemon_answers(settings)  # nothing listens on port 1
    srv = ServerThread()
    srv.token = load_or_create_token(tmp_path / "token2")
    srv.handler = ReplyingHandler()
    with srv:
        settings, _ = load_settings(None, {"server": {"port": srv.server.port, "token_file": str(tmp_path / "token2")}})
        assert daemon_answers(settings)
