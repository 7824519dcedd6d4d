"""Property-based fuzzing of client input against the real server: every bad text or binary frame gets a typed
error, the connection carries on, and a well-behaved client connected alongside sees no disturbance."""

from __future__ import annotations

import itertools
import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from protocol import messages as m
from tests.support.server import ServerThread

CLIENT_TYPES = sorted(m.CLIENT_TYPES)
FIELDS = [
    "type",
    "text",
    "request_id",
    "stream",
    "rate",
    "format",
    "channels",
    "pressed",
    "data",
    "token",
    "name",
    "roles",
    "audio_rate",
    "events",
    "audio_format",
    "extra",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
# Messages close to valid ones (a real type, fields of any type) find more than random text alone.
near_messages = st.fixed_dictionaries(
    {"type": st.sampled_from(CLIENT_TYPES + ["", "Ping", "reply_done", "welcome"])},
    optional={k: json_values for k in FIELDS[1:]},
).map(json.dumps)
text_frames = st.one_of(st.text(max_size=200), json_values.map(json.dumps), near_messages)
headers = st.builds(
    lambda v, k, f, c, s, q, r: struct.pack("<BBBBIII", v, k, f, c, s, q, r),
    st.sampled_from([1, 0, 2, 255]),
    st.sampled_from([1, 2, 0, 7]),
    st.sampled_from([1, 0, 2]),
    st.sampled_from([1, 2, 0]),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.sampled_from([16000, 48000, 0, 2**32 - 1]),
)
binary_frames = st.one_of(st.binary(max_size=64), st.tuples(headers, st.binary(max_size=64)).map(lambda t: t[0] + t[1]))


@pytest.fixture(scope="module")
def served():
    with ServerThread(client_queue=64) as st_:
        yield st_


def _client(served: ServerThread, **hello) -> ClientConnection:
    return connect(
        served.url,
        subprotocols=["voiced.v1"],
        additional_headers={"Authorization": f"Bearer {served.token}"},
        open_timeout=10,
        close_timeout=2,
    )


def _hello(ws: ClientConnection, **hello) -> m.Welcome:
    ws.send(m.Hello(**hello).to_json())
    welcome = m.parse_server(ws.recv(timeout=10))
    assert welcome.type == "welcome"
    return welcome


@pytest.fixture(scope="module")
def bystander(served):
    with _client(served) as ws:
        yield ws, _hello(ws, name="bystander")


@pytest.fixture(scope="module")
def fuzzer(served, bystander):
    # Connected after the bystander, so the bystander is there during the whole fuzzing. A microphone client
    # with no stream open: no binary frame it sends can be valid audio.
    with _client(served) as ws:
        _hello(ws, name="fuzzer", roles=["listener", "microphone"])
        yield ws


_pings = itertools.count()


def _send_and_sync(ws: ClientConnection, frame: str | bytes) -> list:
    """Send a frame, then a ping; return every message the server sent before the pong."""
    ws.send(frame)
    tag = f"sync-{next(_pings)}"
    ws.send(m.Ping(data=tag).to_json())
    before = []
    while True:
        msg = m.parse_server(ws.recv(timeout=10))
        if msg == m.Pong(data=tag):
            return before
        before.append(msg)


def _is_valid_client_message(text: str) -> bool:
    try:
        m.parse_client(text)
        return True
    except m.ProtocolError:
        return False


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(frame=text_frames)
def test_bad_text_frames_get_one_typed_error(served, fuzzer, frame):
    replies = _send_and_sync(fuzzer, frame)
    parsed = None
    if _is_valid_client_message(frame):
        parsed = m.parse_client(frame)
    if parsed is None:
        assert len(replies) == 1 and replies[0].type == "error", (frame, replies)
        assert replies[0].code in ("bad_json", "unknown_type", "invalid_message")
    elif parsed.type in ("hello", "audio_end"):  # valid shape, wrong moment: no stream is open, hello was said
        assert [r.type for r in replies] == ["error"] and replies[0].code in ("protocol", "audio_stream")
    elif parsed.type == "ping":
        assert replies == [m.Pong(data=parsed.data)]
    elif parsed.type == "list_timers":  # answered, like ping (the test handler has none running)
        assert replies == [m.Timers(items=[])]
    elif parsed.type == "audio_start":  # close it again so the next binary frames stay invalid
        replies += _send_and_sync(fuzzer, m.AudioEnd(stream=parsed.stream).to_json())
        assert all(r.type == "error" and r.code in ("audio_format", "audio_stream") for r in replies)
    else:
        assert replies == []


@FUZZ
@given(frame=binary_frames)
def test_bad_binary_frames_get_one_typed_error(served, fuzzer, frame):
    replies = _send_and_sync(fuzzer, frame)
    assert len(replies) == 1 and replies[0].type == "error", (frame.hex(), replies)
    assert replies[0].code in ("bad_frame", "audio_stream")


def test_bystander_saw_no_disturbance(served, fuzzer, bystander):
    """Runs after the fuzzing above (same module fixtures): the daemon and the other client are fine."""
    ws, welcome = bystander
    served.server.broadcast(m.State(state="idle", source="fuzz-check"))
    assert m.parse_server(ws.recv(timeout=10)) == m.State(state="idle", source="fuzz-check")
    ws.send(m.Ping(data="ok").to_json())
    assert m.parse_server(ws.recv(timeout=10)) == m.Pong(data="ok")  # nothing else was ever sent to it
    assert welcome.session_id in served.server.clients
    assert len(served.server.clients) == 2
    # the fuzzer's valid control messages reached the pipeline seam; none came from the bystander
    assert all(call[1] != welcome.session_id for call in served.handler.calls)
