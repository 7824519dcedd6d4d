"""speakable(): what espeak-ng misreads is rewritten; what it reads well (plain numbers, years) is left alone."""

from __future__ import annotations

import pytest

from voiced.speech.normalize import speakable, strip_markdown


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("It costs $5.50 today.", "It costs 5 dollars and 50 cents today."),
        ("$1,200, $1, $0.99", "1,200 dollars, 1 dollar, 99 cents"),
        ("€20 or £3.05 or ¥500", "20 euros or 3 pounds and 5 pence or 500 yen"),
        ("Revenue hit $1.5 million, then $2B.", "Revenue hit 1.5 million dollars, then 2 billion dollars."),
        ("Meet at 10:05, 3:30 pm or 15:00.", "Meet at 10 oh 5, 3 30 p m or 15 hundred."),
        ("Wake at 7 a.m. or 9:00 AM.", "Wake at 7 a m or 9 a m."),
        ("On 2024-05-01 and May 3, 2024.", "On May 1st, 2024 and May 3rd, 2024."),
        ("Drive 5 km at 100 mph.", "Drive 5 kilometers at 100 miles per hour."),
        ("1 kg, 10kg, 25°C, 12.5 GB, 3 GHz", "1 kilogram, 10 kilograms, 25 degrees Celsius, 12.5 gigabytes, 3 gigahertz"),
        ("Add 1/2 cup and 3/4 spoon.", "Add one half cup and three quarters spoon."),
        ("It was -5 degrees; 5-10 people came.", "It was minus 5 degrees; 5 to 10 people came."),
        ("Fruit, e.g. apples, i.e. food, cats vs. dogs, etc.", "Fruit, for example apples, that is food, cats versus dogs, et cetera."),
        ("No. 5 and #1 w/ ~20 people", "number 5 and number 1 with about 20 people"),
        ("Pi is 3.14; 1,000,000 people in 1999.", "Pi is 3.14; 1,000,000 people in 1999."),
        ("See https://www.example.com/path?q=1.", "See example dot com."),
        ("Mail bob@example.org now.", "Mail bob at example dot org now."),
        ("Great job! 🎉👍🏽", "Great job!"),
        ("I ❤️ it", "I it"),
    ],
)
def test_speakable(text: str, spoken: str) -> None:
    assert speakable(text) == spoken


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("**Bold** and *italic* and `code`", "Bold and italic and code"),
        ("[the docs](https://x.org/a) and ![a cat](c.png)", "the docs and a cat"),
        ("# Heading\n> quoted\n- item\n* other\n2. step", "Heading\nquoted\nitem\nother\nstep"),
        ("```python\nprint(1)\n```\nafter", "after"),
        ("~~old~~ new <br> line", "old new line"),
        ("snake_case_name and 2*3*4 stay", "snake_case_name and 2*3*4 stay"),
        ("| a | b |\n|---|---|\n| 1 | 2 |", "a, b\n1, 2"),
    ],
)
def test_markdown(text: str, plain: str) -> None:
    assert " ".join(speakable(strip_markdown(text)).split()) == " ".join(plain.split())


@pytest.mark.parametrize("text", ["", "   ", "🎉🎉", "---", "```\ncode\n```", "**"])
def test_nothing_to_say(text: str) -> None:
    assert speakable(text) == ""
