"""The Wyoming event translation without sockets: real `wyoming` events in, real protocol messages from the
pipeline, the events a connection must send out (voiced.server.wyoming.translate)."""

from __future__ import annotations

import numpy as np
import pytest
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.handle import Handled, NotHandled
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.pipeline import PipelineStage, RunPipeline
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop
from wyoming.vad import VoiceStarted, VoiceStopped

from protocol import messages as m
from voiced.server.wyoming import translate as tr
from voiced.server.wyoming.translate import MAX_TEXT_CHARS, PONG_TEXT_CHARS, Translator

SRC = "wyoming-7"


def types(events: list[Event]) -> list[str]:
    return [e.type for e in events]


def test_a_spoken_turn_becomes_what_home_assistant_sends_a_satellite() -> None:
    t = Translator(SRC)
    assert t.incoming(RunPipeline(start_stage=PipelineStage.ASR, end_stage=PipelineStage.TTS).event()) is None
    assert (t.mode, t.speak, t.in_progress) == ("turn", True, False)

    (started,) = t.on_message(m.SpeechStarted(t=1.25, source=SRC))
    assert VoiceStarted.is_type(started.type) and VoiceStarted.from_event(started).timestamp == 1250
    (stopped,) = t.on_message(m.SpeechEnded(t_start=1.25, t_end=2.5, source=SRC))
    assert VoiceStopped.from_event(stopped).timestamp == 2500
    assert t.in_progress, "its utterance ended: the peer waits for the answer, so its silence is no idleness"
    (said,) = t.on_message(m.Transcript(text="What time is it?", final=True, source=SRC))
    assert Transcript.from_event(said).text == "What time is it?" and t.pending == "answering"

    assert t.on_message(m.ReplyStarted(reply_id="r1", source=SRC)) == []
    pcm = np.arange(-800, 800, 2, dtype=np.int16)
    first = t.on_audio("r1", pcm, 22050)
    assert types(first) == ["audio-start", "audio-chunk"]
    assert AudioStart.from_event(first[0]).rate == 22050
    chunk = AudioChunk.from_event(first[1])
    assert (chunk.rate, chunk.width, chunk.channels) == (22050, 2, 1)
    assert np.array_equal(np.frombuffer(chunk.audio, "<i2"), pcm)
    assert types(t.on_audio("r1", pcm, 22050)) == ["audio-chunk"], "one audio-start per reply"
    assert types(t.on_audio_end("r1")) == ["audio-stop"]
    assert t.on_audio_end("r1") == [], "the audio closes once"

    (done,) = t.on_message(m.ReplyDone(reply_id="r1", text="It is noon.", interrupted=False, timings_ms={"first_audio": 5.0}))
    handled = Handled.from_event(done)
    assert handled.text == "It is noon."
    assert handled.context == {"voiced": {"reply_id": "r1", "interrupted": False, "timings_ms": {"first_audio": 5.0}}}
    assert not t.in_progress


def test_a_pipeline_that_ends_before_tts_gets_the_text_without_the_audio() -> None:
    t = Translator(SRC)
    t.incoming(RunPipeline(start_stage=PipelineStage.WAKE, end_stage=PipelineStage.HANDLE).event())
    assert (t.mode, t.speak) == ("turn", False)
    t.on_message(m.ReplyStarted(reply_id="r1", source=SRC))
    assert t.on_audio("r1", np.zeros(160, np.int16), 16000) == [] and t.on_audio_end("r1") == []
    assert types(t.on_message(m.ReplyDone(reply_id="r1", text="Hi."))) == ["handled"]


def test_a_text_request_is_asked_in_its_conversation_and_answered_with_its_context() -> None:
    t = Translator(SRC)
    ask = t.incoming(Transcript(text="  Who are you? ", context={"conversation_id": "c1", "x": 1}).event())
    assert ask == tr.Ask("Who are you?", f"{SRC}-1", "wyoming:c1")
    assert t.in_progress
    second = t.incoming(Transcript(text="And then?").event())
    assert second == tr.Ask("And then?", f"{SRC}-2", SRC), "no conversation named: the connection's own"

    assert t.on_message(m.ReplyStarted(reply_id="r9", request_id=f"{SRC}-1", source=SRC)) == []
    assert t.on_audio("r9", np.zeros(160, np.int16), 16000) == [], "Home Assistant speaks a handled answer itself"
    (done,) = t.on_message(m.ReplyDone(reply_id="r9", text="voiced."))
    handled = Handled.from_event(done)
    assert handled.text == "voiced." and handled.context is not None
    assert (handled.context["conversation_id"], handled.context["x"], handled.context["voiced"]["reply_id"]) == ("c1", 1, "r9")

    (refused,) = t.on_message(m.Error(code="busy", message="busy: try again", request_id=f"{SRC}-2"))
    assert NotHandled.is_type(refused.type) and NotHandled.from_event(refused).text == "busy: try again"
    assert not t.in_progress
    assert t.on_message(m.ReplyDone(reply_id="r-other", text="not ours")) == [], "another peer's reply"


def test_an_empty_transcript_is_not_handled_at_once() -> None:
    step = Translator(SRC).incoming(Transcript(text="   ", context={"conversation_id": "c"}).event())
    assert isinstance(step, tr.Send) and NotHandled.is_type(step.event.type)
    assert NotHandled.from_event(step.event).context == {"conversation_id": "c"}


def test_an_ignored_utterance_is_not_handled_and_a_failed_turn_is_an_error() -> None:
    t = Translator(SRC)
    t.incoming(RunPipeline(start_stage=PipelineStage.WAKE, end_stage=PipelineStage.TTS).event())
    assert t.on_message(m.TurnIgnored(source=SRC, reason="not_addressed")) == [], "nothing of ours was heard"
    t.on_message(m.SpeechEnded(t_start=0.0, t_end=1.0, source=SRC))
    (ignored,) = t.on_message(m.TurnIgnored(source=SRC, reason="not_addressed"))
    assert NotHandled.from_event(ignored).text == "not answered: not addressed" and not t.in_progress

    assert t.on_message(m.Error(code="internal", message="someone else's")) == [], "no turn of ours is waiting"
    t.on_message(m.SpeechEnded(t_start=1.0, t_end=2.0, source=SRC))
    (failed,) = t.on_message(m.Error(code="unavailable", message="the model server is down; start it"))
    err = Error.from_event(failed)
    assert (err.code, err.text) == ("unavailable", "the model server is down; start it") and not t.in_progress


def test_requests_become_steps() -> None:
    t = Translator(SRC)
    assert isinstance(t.incoming(Describe().event()), tr.DescribeSelf)
    pong = t.incoming(Ping(text="x" * 1000).event())
    assert isinstance(pong, tr.Send) and Pong.from_event(pong.event).text == "x" * PONG_TEXT_CHARS
    assert isinstance(t.incoming(Transcribe().event()), tr.StartTranscription) and t.mode == "asr"
    assert isinstance(t.incoming(AudioStart(rate=44100, width=3, channels=2).event()), tr.OpenAudio)
    chunk = AudioChunk(rate=16000, width=2, channels=1, audio=bytes(320))
    step = t.incoming(chunk.event())
    assert isinstance(step, tr.Audio) and step.chunk.audio == bytes(320)
    assert isinstance(t.incoming(AudioStop().event()), tr.CloseAudio)
    assert t.incoming(Synthesize(text="Hello.").event()) == tr.Speak("Hello.")
    announce = RunPipeline(start_stage=PipelineStage.TTS, end_stage=PipelineStage.TTS, announce_text="Dinner!")
    assert t.incoming(announce.event()) == tr.Speak("Dinner!")
    assert t.incoming(Event(type="select-program", data={"x": 1})) is None, "unknown events are dropped"


def test_streamed_synthesis_opens_takes_text_and_closes() -> None:
    t = Translator(SRC)
    with pytest.raises(ValueError, match="without synthesize-start"):
        t.incoming(SynthesizeChunk(text="Hi").event())
    assert isinstance(t.incoming(SynthesizeStart().event()), tr.OpenStream)
    with pytest.raises(ValueError, match="while a stream is open"):
        t.incoming(SynthesizeStart().event())
    assert t.incoming(SynthesizeChunk(text="Hello, ").event()) == tr.StreamText("Hello, ")
    assert t.incoming(Synthesize(text="Hello, world.").event()) is None, "inside a stream it repeats the text"
    assert isinstance(t.incoming(SynthesizeStop().event()), tr.CloseStream)
    assert t.incoming(Synthesize(text="Again.").event()) == tr.Speak("Again.")
    t.incoming(SynthesizeStart().event())
    t.stream_closed()
    with pytest.raises(ValueError, match="without synthesize-start"):
        t.incoming(SynthesizeStop().event())


def test_bad_requests_raise_with_their_fix() -> None:
    t = Translator(SRC)
    with pytest.raises(ValueError, match="send shorter text"):
        t.incoming(Synthesize(text="a" * (MAX_TEXT_CHARS + 1)).event())
    with pytest.raises(ValueError, match="send shorter text"):
        t.incoming(Transcript(text="a" * (MAX_TEXT_CHARS + 1)).event())
    with pytest.raises(ValueError, match="needs announce_text"):
        t.incoming(RunPipeline(start_stage=PipelineStage.TTS, end_stage=PipelineStage.TTS).event())
    with pytest.raises(ValueError, match="send a transcript event"):
        t.incoming(RunPipeline(start_stage=PipelineStage.HANDLE, end_stage=PipelineStage.TTS).event())
    assert t.mode == "asr", "a refused run-pipeline changes nothing"
    with pytest.raises(ValueError, match="not supported"):
        t.incoming(AudioStart(rate=16000, width=7, channels=1).event())
    with pytest.raises((KeyError, TypeError, ValueError)):
        t.incoming(Event(type="synthesize", data={}))
