"""`voiced service install|uninstall`: the systemd *user* unit, written for the interpreter that runs this.

Why a user unit: the microphone and speaker belong to the user's session (PipeWire/PulseAudio sockets under
$XDG_RUNTIME_DIR), which a system service cannot reach without hacks. Why we only print the systemctl
commands: a user manager may not exist where this runs (CI, containers, ssh without lingering), and enabling
an always-on microphone is a decision the user should see being made.

The unit text lives here (not only in systemd/voiced.service) so that an installed wheel can write it; the
repository file is this template rendered with the default paths, and a test keeps the two equal.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from voiced.config import Settings, cache_home, config_home, default_config_path
from voiced.errors import VoicedError

UNIT_NAME = "voiced.service"
WATCHDOG_SEC = 30
# the first start may prepare the default bundle (minutes of conversion); the watchdog only runs after READY=1
TIMEOUT_START = "30min"
# the first line of every unit we write: install overwrites and uninstall removes only files that carry it
MARKER = "# Written by `voiced service install`"

_TEMPLATE = """\
{marker}; `voiced service uninstall` removes it.
[Unit]
Description=voiced: local always-on voice assistant
{documentation}After=pipewire.service pipewire-pulse.service pulseaudio.service

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
{environment}Restart=on-failure
RestartSec=3
# exit 2 is a configuration voiced refuses: restarting cannot fix it, the log line names the fix
RestartPreventExitStatus=2
WatchdogSec={watchdog}
TimeoutStartSec={timeout_start}
TimeoutStopSec=10
# Resource bounds (benchmarks/abuse.py): descriptors well above what max_clients on both doors can take, so a flood
# meets the connection caps and not EMFILE; memory for the largest bundle we ship plus fan-out queues, so a leak
# restarts the daemon instead of swapping the desktop; threads for onnxruntime, Whisper and the executors.
LimitNOFILE=8192
MemoryHigh=6G
MemoryMax=8G
TasksMax=512

# Hardening a user unit can take (user namespaces make the mount options work without privileges).
NoNewPrivileges=yes
ProtectSystem=strict
# created if missing, and the only places the daemon writes: token and config, bundles and models
ConfigurationDirectory=voiced
ConfigurationDirectoryMode=0700
CacheDirectory=voiced
ReadWritePaths={writable}
PrivateTmp=yes
# AF_UNIX for the sound server and sd_notify, AF_INET/6 for the WebSocket server; PortAudio needs no netlink
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictSUIDSGID=yes
LockPersonality=yes
# MemoryDenyWriteExecute stays off: onnxruntime and espeak-ng's ctypes callback run under it, but faster-whisper's
# CTranslate2 JIT-compiles oneDNN kernels and fails ("could not create a primitive"), and ASR bundles need it.
MemoryDenyWriteExecute=no
SystemCallArchitectures=native

[Install]
WantedBy=default.target
"""


class UnitError(VoicedError):
    """The unit cannot be written or removed; the message says what to do."""


@dataclass(frozen=True)
class UnitSpec:
    """Everything that differs between installations; the rest of the unit is fixed policy."""

    exec_start: tuple[str, ...]
    writable: tuple[str, ...] = ("%h/.config/voiced", "%h/.cache/voiced")
    environment: dict[str, str] = field(default_factory=dict)
    documentation: tuple[str, ...] = ()  # URIs for `systemctl --user help voiced`


def render(spec: UnitSpec) -> str:
    env = "".join(f"Environment={_quote(f'{k}={v}')}\n" for k, v in sorted(spec.environment.items()))
    return _TEMPLATE.format(
        marker=MARKER,
        # $VAR expansion applies to the arguments, not to the program path (systemd.service, "Command lines")
        exec_start=" ".join(_quote(a, dollar=i > 0, specifiers=a.startswith("%h/")) for i, a in enumerate(spec.exec_start)),
        environment=env,
        documentation=f"Documentation={' '.join(spec.documentation)}\n" if spec.documentation else "",
        watchdog=WATCHDOG_SEC,
        timeout_start=TIMEOUT_START,
        writable=" ".join(_quote(w, specifiers=w.startswith("%h/")) for w in spec.writable),
    )


def example_unit() -> str:
    """The repository's systemd/voiced.service: a pipx-style install in ~/.local/bin."""
    return render(UnitSpec(exec_start=("%h/.local/bin/voiced", "serve")))


_SAFE = re.compile(r"[A-Za-z0-9_./:=@+,-]+")


def _quote(arg: str, dollar: bool = False, specifiers: bool = False) -> str:
    """systemd expands `%` specifiers everywhere and `$VAR` in ExecStart, so literal text escapes them."""
    if not specifiers:
        arg = arg.replace("%", "%%")
    if dollar:
        arg = arg.replace("$", "$$")
    if _SAFE.fullmatch(arg.replace("%", "").replace("$", "")):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_path() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "systemd" / "user" / UNIT_NAME


def exec_command(config: Path | None = None) -> tuple[str, ...]:
    """The running interpreter's own voiced: the venv's console script, else `python -m voiced`.

    Not resolved through symlinks: a venv's bin/python is a link to the base interpreter, and following it
    would start voiced without the venv's packages. `config` (the file given to `voiced --config`) goes in as
    `--config ABSOLUTE-PATH` before `serve`: the user manager starts voiced in $HOME, not where install ran.
    """
    script = Path(sys.prefix) / "bin" / "voiced"
    if sys.prefix != sys.base_prefix and script.is_file() and os.access(script, os.X_OK):
        program: tuple[str, ...] = (str(script),)
    else:
        program = (sys.executable, "-m", "voiced")
    given = ("--config", str(config_arg(config))) if config is not None else ()
    return (*program, *given, "serve")


def config_arg(config: Path) -> Path:
    """The config path as the unit names it: the file this command read, made absolute against the directory
    install runs in; symlinks kept, so a config linked from elsewhere (a dotfiles checkout) is followed to
    whatever it points at when voiced starts."""
    return config.absolute()


# PrivateTmp=yes gives the service its own empty /tmp and /var/tmp: a config file there is invisible to it
_PRIVATE_TMP = (Path("/tmp"), Path("/var/tmp"))


def hidden_by_private_tmp(path: Path) -> bool:
    """Whether the service, under PrivateTmp=yes, would see an empty directory where `path` lies."""
    for p in {path, path.resolve()}:
        if any(p == t or t in p.parents for t in _PRIVATE_TMP):
            return True
    return False


def spec_for(settings: Settings, config: Path | None = None) -> UnitSpec:
    """The unit for this interpreter, these settings and the config file they were read from (None: default).

    ConfigurationDirectory/CacheDirectory cover the XDG defaults; a custom XDG_*_HOME seen here is passed on
    (the user manager does not share the shell's environment) and, with the token, data and log places the
    settings name, listed as writable so that ProtectSystem=strict does not turn them into EROFS at run time.
    """
    env: dict[str, str] = {}
    writable = ["%h/.config/voiced", "%h/.cache/voiced"]
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        if os.environ.get(var):
            env[var] = str(Path(os.environ[var]).absolute())
    extra = [config_home(), cache_home(), settings.token_path().parent]
    if settings.privacy.data_dir is not None:
        extra.append(settings.privacy.data_dir)
    home = Path.home()
    for p in extra:
        p = p.expanduser().absolute()
        rel = _under(p, home)
        w = f"%h/{rel}" if rel is not None else str(p)
        if w not in writable:
            writable.append(w)
    return UnitSpec(exec_start=exec_command(config), writable=tuple(writable), environment=env, documentation=documentation())


def documentation() -> tuple[str, ...]:
    """The README of the checkout this voiced runs from, when there is one (an editable or `make run` install)."""
    readme = Path(__file__).resolve().parents[1] / "README.md"
    return (readme.as_uri(),) if readme.is_file() else ()


def _under(p: Path, base: Path) -> str | None:
    try:
        rel = p.relative_to(base)
    except ValueError:
        return None
    return rel.as_posix() if str(rel) != "." else None


def writable_dirs(spec: UnitSpec) -> list[Path]:
    home = Path.home()
    return [home / w[3:] if w.startswith("%h/") else Path(w) for w in spec.writable]


def install(settings: Settings, config: Path | None = None) -> int:
    """Write the unit; `config` is the file `voiced --config` was given, which the service must read too."""
    try:
        path, changed = _install(spec_for(settings, config))
    except UnitError as e:
        print(f"voiced: {e}", file=sys.stderr)
        return 1
    print(f"{'wrote' if changed else 'unchanged:'} {path}")
    if config is not None:
        given = config_arg(config)
        print(f"the service reads its configuration from {given} (--config); keep that file there")
        if hidden_by_private_tmp(given):
            print(
                f"voiced: warning: {given} is under /tmp or /var/tmp, which the unit's PrivateTmp=yes hides from the "
                "service, so it would fail to start; move the file elsewhere and run "
                "`voiced --config NEW-PATH service install` again",
                file=sys.stderr,
            )
    else:
        print(f"the service reads its configuration from {default_config_path()} if it exists")
    print("start it now and at every login with:")
    print("  systemctl --user daemon-reload && systemctl --user enable --now voiced")
    print("follow its log with:  journalctl --user -u voiced -f")
    print("to keep it running while you are logged out:  loginctl enable-linger $USER")
    return 0


def _install(spec: UnitSpec) -> tuple[Path, bool]:
    path = unit_path()
    text = render(spec)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise UnitError(f"{path} exists and is not a regular file; remove it and run `voiced service install` again")
    if path.is_file():
        old = _read(path)
        if old == text:
            return path, False
        if MARKER not in old:
            raise UnitError(
                f"{path} exists and was not written by voiced; move it aside (or delete it) and run `voiced service install` again"
            )
    # ReadWritePaths that do not exist make systemd fail with 226/NAMESPACE: create them now, private.
    for d in writable_dirs(spec):
        try:
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise UnitError(f"cannot create {d} ({e.strerror}); create it yourself or fix its parent's permissions") from e
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)  # atomic: systemd never reads half a unit
    except OSError as e:
        raise UnitError(f"cannot write {path} ({e.strerror}); check the permissions of {path.parent}") from e
    return path, True


def uninstall() -> int:
    path = unit_path()
    if not path.exists() and not path.is_symlink():
        print(f"nothing to remove: {path} does not exist")
        return 0
    try:
        ours = path.is_file() and MARKER in _read(path)
    except UnitError as e:
        print(f"voiced: {e}", file=sys.stderr)
        return 1
    if not ours:
        print(f"voiced: {path} was not written by `voiced service install`; remove it yourself if you mean to", file=sys.stderr)
        return 1
    # what `systemctl --user enable` made: removed too, so no dangling link is left for systemd to warn about
    wants = path.parent / "default.target.wants" / UNIT_NAME
    try:
        if wants.is_symlink():
            wants.unlink()
        path.unlink()
    except OSError as e:
        print(f"voiced: cannot remove {e.filename} ({e.strerror}); check the permissions of {path.parent}", file=sys.stderr)
        return 1
    print(f"removed {path}")
    print("if it is running, stop it and let systemd forget it with:")
    print("  systemctl --user stop voiced; systemctl --user daemon-reload")
    return 0


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UnitError(f"cannot read {path} ({e}); move it aside and run `voiced service install` again") from e
