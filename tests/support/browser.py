"""Real headless Chromium (Debian's `chromium`) driven by Playwright, with a WAV file as its microphone.

Playwright's own browser downloads are never used (`playwright install` would fetch from the network): the
system Chromium is launched by path. Chromium loops the fake-microphone file, so question WAVs end in a long
silence; the page is driven through its real buttons and read through its own state (`window.voiced`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from playwright.async_api import Browser, Page, async_playwright

from tests.support.speech import compose, write_wav
from tests.support.turn import turn_settings
from voiced.config import Settings

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


def chromium_path() -> str:
    path = shutil.which("chromium") or CHROMIUM
    if not os.access(path, os.X_OK):
        raise RuntimeError("Debian's chromium is needed for the browser tests: apt-get install chromium (scripts/setup.sh test does it)")
    return path


def chromium_args(mic_wav: Path | None) -> list[str]:
    args = [
        "--no-sandbox",
        "--headless",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
    ]
    if mic_wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={mic_wav}")
    return args


def question_wav(directory: Path, text: str = "What is the capital of France?", silence_s: float = 30.0, gain: float = 0.3) -> Path:
    """espeak question then a long silence: the fake microphone loops, and the repeat must not land mid-test.
    espeak is near full scale; `gain` brings it to a microphone's level."""
    rec = compose([0.6, text, silence_s], rate=16000)
    pcm = (rec.pcm.astype(np.float32) * gain).astype(np.int16)
    return write_wav(directory / "question.wav", pcm, 16000)


@asynccontextmanager
async def chromium(mic_wav: Path | None = None) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path(), headless=True, args=chromium_args(mic_wav))
        try:
            yield browser
        finally:
            await browser.close()


def page_settings(tmp_path: Path, token: str, **sections: dict[str, Any]) -> Settings:
    """turn_settings with the token in a 0600 file, as `voiced open` reads it to mint the page's pairing link."""
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    server = {"token_file": str(token_file), **sections.pop("server", {})}
    return turn_settings(server=server, **sections)


def with_port(settings: Settings, port: int) -> Settings:
    """The settings `voiced open` would read for a daemon that bound `port` (tests bind port 0)."""
    return settings.model_copy(update={"server": settings.server.model_copy(update={"port": port})})


async def page_state(page: Page) -> dict[str, Any]:
    return await page.evaluate("() => JSON.parse(JSON.stringify(window.voiced))")


async def wait_state(page: Page, predicate: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """Wait for a JS predicate over `v` (= window.voiced), then return the page state; on timeout the
    assertion shows the state the page was in."""
    try:
        await page.wait_for_function(
            f"() => {{ const v = window.voiced; return v && ({predicate}); }}", timeout=timeout_s * 1000, polling=100
        )
    except Exception as e:  # Playwright's TimeoutError; the page state says why far better than its message
        raise AssertionError(f"page never reached {predicate!r}: {await page_state(page)}") from e
    return await page_state(page)


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    await page.screenshot(path=str(path), full_page=True)
    return path
