"""A bundle on disk, opened: the parsed manifest, the tokenizer, and paths to the graphs.

Why one error type for every way a bundle can be broken: the daemon and the CLI show it to a person, and the fix
is always the same (rebuild the bundle), so the message names the file and that command rather than leaking a
pydantic or onnxruntime traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError
from tokenizers import Tokenizer

from voiced.errors import VoicedError
from voiced.model.integrity import MANIFEST, verify_bundle
from voiced.model.manifest import Manifest


class BundleError(VoicedError):
    """A bundle that cannot be used; the message names the file at fault and how to rebuild the bundle."""

    def __init__(self, bundle: Path, problem: str):
        self.bundle = Path(bundle)
        self.problem = problem
        super().__init__(f"model bundle {self.bundle}: {problem}. Fix: rebuild it with `voiced model prepare {self.bundle.name} --force`")


@dataclass(frozen=True)
class Bundle:
    dir: Path
    manifest: Manifest
    tokenizer: Tokenizer

    def path(self, rel: str) -> Path:
        return self.dir / rel


def _summarise(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:5]:
        loc = ".".join(str(x) for x in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    more = f" (+{e.error_count() - 5} more)" if e.error_count() > 5 else ""
    return "; ".join(parts) + more


def _read_manifest(bundle: Path) -> Manifest:
    path = bundle / MANIFEST
    if not path.is_file():
        raise BundleError(bundle, f"{MANIFEST} is missing")
    try:
        return Manifest.model_validate_json(path.read_text())
    except ValidationError as e:
        # invalid JSON also arrives here (pydantic reports it as a json_invalid error)
        raise BundleError(bundle, f"{MANIFEST} is invalid ({_summarise(e)})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BundleError(bundle, f"{MANIFEST} cannot be read ({e})") from None


def _required_files(m: Manifest) -> list[str]:
    """Files the engine opens, whether or not the manifest's file list names them (it may be empty)."""
    req = [m.decoder.file, m.tokenizer.file, m.tokenizer.chat_template_file]
    if m.drafter is not None:
        req.append(m.drafter.file)
    if m.embeddings is not None:
        req.append(m.embeddings.file)
        if m.embeddings.scale_file:
            req.append(m.embeddings.scale_file)
    return req


def load_bundle(path: Path, verify: bool = False) -> Bundle:
    """Open a bundle: manifest validated, every listed file present with its recorded size (and sha256 when
    `verify`, which costs about a second per GB), tokenizer loaded. The ONNX graphs are loaded by the Engine,
    which turns their load errors into BundleError too."""
    bundle = Path(path).expanduser()
    if not bundle.is_dir():
        raise BundleError(bundle, "the bundle directory does not exist")
    manifest = _read_manifest(bundle)
    missing = [rel for rel in _required_files(manifest) if not (bundle / rel).is_file()]
    if missing:
        raise BundleError(bundle, ", ".join(f"{rel} is missing" for rel in missing))
    if manifest.files:
        problems = verify_bundle(bundle, full=verify)
        if problems:
            raise BundleError(bundle, "; ".join(problems))
    tok_path = bundle / manifest.tokenizer.file
    try:
        tokenizer = Tokenizer.from_file(str(tok_path))
    except Exception as e:  # tokenizers raises a bare Exception for malformed JSON
        raise BundleError(bundle, f"{manifest.tokenizer.file} does not load ({str(e).splitlines()[0]})") from None
    return Bundle(dir=bundle, manifest=manifest, tokenizer=tokenizer)
