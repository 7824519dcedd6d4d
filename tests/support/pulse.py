"""A private PulseAudio daemon whose null sink's monitor is a real microphone, for machines with no sound card.

What `paplay` writes into the sink `vspk` comes back out of its monitor source bit-exact, on PulseAudio's own
clock, so MicSource is tested through sounddevice -> PortAudio -> ALSA 'pulse' plugin -> PulseAudio, the same
path a desktop takes. Works as root (CI) and as a user; nothing is shared with a session daemon.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Pulse:
    runtime_dir: Path
    env: dict[str, str]
    pid: int

    def run(self, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout, check=True)

    def play(self, wav: Path) -> subprocess.Popen[bytes]:
        """Start playing a WAV into the null sink; the caller waits on the process."""
        return subprocess.Popen(["paplay", "--latency-msec=30", "--device=vspk", str(wav)], env=self.env, stderr=subprocess.PIPE)


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"{tool} is missing; install it: apt-get install pulseaudio pulseaudio-utils libportaudio2")
    return path


def _alive(pid: int) -> bool:
    """True while the process runs; a zombie (no init to reap it in a container) counts as gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@contextmanager
def pulse_daemon() -> Iterator[Pulse]:
    """Start the daemon in a fresh XDG_RUNTIME_DIR, set it in os.environ (PortAudio reads it), stop it after."""
    _need("pulseaudio")
    _need("pactl")
    _need("paplay")
    tmp = Path(tempfile.mkdtemp(prefix="voiced-pulse-"))
    runtime = tmp / "run"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HOME": str(tmp), "PULSE_RUNTIME_PATH": str(runtime / "pulse")}
    env.pop("PULSE_SERVER", None)
    cmd = [
        "pulseaudio",
        "-n",
        "--daemonize=yes",
        "--exit-idle-time=-1",
        "--disallow-exit",
        "--use-pid-file=yes",
        "--log-target=file:" + str(tmp / "pulse.log"),
        "-L",
        "module-native-protocol-unix",
        "-L",
        "module-null-sink sink_name=vspk rate=16000 channels=1",
        "-L",
        "module-always-sink",
    ]
    if os.geteuid() == 0:
        cmd.insert(1, "--system=false")  # root: run as a per-user daemon all the same (it only warns)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
    log = (tmp / "pulse.log").read_text() if (tmp / "pulse.log").exists() else ""
    if proc.returncode != 0:
        raise RuntimeError(f"pulseaudio did not start (exit {proc.returncode}): {proc.stderr}{log[-2000:]}")
    pid_file = runtime / "pulse" / "pid"
    deadline = time.monotonic() + 10
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(pid_file.read_text().split()[0])
    saved = {k: os.environ.get(k) for k in ("XDG_RUNTIME_DIR", "PULSE_RUNTIME_PATH", "PULSE_SERVER")}
    daemon = Pulse(runtime, env, pid)
    try:
        daemon.run("pactl", "set-default-source", "vspk.monitor")
        daemon.run("pactl", "set-default-sink", "vspk")
        os.environ["XDG_RUNTIME_DIR"] = env["XDG_RUNTIME_DIR"]
        os.environ["PULSE_RUNTIME_PATH"] = env["PULSE_RUNTIME_PATH"]
        os.environ.pop("PULSE_SERVER", None)
        yield daemon
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(tmp, ignore_errors=True)
