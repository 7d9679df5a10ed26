"""Where compass finds its shipped files and keeps its caches.

``REPO_ROOT`` holds ``configs/``; ``CACHE_ROOT`` (``$XDG_CACHE_HOME/compass``, default ``~/.cache/compass``) holds
downloads and the embedding cache, which outlive any one state directory.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "compass"
