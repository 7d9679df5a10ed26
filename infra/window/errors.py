"""The errors of the monitor windows (infra/window/store.py): a bad argument, a contradicting Redis state, and a
batch assigned with a codebook older than the window's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from compass.errors import CompassError

if TYPE_CHECKING:
    from infra.window.types import ApplyResult


class WindowInputError(CompassError, ValueError):
    """An argument of a window call is invalid; nothing was sent to Redis."""


class WindowStateError(CompassError, RuntimeError):
    """The Redis state of a language contradicts the call or itself; nothing was written."""


class StaleCodebookError(CompassError, RuntimeError):
    """A batch was assigned with a codebook of an older lineage than the window's; nothing was written for it.

    ``stale`` maps language -> the window's (newer) version; ``results`` holds the languages of the same
    ``apply_batch`` that were applied. Fix: reload the codebook (``CodebookWatcher.refresh()``), re-assign
    the batch and apply it again; the languages already applied then report duplicates.
    """

    def __init__(self, given: str, stale: Mapping[str, str], results: Mapping[str, ApplyResult] | None = None):
        self.given = given
        self.stale = dict(stale)
        self.results = dict(results or {})
        langs = ", ".join(f"{lang} (window has {v})" for lang, v in sorted(self.stale.items()))
        super().__init__(
            f"codebook_version {given!r} is of an older lineage than the window of {langs}; reload the current "
            "codebook, re-assign the batch and apply it again"
        )
