"""protocol/: message models, parsing errors, binary framing, the generated schema and PROTOCOL.md examples."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from protocol import framing
from protocol import messages as m
from protocol.schema import SCHEMA_PATH, render

PROTOCOL_MD = Path(m.__file__).with_name("PROTOCOL.md")

CLIENT_SAMPLES = [
    m.Hello(token="x" * 20, name="kitchen", roles=["listener", "microphone"], audio_rate=48000, events=["state"]),
    m.AudioStart(stream=7, rate=44100),
    m.AudioEnd(stream=7),
    m.TextQuery(text="what time is it", request_id="q1"),
    m.Cancel(request_id="q1"),
    m.PushToTalk(pressed=True),
    m.Forget(),
    m.Ping(data="abc"),
    m.ListTimers(),
]
SERVER_SAMPLES = [
    m.Welcome(
        server_version="0.1.0",
        session_id="s1",
        audio_rate=22050,
        limits=m.Limits(max_message_bytes=1024, max_audio_speed=4, audio_burst_s=30, hello_timeout_s=5),
    ),
    m.State(state="thinking", source="local"),
    m.SpeechStarted(t=1.5, source="s1"),
    m.SpeechEnded(t_start=1.5, t_end=2.25, source="s1"),
    m.Transcript(text="hello", final=False, source="s1"),
    m.ReplyStarted(reply_id="r1", request_id="q1", source="s1"),
    m.ReplyDelta(reply_id="r1", text="Hi"),
    m.ReplyAudioStart(reply_id="r1", stream=3, rate=24000),
    m.ReplyAudioEnd(reply_id="r1", stream=3, frames=2, samples=4800),
    m.ReplyDone(reply_id="r1", text="Hi there.", interrupted=True, timings_ms={"first_audio": 412.5}),
    m.Error(code="busy", message="try again", request_id="q1"),
    m.Pong(data="abc"),
    m.TurnIgnored(source="local", reason="not_addressed"),
    m.TimerStarted(id="t1", name="pasta", total_s=480, remaining_s=480, due_at="2026-12-04T19:38:00+01:00"),
    m.TimerUpdated(id="t1", total_s=480, remaining_s=300, active=False, due_at="2026-12-04T19:40:00+01:00"),
    m.TimerCancelled(id="t1", name="pasta"),
    m.TimerFinished(id="r1", kind="reminder", text="call my mother"),
    m.Timers(items=[m.TimerInfo(id="t1", total_s=60, remaining_s=12.5, due_at="2026-12-04T19:38:00+01:00")]),
]


def test_samples_cover_every_type():
    assert {s.type for s in CLIENT_SAMPLES} == set(m.CLIENT_TYPES)
    assert {s.type for s in SERVER_SAMPLES} == set(m.SERVER_TYPES)


@pytest.mark.parametrize("msg", CLIENT_SAMPLES, ids=lambda x: x.type)
def test_client_round_trip(msg):
    assert m.parse_client(msg.to_json()) == msg
    assert m.client_adapter.validate_json(msg.to_json()) == msg


@pytest.mark.parametrize("msg", SERVER_SAMPLES, ids=lambda x: x.type)
def test_server_round_trip(msg):
    assert m.parse_server(msg.to_json()) == msg
    assert m.server_adapter.validate_json(msg.to_json()) == msg


@pytest.mark.parametrize(
    "text, code, needle",
    [
        ("{nope", "bad_json", "not JSON"),
        ("[1, 2]", "bad_json", "JSON object"),
        ('{"text": "hi"}', "unknown_type", "None"),
        ('{"type": "reply_done"}', "unknown_type", "reply_done"),
        ('{"type": "text_query", "text": ""}', "invalid_message", "text"),
        ('{"type": "push_to_talk", "pressed": "maybe"}', "invalid_message", "pressed"),
        ('{"type": "ping", "colour": "red"}', "invalid_message", "colour"),
        ('{"type": "hello", "audio_rate": 44100}', "invalid_message", "audio_rate"),
        ('{"type": "hello", "events": ["speech"]}', "invalid_message", "events"),
        ('{"type": "audio_start", "stream": -1, "rate": 16000}', "invalid_message", "stream"),
    ],
)
def test_client_parse_errors_are_typed(text, code, needle):
    with pytest.raises(m.ProtocolError) as e:
        m.parse_client(text)
    assert e.value.error.code == code
    assert needle in e.value.error.message


def test_parse_error_echoes_request_id():
    with pytest.raises(m.ProtocolError) as e:
        m.parse_client('{"type": "text_query", "text": "", "request_id": "q9"}')
    assert e.value.error.request_id == "q9"


def test_server_parse_ignores_what_a_newer_server_adds():
    assert m.parse_server('{"type": "weather", "sky": "blue"}') is None
    msg = m.parse_server('{"type": "state", "state": "idle", "source": null, "mood": "calm"}')
    assert msg == m.State(state="idle")


# ------------------------------------------------------------------------------------------------ framing


def test_frame_round_trip():
    pcm = np.array([0, 1, -1, 32767, -32768], dtype=np.int16)
    data = framing.pack(framing.FrameKind.MIC_AUDIO, 0xFFFFFFFF, 12345, 48000, pcm)
    assert len(data) == framing.HEADER_SIZE + 2 * len(pcm)
    assert data[:16].hex() == "01010101" + "ffffffff" + "39300000" + "80bb0000"
    f = framing.unpack(data)
    assert (f.kind, f.stream, f.seq, f.rate, f.channels) == (framing.FrameKind.MIC_AUDIO, 0xFFFFFFFF, 12345, 48000, 1)
    np.testing.assert_array_equal(f.pcm(), pcm)


def test_documented_header_example_matches():
    text = PROTOCOL_MD.read_text()
    hexed = re.search(r"`(01 01 01 01 [0-9a-f ]+)`", text).group(1).replace(" ", "")
    assert bytes.fromhex(hexed) == framing.pack_header(framing.FrameKind.MIC_AUDIO, 1, 0, 48000)


@pytest.mark.parametrize(
    "data, needle",
    [
        (b"\x01\x01\x01", "shorter"),
        (bytes([2, 1, 1, 1]) + bytes(12), "version"),
        (bytes([1, 9, 1, 1]) + bytes(12), "kind"),
        (bytes([1, 1, 7, 1]) + bytes(12), "format"),
        (bytes([1, 1, 1, 2]) + bytes(12), "channels"),
        (bytes([1, 1, 1, 1]) + bytes(12) + b"\x00", "even"),
    ],
)
def test_frame_errors_name_the_field(data, needle):
    with pytest.raises(framing.FrameError, match=needle):
        framing.unpack(data)


def test_split_keeps_every_sample():
    pcm = np.arange(1000, dtype=np.int16)
    parts = framing.split(pcm, 300)
    assert [len(p) for p in parts] == [300, 300, 300, 100]
    np.testing.assert_array_equal(np.concatenate(parts), pcm)


# ------------------------------------------------------------------------------------------------ schema, spec


def test_schema_file_is_current():
    assert SCHEMA_PATH.read_text() == render(), "protocol/schema.json is stale; run `python -m protocol.schema`"


def _validator(name: str) -> jsonschema.Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    sub = {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": f"#/$defs/{name}"}
    cls = jsonschema.validators.validator_for(sub)
    cls.check_schema(sub)
    return cls(sub)


def _examples() -> list[tuple[str, dict]]:
    blocks = re.findall(r"```json (client|server)\n(.*?)\n```", PROTOCOL_MD.read_text(), flags=re.S)
    return [(d, json.loads(b)) for d, b in blocks]


def test_protocol_md_examples_validate_against_schema():
    examples = _examples()
    client, server = _validator("ClientMessage"), _validator("ServerMessage")
    for direction, ex in examples:
        (client if direction == "client" else server).validate(ex)
        parse = m.parse_client if direction == "client" else m.parse_server
        assert parse(json.dumps(ex)).type == ex["type"]
    assert {ex["type"] for d, ex in examples if d == "client"} == set(m.CLIENT_TYPES)
    assert {ex["type"] for d, ex in examples if d == "server"} == set(m.SERVER_TYPES)


def test_schema_refuses_what_the_models_refuse():
    client = _validator("ClientMessage")
    with pytest.raises(jsonschema.ValidationError):
        client.validate({"type": "ping", "colour": "red"})
    with pytest.raises(jsonschema.ValidationError):
        client.validate({"type": "hello", "audio_rate": 44100})
    for s in SERVER_SAMPLES:
        _validator("ServerMessage").validate(json.loads(s.to_json()))
    for s in CLIENT_SAMPLES:
        client.validate(json.loads(s.to_json()))
