"""`voiced serve` before it serves: busy ports refused before the model loads, signals honoured during the load,
and one log line per device event. Real processes, real sockets, a real file lock held by the test."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.bundles import REPO, tiny_bundle


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICED_", "NOTIFY_SOCKET", "WATCHDOG"))}
    return {**env, "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "PYTHONPATH": str(REPO), **extra}


def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "voiced", "serve", "--input-device", "none", "--output-device", "none", *args],
        env=env or _env(tmp_path), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@contextmanager
def _listening() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _until_line(proc: subprocess.Popen[str], needle: str, timeout_s: float = 120.0) -> list[str]:
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"never logged {needle!r}: {''.join(lines)[-2000:]}")


def test_busy_port_is_refused_before_the_model_loads(tmp_path: Path) -> None:
    with _listening() as port:
        # a bundle that does not exist: had the load come first, the error would be about the bundle
        proc = _serve(tmp_path, "--bundle", str(tmp_path / "no-bundle"), "--port", str(port))
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert f"cannot listen on 127.0.0.1:{port} (address already in use)" in err and "--port" in err
    assert "loading model" not in err and "no-bundle" not in err


def test_busy_wyoming_port_is_refused_before_the_model_loads(tmp_path: Path) -> None:
    with _listening() as port:
        proc = _serve(tmp_path, "--bundle", str(tmp_path / "no-bundle"), "--port", "0", "--wyoming", f"tcp://127.0.0.1:{port}")
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert f"cannot serve Wyoming on tcp://127.0.0.1:{port}" in err and "server.wyoming" in err
    assert "loading model" not in err


def test_malformed_wyoming_uri_exits_2_at_once(tmp_path: Path) -> None:
    proc = _serve(tmp_path, "--bundle", str(tmp_path / "no-bundle"), "--port", "0", "--wyoming", "10700")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "tcp://HOST:PORT" in err and "loading model" not in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_the_model_load_stops_the_daemon(tmp_path: Path, sig: signal.Signals) -> None:
    """The load is held forever by a preparation lock this test keeps (as a second `voiced model prepare` would)."""
    models = tmp_path / "cache" / "voiced" / "models"
    models.mkdir(parents=True)
    with open(models / ".qwen2.5-0.5b.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = _serve(tmp_path, "--bundle", "qwen2.5-0.5b", "--port", "0", env=_env(tmp_path, XDG_CACHE_HOME=str(tmp_path / "cache")))
        try:
            _until_line(proc, "loading model qwen2.5-0.5b", timeout_s=60)
            time.sleep(0.5)  # well inside the (endless) wait for the lock
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=30)  # a guard against hanging, not a timing assert
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err
        assert "stopping while the model loads" in err and "loaded in" not in err


def test_an_absent_microphone_is_logged_once_with_the_fix(tmp_path: Path) -> None:
    bundle = tiny_bundle()
    proc = subprocess.Popen(
        [sys.executable, "-m", "voiced", "serve", "--bundle", str(bundle), "--port", "0",
         "--input-device", "no-such-microphone", "--output-device", "none"],
        env=_env(tmp_path), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines = _until_line(proc, "serving ws://")
        time.sleep(4.0)  # three retries of the back-off (0.5, 1, 2 s) happen meanwhile
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = "".join(lines) + rest
    absent = [line for line in log.splitlines() if "microphone absent" in line]
    assert len(absent) == 1, log[-3000:]
    assert "--input-device none" in absent[0]
    assert not [line for line in log.splitlines() if line.rstrip().endswith(":")], "no log line ends empty"
