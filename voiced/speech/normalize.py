"""Text as a speech engine should read it.

espeak-ng (and Piper, which phonemises with espeak-ng) already reads plain integers, decimals, years, ordinals
("23rd") and percentages well, so those stay digits. What is rewritten here is what it gets wrong: currency
("$5.50" reads "dollar five point five zero"), clock times ("10:05" reads "ten zero five"), ISO dates, units
("5 km" reads "five K M"), fractions, a few abbreviations, negative numbers and ranges. Markdown, emoji and
raw URLs, which a chat model emits despite being told not to, are stripped or read as a person would.
"""

from __future__ import annotations

import re

_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]

# -- markdown ---------------------------------------------------------------------------------------------------
_FENCE_BLOCK = re.compile(r"```.*?(?:```|\Z)", re.S)
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_INLINE_CODE = re.compile(r"`([^`]*)`")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC_STAR = re.compile(r"(?<![\w*])\*(?=\S)([^*]+?)(?<=\S)\*(?![\w*])")
_ITALIC_UNDER = re.compile(r"(?<![\w_])_(?=\S)([^_]+?)(?<=\S)_(?![\w_])")
_STRIKE = re.compile(r"~~(.+?)~~")
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]*", re.M)
_QUOTE = re.compile(r"^[ \t]*>[ \t]?", re.M)
_BULLET = re.compile(r"^[ \t]*[-*+\u2022][ \t]+", re.M)
_NUMBERED = re.compile(r"^[ \t]*\d{1,3}[.)][ \t]+", re.M)
_RULE = re.compile(r"^[ \t]*(?:[-*_=][ \t]*){3,}$", re.M)
_TABLE_SEP = re.compile(r"^[ \t]*\|?[ \t:|-]*-{3,}[ \t:|-]*$", re.M)
_HTML = re.compile(r"</?[A-Za-z][^>]*>")


def strip_markdown(text: str) -> str:
    """Markdown to the words it renders as; code blocks are dropped (code is not something to listen to)."""
    text = _FENCE_BLOCK.sub(" ", text)
    text = text.replace("```", " ")
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _INLINE_CODE.sub(r"\1", text)
    text = _TABLE_SEP.sub("", text)
    text = _RULE.sub("", text)
    text = _HEADING.sub("", text)
    text = _QUOTE.sub("", text)
    text = _BULLET.sub("", text)
    text = _NUMBERED.sub("", text)
    text = _BOLD.sub(r"\2", text)
    text = _STRIKE.sub(r"\1", text)
    text = _ITALIC_STAR.sub(r"\1", text)
    text = _ITALIC_UNDER.sub(r"\1", text)
    text = _HTML.sub(" ", text)
    if "|" in text:
        text = re.sub(r"^[ \t]*\||\|[ \t]*$", "", text, flags=re.M)
        text = re.sub(r"[ \t]*\|[ \t]*", ", ", text)
    text = re.sub(r"\*{1,3}(?=\s|$)|(?<=\s)\*{1,3}|^\*{1,3}", "", text)  # stray emphasis left by a cut clause
    return text


# -- emoji, URLs ------------------------------------------------------------------------------------------------
_EMOJI = re.compile(
    "[\U0001f000-\U0001faff\U00002600-\U000027bf\U00002b00-\U00002bff\U0001f1e6-\U0001f1ff\ufe0e\ufe0f\u200d\u20e3\U000e0020-\U000e007f]+"
)
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"')\]]+", re.I)
_EMAIL = re.compile(r"\b([\w.+-]+)@([\w-]+(?:\.[\w-]+)+)\b")


def _say_domain(host: str) -> str:
    return " dot ".join(p for p in host.split(".") if p)


def _url(m: re.Match[str]) -> str:
    url = m.group(0).rstrip(".,;:!?")
    tail = m.group(0)[len(url) :]
    host = re.sub(r"^(?:https?://)?(?:www\.)?", "", url, flags=re.I).split("/", 1)[0].split("?", 1)[0].split(":", 1)[0]
    return _say_domain(host.lower()) + tail


# -- numbers ----------------------------------------------------------------------------------------------------
_CURRENCY = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "€": ("euro", "euros", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "¥": ("yen", "yen", "", ""),
}
_NUM = r"\d+(?:,\d{3})*"
_MONEY_SCALED = re.compile(r"([$€£¥])\s?(" + _NUM + r"(?:\.\d+)?)\s?(thousand|million|billion|trillion|[kKmMbB]n?)\b")
_MONEY = re.compile(r"([$€£¥])\s?(" + _NUM + r")(?:\.(\d{1,2}))?(?!\d)")
_SCALES = {"k": "thousand", "m": "million", "b": "billion", "bn": "billion", "mn": "million"}


def _money_scaled(m: re.Match[str]) -> str:
    scale = _SCALES.get(m.group(3).lower(), m.group(3).lower())
    return f"{m.group(2)} {scale} {_CURRENCY[m.group(1)][1]}"


def _money(m: re.Match[str]) -> str:
    one, many, sub_one, sub_many = _CURRENCY[m.group(1)]
    whole = m.group(2).replace(",", "")
    sub = int((m.group(3) or "0").ljust(2, "0"))
    parts = []
    if int(whole) or not sub:
        parts.append(f"{m.group(2)} {one if whole == '1' else many}")
    if sub and sub_one:
        parts.append(f"{sub} {sub_one if sub == 1 else sub_many}")
    return " and ".join(parts)


_TIME = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)(?::[0-5]\d)?(?:\s?([AaPp])(?:\.[Mm]\.|[Mm]\b))?")


def _sentence_dot(m: re.Match[str]) -> str:
    """'a.m.' ending the text also ends its sentence: keep the full stop the abbreviation swallowed."""
    return "." if m.group(0).endswith(".") and m.end() == len(m.string) else ""


def _time(m: re.Match[str]) -> str:
    hour, minute, ampm = int(m.group(1)), int(m.group(2)), m.group(3)
    suffix = f" {ampm.lower()} m{_sentence_dot(m)}" if ampm else ""
    if minute == 0:
        return f"{hour}{suffix}" if ampm else (f"{hour} o'clock" if hour <= 12 else f"{hour} hundred")
    if minute < 10:
        return f"{hour} oh {minute}{suffix}"
    return f"{hour} {minute}{suffix}"


_AMPM = re.compile(r"\b(\d{1,2})\s?([AaPp])(?:\.[Mm]\.|[Mm]\b)")


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


_ISO_DATE = re.compile(r"\b(\d{4})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])\b")
_MONTH_DAY = re.compile(r"\b(" + "|".join(_MONTHS) + r")\s+([0-3]?\d)(?![\d:]|st|nd|rd|th)\b")


def _iso_date(m: re.Match[str]) -> str:
    return f"{_MONTHS[int(m.group(2)) - 1]} {_ordinal(int(m.group(3)))}, {m.group(1)}"


_UNITS = {
    "km/h": ("kilometer per hour", "kilometers per hour"),
    "kph": ("kilometer per hour", "kilometers per hour"),
    "mph": ("mile per hour", "miles per hour"),
    "m/s": ("meter per second", "meters per second"),
    "km": ("kilometer", "kilometers"),
    "cm": ("centimeter", "centimeters"),
    "mm": ("millimeter", "millimeters"),
    "mi": ("mile", "miles"),
    "ft": ("foot", "feet"),
    "kg": ("kilogram", "kilograms"),
    "mg": ("milligram", "milligrams"),
    "lb": ("pound", "pounds"),
    "lbs": ("pound", "pounds"),
    "oz": ("ounce", "ounces"),
    "ml": ("milliliter", "milliliters"),
    "mL": ("milliliter", "milliliters"),
    "°C": ("degree Celsius", "degrees Celsius"),
    "°F": ("degree Fahrenheit", "degrees Fahrenheit"),
    "°": ("degree", "degrees"),
    "KB": ("kilobyte", "kilobytes"),
    "kB": ("kilobyte", "kilobytes"),
    "MB": ("megabyte", "megabytes"),
    "GB": ("gigabyte", "gigabytes"),
    "TB": ("terabyte", "terabytes"),
    "Hz": ("hertz", "hertz"),
    "kHz": ("kilohertz", "kilohertz"),
    "MHz": ("megahertz", "megahertz"),
    "GHz": ("gigahertz", "gigahertz"),
    "ms": ("millisecond", "milliseconds"),
    "kW": ("kilowatt", "kilowatts"),
    "kWh": ("kilowatt hour", "kilowatt hours"),
    "hrs": ("hour", "hours"),
    "hr": ("hour", "hours"),
    "min": ("minute", "minutes"),
    "mins": ("minute", "minutes"),
    "sec": ("second", "seconds"),
    "secs": ("second", "seconds"),
}
_UNIT = re.compile(
    r"(?<![\w.])(" + _NUM + r"(?:\.\d+)?)\s?(" + "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True)) + r")(?![\w/])"
)


def _unit(m: re.Match[str]) -> str:
    one, many = _UNITS[m.group(2)]
    return f"{m.group(1)} {one if m.group(1) == '1' else many}"


_FRACTIONS = {
    "1/2": "one half",
    "1/3": "one third",
    "2/3": "two thirds",
    "1/4": "one quarter",
    "3/4": "three quarters",
    "1/8": "one eighth",
    "1/10": "one tenth",
}
_FRACTION = re.compile(r"(?<![\w/])(" + "|".join(re.escape(f) for f in _FRACTIONS) + r")(?![\w/])")
_RANGE = re.compile(r"(?<![\w.-])(" + _NUM + r"(?:\.\d+)?)\s?[-\u2013]\s?(" + _NUM + r"(?:\.\d+)?)(?![\w-])")
_NEGATIVE = re.compile(r"(?<![\w.)\]-])[-\u2212](?=\d)")

_ABBREVIATIONS = [
    (re.compile(r"\be\.\s?g\.(?=\s|,|$)", re.I), "for example"),
    (re.compile(r"\bi\.\s?e\.(?=\s|,|$)", re.I), "that is"),
    (re.compile(r"\betc\.(?=\s*$)"), "et cetera."),
    (re.compile(r"\betc\.", re.I), "et cetera"),
    (re.compile(r"\bvs?\.(?=\s)|\bvs\b", re.I), "versus"),
    (re.compile(r"\bapprox\.(?=\s)", re.I), "approximately"),
    (re.compile(r"\bNo\.\s?(?=\d)"), "number "),
    (re.compile(r"#(?=\d)"), "number "),
    (re.compile(r"\bw/(?=\s)"), "with"),
    (re.compile(r"~\s?(?=\d)"), "about "),
    (re.compile(r"\u00b1"), " plus or minus "),
    (re.compile(r"\u00d7"), " times "),
    (re.compile(r"\s?(?:->|\u2192)\s?"), " to "),
    (re.compile(r"\u2026"), "..."),
]


def speakable(text: str) -> str:
    """What a TTS engine should be given for `text` (a clause or a whole reply); '' when nothing is left to say."""
    text = strip_markdown(text)
    text = _EMOJI.sub(" ", text)
    text = _EMAIL.sub(lambda m: f"{m.group(1)} at {_say_domain(m.group(2))}", text)
    text = _URL.sub(_url, text)
    text = _ISO_DATE.sub(_iso_date, text)
    text = _MONTH_DAY.sub(lambda m: f"{m.group(1)} {_ordinal(int(m.group(2)))}", text)
    text = _MONEY_SCALED.sub(_money_scaled, text)
    text = _MONEY.sub(_money, text)
    text = _TIME.sub(_time, text)
    text = _AMPM.sub(lambda m: f"{m.group(1)} {m.group(2).lower()} m{_sentence_dot(m)}", text)
    text = _FRACTION.sub(lambda m: _FRACTIONS[m.group(1)], text)
    text = _UNIT.sub(_unit, text)
    text = _RANGE.sub(r"\1 to \2", text)
    text = _NEGATIVE.sub("minus ", text)
    for pattern, words in _ABBREVIATIONS:
        text = pattern.sub(words, text)
    text = re.sub(r"\s+", " ", text).strip()
    return text if re.search(r"\w", text) else ""
