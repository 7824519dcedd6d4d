"""Whether a finished turn is addressed to the assistant: activation modes, wake phrase, follow-up window, stop.

Pure policy on transcripts and times (no audio, no clock): the pipeline passes `now` (seconds on any monotonic
clock) so tests drive time explicitly.

Modes (ActivationSettings.mode):
- "always": every non-empty turn is a query (a leading wake phrase is stripped from it).
- "wake": a turn is a query when it starts with a wake phrase (the rest is the query), when it comes within
  `query_window_s` after a turn that was the wake phrase alone, or within `follow_up_s` after a reply ended.
- "push": the pipeline only hands over turns captured while the talk button was held, so each is a query.

Encoder-free bundles (the model hears the audio itself, no transcript) decide with `decide_addressed` on the
model's own p(yes) that it was addressed (Assistant.addressed_probability): "wake" answers when p reaches
`model_threshold`, and inside the follow-up or query window without asking the model at all (`wants_score`).

Wake phrases are matched on what the ASR heard, not on audio, so the match is forgiving in the ways Whisper
tiny.en errs: case and punctuation ("Hey, voiced."), a word split or merged ("hey voice it", "heyvoiced"), a
dropped or misheard greeting ("a voiced"), a lost final consonant ("hey voice"). A candidate is a run of the
turn's first words (after an optional filler such as "um" or "okay"); it matches when, compared as crude
sound keys (`_key`), its letters are similar to the phrase's (difflib ratio >= wake_threshold) *and* each
phrase word is similar on its own, so "hey guys" does not pass on the strength of "hey". Whisper also hears "hey voiced" as "hey boys";
that one is a real English phrase and is deliberately not accepted: pass the wake phrase as the recogniser's
hotwords instead (voiced.model.asr), which makes Whisper write the name correctly (benchmarks/turn_taking.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher
from enum import Enum
from itertools import combinations

from voiced.config import ActivationSettings

_WORD = re.compile(r"[\w']+")
# Words people (and Whisper) put before a wake phrase without meaning anything by them.
_LEAD_FILLERS = frozenset({"um", "uh", "umm", "uhm", "er", "erm", "oh", "okay", "ok", "so", "well", "and"})
# Words that may surround a stop word in a stop command ("stop it", "okay cancel that please").
_STOP_FILLERS = frozenset(
    {"please", "now", "it", "that", "this", "ok", "okay", "oh", "just", "right", "talking", "the", "um", "uh", "no", "voiced"}
)
_STOP_MAX_WORDS = 6
_MERGED_MIN = 0.9
_SPLIT_ENDINGS = frozenset({"it", "d", "id", "ed", "t"})
# Wake-word model: less speech than this after the detection means the phrase was said alone.
BARE_WAKE_S = 0.3


@dataclass(frozen=True)
class Decision:
    """`query` is the text to answer (the wake phrase removed); `reason` says which rule decided, for logs."""

    answer: bool
    query: str
    reason: str


class Heard(Enum):
    """What a finished turn is, to the assistant."""

    QUERY = "query"  # addressed to us: answer `query` ("" : the audio itself is the query)
    NOT_ADDRESSED = "not_addressed"  # someone else's conversation, or a wake phrase waiting for its query
    STOP = "stop"  # a stop command: silence whatever is speaking
    NOTHING = "nothing"  # no words were recognised


@dataclass(frozen=True)
class Evidence:
    """All a finished turn tells about whom it is for. `transcript` None: no recogniser (encoder-free bundle: the
    model hears the audio). `wake_model`: the wake-word model is the detector, and `woken_s` (seconds of the
    segment after its detection) is None when it did not fire. `p_addressed`: the model's own scoring pass, run
    only where `Activation.needs_score` says so."""

    transcript: str | None
    pushed: bool = False
    wake_model: bool = False
    woken_s: float | None = None
    p_addressed: float | None = None


@dataclass(frozen=True)
class Addressing:
    heard: Heard
    query: str
    reason: str


@dataclass(frozen=True)
class WakeMatch:
    phrase: str
    score: float
    rest: str  # the turn after the phrase, punctuation at its start removed


def _words(text: str) -> list[re.Match[str]]:
    return list(_WORD.finditer(text.lower()))


def _ratio(a: str, b: str) -> float:
    return SequenceMatcher(None, a, b, autojunk=False).ratio()


def _key(word: str) -> str:
    """A crude sound key, enough for the ways ASR spells a greeting: "hey", "hay", "a" and "eh" all become "e";
    "the" stays "the", so "the voice of reason" is not "hey voiced"."""
    w = re.sub(r"[ae][iy]|ey", "e", word)
    w = w[1:] if w.startswith("h") and len(w) > 1 else w
    return "e" if w == "a" else w


def _phrase_score(cand: list[str], phrase: list[str], raw_cand: str, raw_phrase: str) -> float:
    """Similarity of candidate words to phrase words, both as sound keys: the whole run of letters must be
    similar *and* every phrase word on its own (best split of the candidate into consecutive groups), so "hey
    guys" does not pass on the strength of "hey". One word fewer than the phrase means words run together."""
    whole = _ratio("".join(cand), "".join(phrase))
    if len(cand) < len(phrase):
        # Run-together words ("heyvoiced") must be near-exact: a lone "voiced" (the hotword-biased
        # recogniser writes "A voice from..." so) would otherwise pass on the name alone.
        # Compared as written, not as sound keys, which drop the "h" of "hey".
        return whole if _ratio(raw_cand, raw_phrase) >= _MERGED_MIN else 0.0
    best = 0.0
    for cuts in combinations(range(1, len(cand)), len(phrase) - 1):
        bounds = (0, *cuts, len(cand))
        worst = min(_ratio("".join(cand[a:b]), p) for a, b, p in zip(bounds, bounds[1:], phrase))
        best = max(best, worst)
    return min(whole, best)


def _norm_words(text: str) -> list[str]:
    return [m.group().replace("'", "") for m in _words(text)]


class Activation:
    """Per-turn decisions plus the little state they need: when the last reply ended, whether a bare wake
    phrase is waiting for its query. One instance per conversation (per source), owned by the pipeline."""

    def __init__(self, settings: ActivationSettings) -> None:
        self.settings = settings
        self._phrases = [(p, _norm_words(p)) for p in settings.wake_phrases if _norm_words(p)]
        self._stop = [_norm_words(s) for s in settings.stop_words if _norm_words(s)]
        self._last_reply: float | None = None
        self._woken_at: float | None = None

    # -- events from the pipeline ---------------------------------------------------------------------------

    def replied(self, now: float) -> None:
        """A reply finished playing at `now`: the follow-up window starts here, not when the reply began."""
        self._last_reply = now

    def reset(self) -> None:
        self._last_reply = None
        self._woken_at = None

    def in_follow_up(self, now: float) -> bool:
        return self._last_reply is not None and 0.0 <= now - self._last_reply <= self.settings.follow_up_s

    def awaiting_query(self, now: float) -> bool:
        """The wake phrase was said alone; the next turn is the query if it comes soon enough."""
        return self._woken_at is not None and 0.0 <= now - self._woken_at <= self.settings.query_window_s

    # -- decisions ------------------------------------------------------------------------------------------

    def decide(self, transcript: str, now: float) -> Decision:
        text = transcript.strip()
        if not _words(text):
            return Decision(False, "", "empty")
        mode = self.settings.mode
        wake = self.match_wake(text)
        if mode == "push":
            return Decision(True, wake.rest if wake and wake.rest else text, "push")
        if wake is not None:
            if wake.rest:
                self._woken_at = None
                return Decision(True, wake.rest, "wake")
            self._woken_at = now
            return Decision(False, "", "wake-alone")
        if mode == "always":
            self._woken_at = None
            return Decision(True, text, "always")
        if self.awaiting_query(now):
            self._woken_at = None
            return Decision(True, text, "after-wake")
        self._woken_at = None
        if self.in_follow_up(now):
            return Decision(True, text, "follow-up")
        return Decision(False, "", "not-addressed")

    def wants_score(self, now: float) -> bool:
        """Whether `decide_addressed` needs the model's p(yes) at `now`: only in wake mode outside the follow-up
        and query windows, so that inside them the scoring pass is skipped entirely."""
        return self.settings.mode == "wake" and not self.in_follow_up(now) and not self.awaiting_query(now)

    def decide_addressed(self, p_yes: float | None, now: float) -> Decision:
        """The decision for a turn with no transcript (encoder-free bundle); the audio itself is the query, so
        `query` is "". `p_yes` is None when `wants_score(now)` said no pass was needed."""
        mode = self.settings.mode
        if mode in ("always", "push"):
            return Decision(True, "", mode)
        if self.in_follow_up(now):  # first: inside the window the model was not asked
            self._woken_at = None
            return Decision(True, "", "follow-up")
        if self.awaiting_query(now):
            self._woken_at = None
            return Decision(True, "", "after-wake")
        if p_yes is None:
            raise ValueError("wake mode outside the follow-up window needs p_yes: run Assistant.addressed_probability first")
        if p_yes >= self.settings.model_threshold:
            return Decision(True, "", f"model p={p_yes:.2f}")
        return Decision(False, "", f"not-addressed p={p_yes:.2f}")

    def peek(self, transcript: str, now: float) -> Decision:
        """decide() without its side effects: for speculative work on a turn that is not over yet."""
        saved = (self._last_reply, self._woken_at)
        try:
            return self.decide(transcript, now)
        finally:
            self._last_reply, self._woken_at = saved

    def needs_score(self, pushed: bool, wake_model: bool, now: float) -> bool:
        """Whether `address` wants the model's scoring pass for a turn without a transcript."""
        return not pushed and not wake_model and self.wants_score(now)

    def address(self, e: Evidence, now: float) -> Addressing:
        """The one decision on a finished turn: answer it (and with what), stop, or leave it. Push-to-talk is
        addressed by the button; a stop command works in every mode, even while replying."""
        if e.transcript is None:
            if e.pushed:
                d = Decision(True, "", "push-to-talk")
            elif e.wake_model:
                d = self._woken(None, e.woken_s, now)
            else:
                d = self.decide_addressed(e.p_addressed, now)
            return Addressing(Heard.QUERY if d.answer else Heard.NOT_ADDRESSED, "", d.reason)
        text = e.transcript
        if not text:
            return Addressing(Heard.NOTHING, "", "no-speech")
        if self.is_stop_command(text):
            return Addressing(Heard.STOP, "", "stop-command")
        d = self._woken(text, e.woken_s, now) if e.wake_model else self.decide(text, now)
        if e.pushed and not d.answer:
            wake = self.match_wake(text)
            d = Decision(True, wake.rest if wake and wake.rest else text, "push-to-talk")
        return Addressing(Heard.QUERY if d.answer else Heard.NOT_ADDRESSED, d.query, d.reason)

    def _woken(self, text: str | None, woken_s: float | None, now: float) -> Decision:
        """Wake mode with the wake-word model: the model, not the transcript, says whether the phrase was said;
        a transcript only gives the query, with the phrase cut off by the transcript matcher when it finds it.
        The rules then apply unchanged (a bare phrase waits for its query; follow-up window). Encoder-free
        bundles hear the audio, phrase included, as the query (as they do in wake mode anyway)."""
        phrases = self.settings.wake_phrases
        phrase = phrases[0] if phrases else "hey voiced"
        if text is None:
            if woken_s is None:
                return self.decide_addressed(None, now) if not self.wants_score(now) else Decision(False, "", "not-addressed")
            if woken_s < BARE_WAKE_S:
                return self.decide(phrase, now)  # the phrase alone: the next turn is the query
            return Decision(True, "", "wake-model")
        wake = self.match_wake(text)
        rest = wake.rest if wake is not None else text
        if woken_s is None:  # a phrase in the transcript that the model did not hear does not count
            return self.decide(rest, now) if rest else Decision(False, "", "not-addressed")
        return self.decide(f"{phrase}, {rest}" if rest else phrase, now)

    def match_wake(self, transcript: str) -> WakeMatch | None:
        """The best wake phrase at the start of the turn, or None."""
        spans = _words(transcript)
        toks = [m.group().replace("'", "") for m in spans]
        best: tuple[WakeMatch, int] | None = None
        starts = [0, 1] if toks and toks[0] in _LEAD_FILLERS else [0]
        for phrase, ptoks in self._phrases:
            pkeys = [_key(t) for t in ptoks]
            for s in starts:
                for k in range(max(1, len(ptoks) - 1), len(ptoks) + 2):
                    cand = toks[s : s + k]
                    if len(cand) < k:
                        break
                    score = _phrase_score([_key(t) for t in cand], pkeys, "".join(cand), "".join(ptoks))
                    if score >= self.settings.wake_threshold and (best is None or score > best[0].score):
                        best = (WakeMatch(phrase, score, ""), s + k)
        if best is None:
            return None
        match, end = best
        # Whisper writes a misheard "voiced" as "voice it" / "voice'd": take the stray ending into the phrase.
        if (
            end < len(toks)
            and toks[end] in _SPLIT_ENDINGS
            and match.score < 1.0
            and not transcript[spans[end - 1].end() : spans[end].start()].strip()
        ):
            end += 1
        rest = transcript[spans[end - 1].end() :].lstrip(" \t\n,.;:!?-—…")
        return WakeMatch(match.phrase, match.score, rest.strip())

    def is_stop_command(self, transcript: str) -> bool:
        """A short turn made of a stop word and nothing but politeness ("stop", "cancel that please", "hey
        voiced, stop"). Works in every mode: the pipeline checks it first, even while replying."""
        wake = self.match_wake(transcript)
        toks = _norm_words(wake.rest if wake else transcript)
        if not toks or len(toks) > _STOP_MAX_WORDS:
            return False
        found, i = False, 0
        while i < len(toks):
            hit = next((s for s in self._stop if toks[i : i + len(s)] == s), None)
            if hit is not None:
                found, i = True, i + len(hit)
            elif toks[i] in _STOP_FILLERS:
                i += 1
            else:
                return False
        return found
