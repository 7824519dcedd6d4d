"""`voiced devices`: what PortAudio sees, so that a user can pick --input-device / --output-device."""

from __future__ import annotations

import sys

_NO_DEVICES_FIX = (
    "no audio devices: PortAudio sees no sound card and no sound server.\n"
    "Fix: start PulseAudio or PipeWire (apt-get install pulseaudio && pulseaudio --start), or plug in a sound card;\n"
    "a daemon without audio devices still serves WebSocket clients with --input-device none --output-device none."
)


def print_devices() -> int:
    """List input and output devices with their index, channels and native rate; '*' marks the defaults."""
    try:
        import sounddevice as sd
    except OSError as e:
        print(f"voiced: PortAudio is not available ({e}); install it: apt-get install libportaudio2", file=sys.stderr)
        return 1
    devices = sd.query_devices()
    if len(devices) == 0:
        print(_NO_DEVICES_FIX, file=sys.stderr)
        return 1
    default_in, default_out = sd.default.device
    for title, kind, default in (("input", "max_input_channels", default_in), ("output", "max_output_channels", default_out)):
        rows = [d for d in devices if d[kind] > 0]
        print(f"{title} devices:")
        if not rows:
            print("  (none)")
        for d in rows:
            mark = "*" if d["index"] == default else " "
            api = sd.query_hostapis(d["hostapi"])["name"]
            print(f"  {mark} {d['index']:>3}  {d['name']}  ({api}, {d[kind]} ch, {d['default_samplerate']:.0f} Hz)")
    print("* = default; pick one with --input-device / --output-device NAME-OR-INDEX, or set audio.input_device in config.toml")
    return 0
