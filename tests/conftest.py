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
