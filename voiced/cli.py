"""`voiced ...`: argument parsing only; each command hands over to the module that owns the job."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from voiced import __version__
from voiced.config import ConfigError, Settings, describe, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, dict[str, Any]] = {"audio": {}, "server": {}, "model": {}, "tts": {}, "activation": {}}
    for dest, (section, key) in _FLAG_KEYS.items():
        value = getattr(args, dest, None)
        if value is not None:
            overrides[section][key] = value
    settings, origin = load_settings(args.config, overrides)
    args._origin = origin
    return settings


# CLI flag -> (section, key); flags are the highest-priority layer of the configuration.
_FLAG_KEYS = {
    "input_device": ("audio", "input_device"),
    "output_device": ("audio", "output_device"),
    "host": ("server", "host"),
    "port": ("server", "port"),
    "bundle": ("model", "bundle"),
    "threads": ("model", "threads"),
    "wyoming": ("server", "wyoming"),
    "activation": ("activation", "mode"),
    "tts_engine": ("tts", "engine"),
}


def _device(value: str) -> str | int:
    return int(value) if value.isdigit() else value


def _add_common(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: a subcommand that is not given --config keeps what the top-level parser read (voiced --config X cmd)
    p.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="config TOML (default: $XDG_CONFIG_HOME/voiced/config.toml)")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voiced", description="Local, always-on voice assistant daemon.")
    parser.add_argument("--version", action="version", version=f"voiced {__version__}")
    parser.add_argument("--config", type=Path, default=None, help="config TOML (default: $XDG_CONFIG_HOME/voiced/config.toml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the daemon in the foreground")
    _add_common(p)
    p.add_argument("--host", help="address to listen on (server.host; default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, help="WebSocket and browser-page port (server.port; default 8765; 0 = any free port)")
    p.add_argument("--bundle", help="bundle name or directory (default: the embedded default)")
    p.add_argument("--threads", type=int, help="CPU threads for the model (model.threads; default 0 = all cores)")
    p.add_argument("--input-device", type=_device, help="input device name or index, or 'none' for no local microphone")
    p.add_argument("--output-device", type=_device, help="output device name or index, or 'none'")
    p.add_argument("--wyoming", help="also serve the Wyoming protocol, e.g. tcp://127.0.0.1:10700")
    p.add_argument("--activation", choices=["always", "wake", "push"])
    p.add_argument("--tts-engine", choices=["espeak", "piper"])

    p = sub.add_parser("devices", help="list audio devices PortAudio sees")
    _add_common(p)

    p = sub.add_parser("config", help="print the effective configuration and where each value came from")
    _add_common(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("segments", help="run the audio front end over a WAV file and print the speech turns")
    _add_common(p)
    p.add_argument("wav", type=Path)
    p.add_argument("--json", action="store_true", help='one JSON array of {"start_s", "end_s"} on stdout')

    p = sub.add_parser("model", help="manage model bundles")
    _add_common(p)
    msub = p.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    mp = msub.add_parser("prepare", help="build a bundle (default: the embedded default) into the cache")
    mp.add_argument("name", nargs="?", default="default")
    mp.add_argument("--force", action="store_true", help="rebuild even when cached")
    msub.add_parser("list", help="list cached bundles")
    mv = msub.add_parser("verify", help="check every file of a bundle against its manifest hashes")
    mv.add_argument("name", nargs="?", default="default")
    mr = msub.add_parser("remove", help="delete a cached bundle")
    mr.add_argument("name")

    p = sub.add_parser("listen", help="connect to a running daemon and print its events")
    _add_common(p)
    p.add_argument("--url", default=None, help="ws://127.0.0.1:8765 by default")
    p.add_argument("--play", action="store_true", help="play reply audio on the local speaker")
    p.add_argument("--out", type=Path, help="save reply audio to this WAV file")

    p = sub.add_parser("ask", help="one turn: a text or WAV question, to the running daemon, or in-process when none answers")
    _add_common(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--text")
    g.add_argument("--wav", type=Path)
    p.add_argument("--url", default=None, help="the daemon to ask (default: the configured one when it answers, else in-process)")
    p.add_argument("--local", action="store_true", help="run the turn in this process even when a daemon answers")
    p.add_argument("--out", type=Path, help="save the reply audio to this WAV file")
    p.add_argument("--json", action="store_true", help="print transcript, reply_text and timings_ms as JSON")
    p.add_argument("--bundle")

    p = sub.add_parser("service", help="install or remove the systemd user unit")
    _add_common(p)
    p.add_argument("action", choices=["install", "uninstall"])

    p = sub.add_parser("open", help="print a one-time URL for the browser page")
    _add_common(p)
    p.add_argument("--revoke", action="store_true", help="refuse every browser session and pairing code issued so far")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = _settings(args)
        return _dispatch(args, settings) or 0
    except ConfigError as e:
        print(f"voiced: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _config_file_line(config: Path | None) -> str:
    from voiced.config import default_config_path

    path = config or default_config_path()
    found = "read" if path.is_file() else "not found, so the defaults, env and flags below apply"
    return f"# config file: {path} ({found})"


def _dispatch(args: argparse.Namespace, settings: Settings) -> int | None:
    cmd = args.command
    if cmd == "config":
        rows = describe(settings, args._origin)
        print(_config_file_line(args.config), file=sys.stderr if args.json else sys.stdout)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                print(f"{r['key']:<32} = {json.dumps(r['value']):<40} # {r['source']}")
        return 0
    if cmd == "devices":
        from voiced.audio.devices import print_devices

        return print_devices()
    if cmd == "segments":
        from voiced.audio.segments import segments_command

        return segments_command(args.wav, settings.audio, as_json=args.json)
    if cmd == "model":
        from voiced.model import store

        return store.command(args, settings)
    if cmd == "serve":
        from voiced.service import serve

        return serve(settings)
    if cmd == "listen":
        from voiced.client_cli import listen_command

        return listen_command(args, settings)
    if cmd == "ask":
        from voiced.turn_cli import ask_local, daemon_answers

        if args.url or not (args.local or args.bundle) and daemon_answers(settings):
            from voiced.client_cli import ask_command, default_url

            if not args.url:
                print(f"voiced: asking the daemon at {default_url(settings)} (--local: in this process)", file=sys.stderr)
            return ask_command(args, settings)

        return ask_local(args, settings)
    if cmd == "service":
        from voiced.unit import install, uninstall

        # the unit must start the daemon on the same config file that this command read (None: the default one)
        return install(settings, config=args.config) if args.action == "install" else uninstall()
    if cmd == "open":
        from voiced.server.pairing import open_command, revoke_command

        return revoke_command(settings) if args.revoke else open_command(settings)
    raise AssertionError(cmd)
