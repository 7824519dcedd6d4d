"""Configuration layers (defaults < TOML < env < flags) and refusals that name key, value and what is allowed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from voiced.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("VOICED_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_precedence_defaults_toml_env_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s, origin = load_settings()
    assert s.audio.hangover_ms == 600 and origin.get(("audio", "hangover_ms"), "default") == "default"
    path = toml(tmp_path, "[audio]\nhangover_ms = 700\npre_roll_ms = 200\n")
    s, origin = load_settings(path)
    assert (s.audio.hangover_ms, s.audio.pre_roll_ms) == (700, 200) and origin[("audio", "hangover_ms")] == str(path)
    monkeypatch.setenv("VOICED_AUDIO__HANGOVER_MS", "800")
    s, origin = load_settings(path)
    assert (s.audio.hangover_ms, s.audio.pre_roll_ms) == (800, 200)
    assert origin[("audio", "hangover_ms")] == "env VOICED_AUDIO__HANGOVER_MS"
    s, origin = load_settings(path, {"audio": {"hangover_ms": 900}})
    assert (s.audio.hangover_ms, s.audio.pre_roll_ms) == (900, 200) and origin[("audio", "hangover_ms")] == "flag"


@pytest.mark.parametrize(
    "text, key, value, allowed",
    [
        ("[audio]\nhangover_ms = 10\n", "audio.hangover_ms", "10", "greater than or equal to 60"),
        ("[audio]\nframe_ms = 25\n", "audio.frame_ms", "25", "10, 20 or 30"),
        ("[audio]\nvad_aggressiveness = 7\n", "audio.vad_aggressiveness", "7", "less than or equal to 3"),
        ("[audio]\nstart_ratio = 0\n", "audio.start_ratio", "0", "greater than 0"),
        ("[audio]\nno_such_key = 1\n", "audio.no_such_key", "1", "Extra inputs are not permitted"),
    ],
)
def test_bad_values_are_refused_naming_key_value_and_range(tmp_path: Path, text: str, key: str, value: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(toml(tmp_path, text))
    msg = str(err.value)
    assert f"{key} = {value}" in msg and allowed in msg and "config.toml" in msg


def test_bad_env_value_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICED_AUDIO__HANGOVER_MS", "soon")
    with pytest.raises(ConfigError, match=r"audio.hangover_ms = 'soon' \(from env VOICED_AUDIO__HANGOVER_MS\)"):
        load_settings()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "voiced", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)


def test_cli_config_json_shows_layers(tmp_path: Path) -> None:
    path = toml(tmp_path, "[audio]\nhangover_ms = 700\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICED_")}
    env["VOICED_AUDIO__PRE_ROLL_MS"] = "250"
    proc = cli("config", "--config", str(path), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    rows = {r["key"]: r for r in json.loads(proc.stdout)}
    assert rows["audio.hangover_ms"] == {"key": "audio.hangover_ms", "value": 700, "source": str(path)}
    assert rows["audio.pre_roll_ms"]["value"] == 250 and rows["audio.pre_roll_ms"]["source"].startswith("env")
    assert rows["audio.min_speech_ms"]["source"] == "default"


def test_cli_refuses_bad_config_with_exit_code_2(tmp_path: Path) -> None:
    path = toml(tmp_path, "[audio]\nhangover_ms = 10\n")
    proc = cli("config", "--config", str(path))
    assert proc.returncode == 2
    assert "audio.hangover_ms = 10" in proc.stderr and "greater than or equal to 60" in proc.stderr
    assert proc.stdout == ""
    missing = cli("config", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


@pytest.mark.parametrize(
    "var, closest",
    [
        ("VOICED_SEVER__PORT", "VOICED_SERVER__PORT"),
        ("VOICED_SERVER__PROT", "VOICED_SERVER__PORT"),
        ("VOICED_AUDIO__HANGOVR_MS", "VOICED_AUDIO__HANGOVER_MS"),
    ],
)
def test_unknown_env_variable_is_refused_naming_the_closest_key(monkeypatch: pytest.MonkeyPatch, var: str, closest: str) -> None:
    monkeypatch.setenv(var, "1")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert var in str(err.value) and f"did you mean {closest}?" in str(err.value)


def test_env_variables_without_a_section_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICED_SPEECH_DIR", "/somewhere")  # the benchmarks' own variable, not a config key
    assert load_settings()[0].server.port == 8765


@pytest.mark.parametrize("uri", ["10700", "http://x", "tcp://127.0.0.1", "tcp://:10700", "tcp://host:port"])
def test_malformed_wyoming_uri_is_refused_at_load(uri: str) -> None:
    with pytest.raises(ConfigError, match=r"server\.wyoming = .*tcp://HOST:PORT"):
        load_settings(None, {"server": {"wyoming": uri}})


@pytest.mark.parametrize("uri", ["tcp://127.0.0.1:10700", "tcp://[::1]:10700", "unix:///run/voiced.sock"])
def test_wellformed_wyoming_uri_is_taken(uri: str) -> None:
    assert load_settings(None, {"server": {"wyoming": uri}})[0].server.wyoming == uri


def test_cli_config_names_the_file_it_looked_for(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICED_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    proc = cli("config", env=env)
    assert proc.returncode == 0, proc.stderr
    assert (
        proc.stdout.splitlines()[0]
        == f"# config file: {tmp_path / 'xdg' / 'voiced' / 'config.toml'} (not found, so the defaults, env and flags below apply)"
    )
    path = toml(tmp_path, "[audio]\nhangover_ms = 700\n")
    proc = cli("config", "--config", str(path), "--json", env=env)
    assert f"# config file: {path} (read)" in proc.stderr and json.loads(proc.stdout)
    bad = cli("config", "--config", str(path), env={**env, "VOICED_SERVER__WYOMING": "http://x"})
    assert bad.returncode == 2 and "server.wyoming = 'http://x'" in bad.stderr and bad.stdout == ""
