"""The errors of the codebook store (infra/codebook/store.py): no codebook published, a malformed version string;
``CodebookError`` and ``EmbedderMismatch`` come from the method (compass/cluster/codebook.py) and are re-exported."""

from __future__ import annotations

from compass.cluster.codebook import CodebookError as CodebookError
from compass.cluster.codebook import EmbedderMismatch as EmbedderMismatch  # re-exported: the watcher's callers catch it
from compass.errors import CompassError


class CodebookNotFound(CodebookError, LookupError):
    """No codebook is published (no pointer), or the version's directory does not exist."""


class CodebookVersionError(CompassError, ValueError):
    """A version string is malformed (only [A-Za-z0-9._-], starting with a letter or digit)."""
