"""`voiced serve`: wires source -> pipeline -> sinks, runs until SIGINT/SIGTERM, tells systemd how it is."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from voiced.config import Settings
from voiced.notify import Notifier
from voiced.startup import PortBusy, check_listen_ports, device_logger, in_daemon_thread

if TYPE_CHECKING:
    from voiced.brain import Brain
    from voiced.pipeline import Pipeline

log = logging.getLogger("voiced")


def serve(settings: Settings) -> int:
    try:
        return asyncio.run(_serve(settings))
    except KeyboardInterrupt:
        return 0


async def _serve(settings: Settings) -> int:
    from voiced.brain import make_brain
    from voiced.config import ConfigError
    from voiced.model import store
    from voiced.model.bundle import BundleError, load_bundle
    from voiced.model.integrity import BundleIntegrityError
    from voiced.pipeline import LOCAL, Pipeline
    from voiced.server.auth import load_or_create_token
    from voiced.server.http import make_http_handler
    from voiced.server.ws import VoicedServer
    from voiced.server.wyoming import wyoming_endpoint
    from voiced.speech.playback import Playback
    from voiced.speech.tts import make_tts

    notify = Notifier()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    try:
        check_listen_ports(settings)  # before the model load: a busy port is known in milliseconds, not seconds
    except PortBusy as e:
        log.error("%s", e)
        return 1
    t0 = time.monotonic()
    notify.send("STATUS=loading model")
    log.info("loading model %s", settings.model.bundle)

    async def load() -> tuple[Path, Brain]:
        bundle_dir = await in_daemon_thread(store.ensure_prepared, settings.model.bundle)
        bundle = await in_daemon_thread(load_bundle, bundle_dir)
        act = settings.activation
        hotwords = ", ".join(act.wake_phrases) if act.mode == "wake" else None
        return bundle_dir, await in_daemon_thread(make_brain, settings, bundle, None, hotwords)

    loading, stopped = asyncio.ensure_future(load()), asyncio.ensure_future(stop.wait())
    await asyncio.wait({loading, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not loading.done():  # SIGTERM / Ctrl-C while loading: stop now, not when the load is over
        log.info("stopping while the model loads")
        notify.send("STOPPING=1")
        loading.cancel()
        return 0
    stopped.cancel()
    try:
        bundle_dir, assistant = loading.result()
    except (BundleError, store.PrepareError, BundleIntegrityError, ConfigError) as e:
        log.error("%s", e)
        return 1
    tts = make_tts(settings.tts)
    playback = None if settings.audio.output_device == "none" else Playback(settings.audio, on_state=device_logger("speaker"))
    pipeline = Pipeline(settings, assistant, tts, playback)
    await pipeline.warm_up()
    log.info("model %s loaded in %.1f s", bundle_dir.name, time.monotonic() - t0)

    token = load_or_create_token(settings.token_path())
    server = VoicedServer(
        settings.server, pipeline, token, http_handler=make_http_handler(settings.server), activation=settings.activation.mode
    )
    pipeline.add_publisher(server)
    tasks: list[asyncio.Task[None]] = []
    try:
        await server.start()
    except OSError as e:
        log.error(
            "cannot listen on %s:%s (%s). Fix: stop what holds the port (another voiced? `systemctl --user stop "
            "voiced`) or choose another with --port / server.port",
            settings.server.host,
            settings.server.port,
            e.strerror or e,
        )
        await pipeline.aclose()
        return 1
    try:
        async with wyoming_endpoint(settings.server.wyoming, pipeline):  # None: no Wyoming
            log.info("serving %s (token in %s); Ctrl-C stops", server.url, settings.token_path())
            if settings.audio.input_device != "none":
                tasks.append(asyncio.create_task(_microphone(settings, pipeline, LOCAL)))
            interval = notify.watchdog_interval()
            if interval:
                tasks.append(asyncio.create_task(_watchdog(notify, interval)))
            notify.send("READY=1", f"STATUS=serving {server.url}")
            await stop.wait()
            log.info("stopping")
            notify.send("STOPPING=1")
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pipeline.aclose(), 1.0)
            if playback is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(playback.aclose(), 0.5)
    finally:
        await server.stop()
    return 0


async def _microphone(settings: Settings, pipeline: Pipeline, source: str) -> None:
    from voiced.audio.capture import MicSource

    mic = MicSource(settings.audio)  # it logs its own state changes, once each
    try:
        async for chunk in mic:
            await pipeline.feed(source, chunk.pcm)
    finally:
        await mic.aclose()


async def _watchdog(notify: Notifier, interval: float) -> None:
    # Sent from the event loop itself: a hung loop stops the pings and systemd restarts us.
    while True:
        notify.send("WATCHDOG=1")
        await asyncio.sleep(interval)
