"""systemd integration: the user unit (checked by systemd's own parser), `voiced service install|uninstall`,
and the daemon's sd_notify conversation (READY, STATUS, WATCHDOG, STOPPING) seen from a real notify socket."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from protocol.client import VoicedClient
from tests.support.bundles import REPO, tiny_bundle
from tests.support.systemd import NotifySocket, verify_user_unit
from voiced.notify import Notifier
from voiced.unit import MARKER, UnitSpec, example_unit, exec_command, render

UNIT = REPO / "systemd" / "voiced.service"


def _voiced(home: Path, *args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("XDG_CONFIG") and k != "NOTIFY_SOCKET"}
    return subprocess.run(
        [sys.executable, "-m", "voiced", *args],
        env={**base, "HOME": str(home), "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True, text=True, timeout=60, cwd=cwd,
    )  # fmt: skip


def _directives(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


# ------------------------------------------------------------------------------------------ the unit file


def test_repository_unit_is_the_template_rendered():
    assert UNIT.read_text() == example_unit(), "systemd/voiced.service drifted from voiced/unit.py: regenerate it with example_unit()"


def test_repository_unit_passes_systemd_verify(tmp_path):
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "voiced").symlink_to(exec_command()[0])  # %h/.local/bin/voiced must exist
    unit = tmp_path / "voiced.service"
    shutil.copy(UNIT, unit)
    verdict = verify_user_unit(unit, home)
    assert verdict.ok_for(unit), verdict.output
    d = _directives(unit.read_text())
    assert d["Type"] == "notify" and d["Restart"] == "on-failure" and int(d["WatchdogSec"]) > 0
    assert d["ProtectSystem"] == "strict" and d["NoNewPrivileges"] == "yes" and d["PrivateTmp"] == "yes"
    assert d["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert {"%h/.config/voiced", "%h/.cache/voiced"} <= set(d["ReadWritePaths"].split())
    assert d["WantedBy"] == "default.target"


def test_verify_catches_what_systemd_only_warns_about(tmp_path):
    """The verdict must fail on an unknown key, which systemd-analyze reports with exit status 0."""
    home = tmp_path / "home"
    home.mkdir()
    unit = tmp_path / "voiced.service"
    unit.write_text(render(UnitSpec(exec_start=exec_command())).replace("PrivateTmp=yes", "PrivateTmp=yes\nProtectEverything=yes"))
    verdict = verify_user_unit(unit, home)
    assert verdict.returncode == 0 and not verdict.ok_for(unit)
    assert "ProtectEverything" in verdict.output


def test_exec_start_escapes_spaces_percent_and_dollar(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    odd = tmp_path / "my venv 100% $HOME" / "bin"
    odd.mkdir(parents=True)
    (odd / "voiced").symlink_to(exec_command()[0])
    unit = tmp_path / "voiced.service"
    unit.write_text(render(UnitSpec(exec_start=(str(odd / "voiced"), "serve"))))
    # verify fails when ExecStart's program does not exist: passing proves systemd reads back the real path
    verdict = verify_user_unit(unit, home)
    assert verdict.ok_for(unit), verdict.output


# ------------------------------------------------------------------------------- install / uninstall


def test_install_writes_a_unit_systemd_accepts_and_uninstall_removes_it(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    r = _voiced(home, "service", "install")
    assert r.returncode == 0, r.stderr
    unit = home / ".config" / "systemd" / "user" / "voiced.service"
    assert f"wrote {unit}" in r.stdout
    assert "systemctl --user daemon-reload && systemctl --user enable --now voiced" in r.stdout
    text = unit.read_text()
    assert text.startswith(MARKER)
    assert _directives(text)["ExecStart"] == " ".join(exec_command())
    assert (home / ".config" / "voiced").is_dir() and (home / ".cache" / "voiced").is_dir()
    verdict = verify_user_unit(unit, home)
    assert verdict.ok_for(unit), verdict.output

    again = _voiced(home, "service", "install")
    assert again.returncode == 0 and f"unchanged: {unit}" in again.stdout
    assert unit.read_text() == text

    wants = unit.parent / "default.target.wants" / "voiced.service"  # what `systemctl --user enable` makes
    wants.parent.mkdir()
    wants.symlink_to(unit)
    r = _voiced(home, "service", "uninstall")
    assert r.returncode == 0, r.stderr
    assert not unit.exists() and not wants.is_symlink()
    assert "systemctl --user stop voiced" in r.stdout
    r = _voiced(home, "service", "uninstall")
    assert r.returncode == 0 and "nothing to remove" in r.stdout


def test_install_carries_a_custom_xdg_config_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    cfg = tmp_path / "elsewhere" / "cfg"
    r = _voiced(home, "service", "install", env={"XDG_CONFIG_HOME": str(cfg)})
    assert r.returncode == 0, r.stderr
    unit = cfg / "systemd" / "user" / "voiced.service"
    d = _directives(unit.read_text())
    assert d["Environment"] == f"XDG_CONFIG_HOME={cfg}"  # the user manager does not share the shell's environment
    assert str(cfg / "voiced") in d["ReadWritePaths"].split()
    assert (cfg / "voiced").is_dir()
    verdict = verify_user_unit(unit, home, env={"XDG_CONFIG_HOME": str(cfg)})
    assert verdict.ok_for(unit), verdict.output


def test_install_carries_the_given_config_into_exec_start(tmp_path):
    """`--config` given relative, after the subcommand: the unit names it absolute, and the command line it
    writes really makes voiced read that file when started elsewhere (as the user manager starts it, in $HOME)."""
    home = tmp_path / "home"
    conf_dir = home / "my conf"
    conf_dir.mkdir(parents=True)
    cfg = conf_dir / "voiced.toml"
    cfg.write_text("[server]\nport = 9123\n")
    r = _voiced(home, "service", "install", "--config", "voiced.toml", cwd=conf_dir)
    assert r.returncode == 0, r.stderr
    unit = home / ".config" / "systemd" / "user" / "voiced.service"
    assert f"reads its configuration from {cfg} (--config)" in r.stdout
    args = shlex.split(_directives(unit.read_text())["ExecStart"])
    assert args == [*exec_command()[:-1], "--config", str(cfg), "serve"]
    verdict = verify_user_unit(unit, home)
    assert verdict.ok_for(unit), verdict.output

    # the unit's own command line, with `config --json` in place of `serve`: the port comes from the file
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_CONFIG")}
    shown = subprocess.run(
        [*args[:-1], "config", "--json"], env={**env, "HOME": str(home), "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=60, cwd=home,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    port = next(row for row in json.loads(shown.stdout) if row["key"] == "server.port")
    assert port == {"key": "server.port", "value": 9123, "source": str(cfg)}

    # installed again without --config: the unit goes back to the default config
    r = _voiced(home, "service", "install")
    assert r.returncode == 0 and f"wrote {unit}" in r.stdout, r.stderr
    assert "--config" not in _directives(unit.read_text())["ExecStart"]
    assert f"reads its configuration from {home / '.config' / 'voiced' / 'config.toml'} if it exists" in r.stdout


def test_install_warns_when_the_config_is_hidden_by_private_tmp(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    with tempfile.TemporaryDirectory(prefix="voiced-cfg-", dir="/tmp") as d:
        cfg = Path(d) / "voiced.toml"
        cfg.write_text("")
        r = _voiced(home, "--config", str(cfg), "service", "install")
    assert r.returncode == 0, r.stderr
    assert f"{cfg} is under /tmp or /var/tmp" in r.stderr and "PrivateTmp=yes" in r.stderr
    assert "move the file elsewhere" in r.stderr
    args = shlex.split(_directives((home / ".config" / "systemd" / "user" / "voiced.service").read_text())["ExecStart"])
    assert args[-3:] == ["--config", str(cfg), "serve"]


def test_install_and_uninstall_leave_a_unit_they_did_not_write(tmp_path):
    home = tmp_path / "home"
    unit = home / ".config" / "systemd" / "user" / "voiced.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/usr/bin/true\n")
    r = _voiced(home, "service", "install")
    assert r.returncode == 1 and "move it aside" in r.stderr
    r = _voiced(home, "service", "uninstall")
    assert r.returncode == 1 and "remove it yourself" in r.stderr
    assert unit.read_text() == "[Service]\nExecStart=/usr/bin/true\n"


# -------------------------------------------------------------------------------------------- sd_notify


def test_notifier_abstract_address_and_watchdog_pid(monkeypatch):
    name = f"voiced-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        assert Notifier("@" + name).send("READY=1", "STATUS=x")
        assert s.recv(100) == b"READY=1\nSTATUS=x"
    assert not Notifier("").enabled and not Notifier("").send("READY=1")
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier("@x").watchdog_interval() == 1.5
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process (e.g. our parent)
    assert Notifier("@x").watchdog_interval() is None


async def test_daemon_ready_watchdog_stopping(tmp_path):
    bundle = tiny_bundle()
    notify = NotifySocket(tmp_path / "notify.sock")
    watchdog_usec = 400_000
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHDOG")}
    env.update(
        NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC=str(watchdog_usec), XDG_CONFIG_HOME=str(tmp_path / "cfg"), PYTHONPATH=str(REPO)
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voiced", "serve", "--bundle", str(bundle), "--input-device", "none",
        "--output-device", "none", "--port", "0", env=env, cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        ready = await notify.until("READY=1", timeout=120)
        statuses = [f for d in notify.received for f in d.fields if f.startswith("STATUS=")]
        assert statuses[0] == "STATUS=loading model"
        url = re.fullmatch(r"STATUS=serving (ws://127\.0\.0\.1:\d+)", statuses[-1]).group(1)  # type: ignore[union-attr]
        assert "READY=1" in ready.fields and f"STATUS=serving {url}" in ready.fields

        token = (tmp_path / "cfg" / "voiced" / "token").read_text().strip()
        async with VoicedClient(url, token, name="systemd-test") as client:
            assert client.welcome is not None  # READY=1 meant what it says: the server takes connections

            pings = []
            while len(pings) < 4:
                d = await notify.next(timeout=30)
                if "WATCHDOG=1" in d.fields:
                    pings.append(d.at)
            # half of WatchdogSec, as systemd asks: never faster (kernel arrival times: a slow reader cannot fake it)
            gaps = [b - a for a, b in zip(pings, pings[1:])]
            assert min(gaps) >= 0.9 * watchdog_usec / 2e6, gaps

            # `systemctl stop` with a client still connected, as with a browser tab left open
            proc.send_signal(signal.SIGTERM)
            await notify.until("STOPPING=1", timeout=10)
            rc = await asyncio.wait_for(proc.wait(), 2.0)
            assert rc == 0, (await proc.stderr.read()).decode()[-2000:]  # type: ignore[union-attr]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        notify.close()


def test_installed_unit_does_not_retry_a_refused_config_and_names_its_documentation(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    assert _voiced(home, "service", "install").returncode == 0
    unit = home / ".config" / "systemd" / "user" / "voiced.service"
    d = _directives(unit.read_text())
    assert d["Restart"] == "on-failure" and d["RestartPreventExitStatus"] == "2"
    doc = d["Documentation"]
    assert doc.startswith("file:///") and Path(doc[len("file://") :]).is_file() and doc.endswith("README.md")
    verdict = verify_user_unit(unit, home)
    assert verdict.ok_for(unit), verdict.output
    # and exit 2 is what a refused configuration gives `serve`, before any model is loaded
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VOICED_")},
        "HOME": str(home),
        "PYTHONPATH": str(REPO),
        "VOICED_SEVER__PORT": "1",
    }
    r = subprocess.run([sys.executable, "-m", "voiced", "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "VOICED_SERVER__PORT" in r.stderr
