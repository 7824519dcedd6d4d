"""The pure parts of the abuse bounds, without sockets: the waiting-turn policy, the audio cost, loopback checks."""

from __future__ import annotations

import pytest

from voiced.admission import Verdict, WaitingTurns
from voiced.server.limits import REFERENCE_BYTES_PER_S, audio_cost_s, is_loopback


def test_a_new_request_replaces_the_same_sources_waiting_one() -> None:
    w: WaitingTurns[str] = WaitingTurns(max_waiting=3)
    assert w.offer("a", "a1").verdict is Verdict.ADMITTED
    offer = w.offer("a", "a2")
    assert offer.verdict is Verdict.REPLACED and offer.evicted == "a1" and len(w) == 1
    assert not w.started("a1"), "an evicted turn no longer waits"
    assert w.started("a2") and len(w) == 0


def test_the_overall_bound_refuses_other_sources_but_not_a_replacement() -> None:
    w: WaitingTurns[str] = WaitingTurns(max_waiting=2)
    assert [w.offer(s, s + "1").verdict for s in "abc"] == [Verdict.ADMITTED, Verdict.ADMITTED, Verdict.BUSY]
    assert w.offer("a", "a2").verdict is Verdict.REPLACED, "full, but a's own new request takes a's place"
    assert w.withdraw("a") == ["a2"] and len(w) == 1
    assert w.offer("c", "c2").verdict is Verdict.ADMITTED


def test_withdraw_takes_only_what_matches() -> None:
    w: WaitingTurns[tuple[str, str]] = WaitingTurns(max_waiting=4, per_source=2)
    w.offer("a", ("a", "x"))
    w.offer("a", ("a", "y"))
    w.offer("b", ("b", "x"))
    assert w.withdraw("a", lambda t: t[1] == "y") == [("a", "y")]
    assert w.withdraw("a") == [("a", "x")] and w.withdraw("a") == [] and len(w) == 1
    with pytest.raises(ValueError):
        WaitingTurns(max_waiting=0)


def test_costly_formats_are_charged_by_bytes_and_common_ones_by_duration() -> None:
    assert audio_cost_s(32000, 16000, 2, 1) == pytest.approx(1.0)
    assert audio_cost_s(48000 * 2 * 4, 48000, 4, 2) == pytest.approx(1.0), "48 kHz stereo int32: still its duration"
    second = 384000 * 32 * 4
    assert audio_cost_s(second, 384000, 4, 32) == pytest.approx(second / REFERENCE_BYTES_PER_S) and second / REFERENCE_BYTES_PER_S > 100


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True),
                                                ("localhost", True), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False),
                                                ("example.com", False)])  # fmt: skip
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
