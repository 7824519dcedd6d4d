"""The segmenter on espeak-ng speech with known boundaries (real webrtcvad, nothing mocked)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.speech import Recording, compose, espeak, noise
from voiced.audio.vad import (
    Event,
    Segmenter,
    SpeechDiscarded,
    SpeechEnded,
    SpeechFrames,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
)
from voiced.config import AudioSettings

TOL = 0.15  # seconds, on each boundary


def run(pcm: np.ndarray, settings: AudioSettings | None = None, block: int = 480, seg: Segmenter | None = None) -> list[Event]:
    seg = seg or Segmenter(settings or AudioSettings())
    out: list[Event] = []
    for i in range(0, len(pcm), block):
        out += seg.feed(pcm[i : i + block])
    return out + seg.flush()


def turns(events: list[Event]) -> list[SpeechEnded]:
    return [e for e in events if isinstance(e, SpeechEnded)]


@pytest.fixture(scope="module")
def three() -> Recording:
    return compose([0.8, "Hello there, how are you today?", 1.5, "Turn on the kitchen lights please.", 1.2, "What time is it?", 1.0])


def test_every_utterance_found_once_with_tight_boundaries(three: Recording) -> None:
    settings = AudioSettings()
    found = turns(run(three.pcm, settings))
    assert len(found) == len(three.segments), [(e.t_start, e.t_end) for e in found]
    pre = settings.pre_roll_ms / 1000
    for e, (s, end) in zip(found, three.segments):
        assert abs(e.t_start - s) <= TOL and abs(e.t_end - end) <= TOL, (e.t_start, e.t_end, s, end)
        assert e.reason == "silence" and e.source == "local"
        # The audio starts one pre-roll before the onset and holds the whole utterance.
        assert len(e.audio) / 16000 >= (end - s) + pre - 2 * TOL
        first = round((e.t_start - pre) * 16000)
        assert np.array_equal(e.audio[:1000], three.pcm[first : first + 1000])


def test_event_grammar_and_frames_rebuild_the_audio(three: Recording) -> None:
    events = run(three.pcm)
    open_: SpeechStarted | None = None
    frames: list[np.ndarray] = []
    last_t = -1.0
    paused = False
    for ev in events:
        t = ev.t_start if isinstance(ev, SpeechEnded) else ev.t
        if isinstance(ev, SpeechStarted):
            assert open_ is None
            open_, frames, paused = ev, [], False
            assert len(ev.pre_roll) == 300 * 16
        elif isinstance(ev, SpeechFrames):
            assert open_ is not None and ev.t >= last_t
            assert ev.t == pytest.approx(open_.t + sum(len(f) for f in frames) / 16000)
            frames.append(ev.pcm)
            last_t = ev.t
        elif isinstance(ev, SpeechPaused):
            assert open_ is not None and not paused
            paused = True
        elif isinstance(ev, SpeechResumed):
            assert open_ is not None and paused
            paused = False
        else:
            assert isinstance(ev, SpeechEnded) and open_ is not None
            assert t == open_.t and paused  # a silence ending is always preceded by its pause
            assert np.array_equal(np.concatenate(frames), ev.audio[len(open_.pre_roll) :])
            assert np.array_equal(ev.audio[: len(open_.pre_roll)], open_.pre_roll)
            open_ = None
    assert open_ is None


@pytest.mark.parametrize("block", [1, 7, 480, 1000, 10**7])
def test_block_size_does_not_change_the_result(three: Recording, block: int) -> None:
    pcm = three.pcm[: 16000 * 3] if block == 1 else three.pcm
    ref = [(e.t_start, e.t_end) for e in turns(run(pcm, block=480))]
    got = [(e.t_start, e.t_end) for e in turns(run(pcm, block=block))]
    assert got == ref and got


@pytest.mark.parametrize(
    "name",
    ["white-45", "white-30", "white-20", "hum50", "hum60-loud"],
)
def test_noise_only_gives_no_turn(name: str) -> None:
    n = np.arange(16000 * 8) / 16000
    pcm = {
        "white-45": lambda: noise(8, -45),
        "white-30": lambda: noise(8, -30),
        "white-20": lambda: noise(8, -20, seed=3),
        "hum50": lambda: (3000 * np.sin(2 * np.pi * 50 * n) + 1000 * np.sin(2 * np.pi * 150 * n)).astype(np.int16),
        "hum60-loud": lambda: (12000 * np.sin(2 * np.pi * 60 * n) + 3000 * np.sin(2 * np.pi * 180 * n) + noise(8, -40)).astype(np.int16),
    }[name]()
    events = run(pcm)
    assert not [e for e in events if isinstance(e, (SpeechEnded, SpeechStarted))]


@pytest.mark.parametrize("text", ["What is the capital of France?", "Set a timer for five minutes.", "How many legs does a spider have?"])
def test_speech_after_digital_silence_starts_at_its_first_sound(text: str) -> None:
    # Zeros give the noise gate no floor; the onset used to come ~0.4 s late (past the pre-roll: the first word lost).
    rec = compose([0.5, text, 1.0], noise_dbfs=None, wpm=175)
    events = run(rec.pcm)
    found = turns(events)
    assert len(found) == 1
    assert abs(found[0].t_start - rec.segments[0][0]) <= 0.05, (found[0].t_start, rec.segments[0])
    started = [e for e in events if isinstance(e, SpeechStarted)][0]
    assert len(started.pre_roll) == 300 * 16  # the full pre-roll of zeros before the first sound
    assert np.concatenate([started.pre_roll] + [e.pcm for e in events if isinstance(e, SpeechFrames)]).size == found[0].audio.size


@pytest.mark.parametrize("text", ["How many legs does a spider have?", "What is the capital of France?"])
def test_a_stream_that_opens_on_speech_keeps_its_first_word(text: str) -> None:
    # A WAV question cut to its first syllable: no noise and no zeros before it to learn a floor from. The gate
    # opened 0.5-0.8 s in ("How many legs ..." was heard as "Next, let us either have."); now the turn starts
    # where the stream does.
    rec = compose([text, 1.0], noise_dbfs=None)
    assert rec.segments[0][0] == 0.0
    found = turns(run(rec.pcm))
    assert len(found) == 1 and found[0].t_start <= 0.05, (found[0].t_start, rec.segments[0])
    assert np.array_equal(found[0].audio[:480], rec.pcm[:480])  # the stream's very first frame is in the turn


@pytest.mark.parametrize("dbfs", [-45, -30, -20])
def test_noise_switching_on_after_zeros_starts_no_turn(dbfs: float) -> None:
    # The backdating only moves an onset the gate already accepted: a stream of zeros that turns into loud noise
    # (a device opening) is still no turn.
    pcm = np.concatenate([np.zeros(16000, np.int16), noise(6, dbfs, seed=3)])
    assert not [e for e in run(pcm) if isinstance(e, (SpeechEnded, SpeechStarted))]


def test_speech_in_steady_noise_is_still_found() -> None:
    rec = compose([1.5, "Turn on the kitchen lights please.", 1.5], noise_dbfs=-35.0)
    n = np.arange(len(rec.pcm)) / 16000
    pcm = (rec.pcm + 600 * np.sin(2 * np.pi * 50 * n)).clip(-32768, 32767).astype(np.int16)
    found = turns(run(pcm))
    assert len(found) == 1
    assert abs(found[0].t_start - rec.segments[0][0]) <= TOL and abs(found[0].t_end - rec.segments[0][1]) <= TOL


def test_max_length_splits_continuous_speech() -> None:
    rec = compose([0.5, "This is a long sentence that keeps on going for quite a while without any pause at all.", 1.0])
    settings = AudioSettings(max_segment_s=2.0)
    events = run(rec.pcm, settings)
    found = turns(events)
    assert [e.reason for e in found[:-1]] == ["max_length"] * (len(found) - 1) and len(found) >= 2
    assert found[-1].reason == "silence"
    for a, b in zip(found, found[1:]):
        assert b.t_start == pytest.approx(a.t_end)  # the next piece starts where the last was cut
        assert a.t_end - a.t_start == pytest.approx(2.0, abs=0.031)
    starts = [e for e in events if isinstance(e, SpeechStarted)]
    assert len(starts) == len(found) and all(len(s.pre_roll) == 0 for s in starts[1:])
    assert found[0].t_start == pytest.approx(rec.segments[0][0], abs=TOL)
    assert found[-1].t_end == pytest.approx(rec.segments[0][1], abs=TOL)
    total = sum(len(e.audio) for e in found) - 300 * 16
    assert abs(total - (len(rec.pcm) - 0.5 * 16000 + 0.0)) < 16000  # nothing duplicated, little lost


def test_min_speech_drops_short_sounds() -> None:
    ah = espeak("ah")
    burst = ah[: int(0.2 * 16000)]
    click = np.zeros(16000, np.int16)
    click[8000:8080] = 20000
    quiet = np.concatenate([np.zeros(8000, np.int16), burst, np.zeros(16000, np.int16), click])
    pcm = (quiet + noise(len(quiet) / 16000, -60)[: len(quiet)]).astype(np.int16)
    events = run(pcm, AudioSettings(min_speech_ms=300))
    assert not turns(events)
    started = [e for e in events if isinstance(e, SpeechStarted)]
    discarded = [e for e in events if isinstance(e, SpeechDiscarded)]
    assert len(started) == 1 and len(discarded) == 1 and discarded[0].t == started[0].t
    # The same sound counts as a turn when the threshold allows it.
    assert len(turns(run(pcm, AudioSettings(min_speech_ms=100)))) == 1


def test_mute_drops_the_open_segment_and_ignores_audio(three: Recording) -> None:
    seg = Segmenter(AudioSettings())
    s0, e0 = three.segments[0]
    mid = int((s0 + e0) / 2 * 16000)
    events = seg.feed(three.pcm[:mid])
    assert isinstance(events[0], SpeechStarted) and seg.in_speech
    seg.muted = True
    assert seg.muted and not seg.in_speech
    dropped = seg.feed(three.pcm[mid : int(three.segments[1][1] * 16000)])  # the 2nd utterance, while muted
    assert dropped == [SpeechDiscarded("local", events[0].t)]
    seg.muted = False
    rest = seg.feed(three.pcm[int(three.segments[1][1] * 16000) :]) + seg.flush()
    found = turns(rest)
    assert len(found) == 1  # only the third utterance, on the same clock
    assert found[0].t_start == pytest.approx(three.segments[2][0], abs=TOL)


def test_hangover_is_settable_and_merges_close_utterances(three: Recording) -> None:
    seg = Segmenter(AudioSettings())
    seg.hangover_ms = 2000
    found = turns(run(three.pcm, seg=seg))
    assert len(found) == 1  # gaps of 1.5 and 1.2 s are now pauses inside one turn
    assert found[0].t_start == pytest.approx(three.segments[0][0], abs=TOL)
    assert found[0].t_end == pytest.approx(three.segments[-1][1], abs=TOL)
    assert found[0].reason == "flush"  # the file ends 1.0 s after the speech, inside the 2 s hangover
    with pytest.raises(ValueError, match="at least one frame"):
        seg.hangover_ms = 5


def test_flush_closes_speech_at_end_of_input_and_reset_restarts_clock() -> None:
    rec = compose([0.6, "What time is it?"])
    seg = Segmenter(AudioSettings())
    events = seg.feed(rec.pcm[:-100])  # a partial frame stays pending
    events += seg.flush()
    found = turns(events)
    assert len(found) == 1 and found[0].reason == "flush"
    assert found[0].t_end == pytest.approx(rec.segments[0][1], abs=TOL)
    seg.reset()
    again = turns(seg.feed(rec.pcm) + seg.flush())
    assert again[0].t_start == pytest.approx(found[0].t_start)


def test_feed_refuses_float_audio() -> None:
    with pytest.raises(TypeError, match="int16"):
        Segmenter(AudioSettings()).feed(np.zeros(480, np.float32))


# -- the voice detector (audio.vad) and push-to-talk hold ------------------------------------------------------


def test_stepping_noise_opens_no_turn_with_silero_and_speech_after_it_is_found() -> None:
    from tests.support.noise import music, stepping_noise

    bed = stepping_noise(60.0, seed=0)
    # The control: webrtcvad + the gate take the level steps for voice, so the noise is a real test.
    assert len(turns(run(bed, AudioSettings(vad="webrtc")))) >= 3
    for detector in ("both", "silero"):
        assert turns(run(bed, AudioSettings(vad=detector))) == [], detector
        assert turns(run(music(20.0, seed=1), AudioSettings(vad=detector))) == [], detector
    rec = compose([0.2, "What is the capital of France?", 1.5], noise_dbfs=None, seed=2)
    mixed = stepping_noise(8.0 + rec.duration_s, seed=5, hi_dbfs=-34.0).astype(np.int32)
    mixed[8 * 16000 : 8 * 16000 + len(rec.pcm)] += rec.pcm
    s, e = rec.segments[0]
    for detector in ("both", "silero"):
        found = turns(run(mixed.clip(-32768, 32767).astype(np.int16), AudioSettings(vad=detector)))
        assert len(found) == 1, (detector, [(t.t_start, t.t_end) for t in found])
        assert abs(found[0].t_start - (8 + s)) <= 2 * TOL and found[0].t_end >= 8 + e - TOL, (detector, found[0].t_start, found[0].t_end)


def test_both_detectors_keep_webrtc_pauses_inside_a_turn(three: Recording) -> None:
    # Silero's score lags the end of a word; with "both" the pauses (and so the end of turn) stay webrtcvad's.
    def pauses(detector: str) -> list[float]:
        return [round(e.t, 2) for e in run(three.pcm, AudioSettings(vad=detector)) if isinstance(e, SpeechPaused)]

    assert pauses("both") == pauses("webrtc")


def test_a_held_segmenter_ends_no_turn_at_a_pause_and_flush_ends_it() -> None:
    rec = compose([0.4, "What is the capital of", 2.0, "France?", 1.5])
    seg = Segmenter(AudioSettings())
    seg.held = True
    events: list[Event] = []
    for i in range(0, len(rec.pcm), 480):
        events += seg.feed(rec.pcm[i : i + 480])
    assert turns(events) == [] and seg.in_speech and seg.silence_s > 1.0
    seg.held = False
    ended = turns(events + seg.flush())
    assert len(ended) == 1 and ended[0].reason == "flush"
    assert abs(ended[0].t_start - rec.segments[0][0]) <= TOL and abs(ended[0].t_end - rec.segments[1][1]) <= TOL
