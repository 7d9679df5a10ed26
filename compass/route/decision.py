"""Is a query's language served? The one rule that routing, serving and the consumers share (§3.2.5).

"Identify the language, use its adapter, fall back to the base model when there is none": a query belongs to a
configured language only when the identifier says that language (or the caller set it). A language outside the
configuration is reported as itself and is *unserved*: the router sends it to the base model, the consumers
count it as unserved traffic and never put it in a configured language's monitor window. ``und`` (the identifier
could not tell) is unserved the same way.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from compass.langid import UND, Identification

SERVED, UNDETERMINED, NOT_CONFIGURED = "served", "undetermined", "not_configured"


@dataclass(frozen=True, slots=True)
class Served:
    """The language a query is in, whether a configured language serves it, and why not when it does not."""

    language: str
    confidence: float
    served: bool
    reason: str  # served | undetermined | not_configured


def classify(ident: Identification, configured: Collection[str]) -> Served:
    """``ident``'s language against the configured (enabled) languages."""
    if ident.lang == UND:
        return Served(UND, float(ident.confidence), False, UNDETERMINED)
    if ident.lang not in configured:
        return Served(ident.lang, float(ident.confidence), False, NOT_CONFIGURED)
    return Served(ident.lang, float(ident.confidence), True, SERVED)


__all__ = ["NOT_CONFIGURED", "SERVED", "UNDETERMINED", "Served", "classify"]
