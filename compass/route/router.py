"""Query -> adapter routing (§3.2.5).

"When an input comes in, we detect its language using an inexpensive language ID model. Based on the detected
language, we attach the corresponding adapter." Fallbacks, in order:

  * the language is undetermined or not configured (``compass.route.decision.classify``: a language outside
    the configuration is reported as itself, e.g. ``ca``), or no adapter is promoted for it -> the base model;
  * the language's current adapter was trained on its target data alone (no usage proxy E_t yet, manifest
    ``kind == "target_only"``) -> that target-only adapter;
  * otherwise its COMPASS adapter (D_t + the §3.1 selection), the registry's current version.

The registry's ``current`` pointers are read into an in-memory table by ``refresh``; ``route`` never touches the
registry, so a request costs one language-ID call and one dict lookup. The table is an immutable mapping replaced
whole (one reference assignment), so readers on other threads see the old table or the new one, never a mix.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal, Protocol

from compass import langcodes
from compass.errors import CompassError
from compass.langid import UND, Identification, LanguageIdentifier
from compass.route.decision import NOT_CONFIGURED, UNDETERMINED, classify

if TYPE_CHECKING:
    from compass.adapt_settings import AdaptersConfig
    from compass.langid_config import LangIdConfig
    from compass.languages import LanguagesConfig
    from compass.registry import AdapterRegistry

log = logging.getLogger(__name__)

Kind = Literal["compass", "target_only", "base"]
KINDS: tuple[str, ...] = ("compass", "target_only", "base")
MANIFEST = "manifest.json"


class RouterSettings(Protocol):
    """The sections of the service settings a router is built from (``infra.settings.ServiceConfig`` has them);
    a protocol, so the method does not import the I/O layer."""

    @property
    def langid(self) -> LangIdConfig: ...

    @property
    def adapters(self) -> AdaptersConfig: ...


class RouteError(CompassError, ValueError):
    """A routing request is invalid (e.g. a ``lang`` override that is not a language code)."""


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """The adapter serving one language: its registry version and manifest kind."""

    version: str
    kind: Kind


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where one query goes. ``adapter``/``version`` are None when the base model answers (``kind == "base"``)."""

    language: str
    confidence: float
    adapter: str | None
    version: str | None
    kind: Kind
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {"language": self.language, "confidence": self.confidence, "adapter": self.adapter,
                "version": self.version, "kind": self.kind, "reason": self.reason}


def normalize_lang(lang: object, field: str = "lang") -> str:
    """A caller-given language code in compass's scheme; ``und`` is refused (omit the field to detect instead)."""
    try:
        code = langcodes.normalize(lang)  # type: ignore[arg-type]
    except (ValueError, TypeError) as e:
        raise RouteError(f"{field} {lang!r} is not a language code ({e}); give an ISO 639 code such as 'en' or "
                         f"omit {field} to detect the language") from None
    if code == UND:
        raise RouteError(f"{field} {lang!r} is 'undetermined'; give a language code or omit {field} to detect it")
    return code


class Router:
    """Language ID + a cached table of current adapters. Thread-safe: ``route`` may run on many threads while
    ``refresh``/``set_target`` replace the table."""

    def __init__(self, identifier: LanguageIdentifier, registry: AdapterRegistry | None,
                 languages: Sequence[str]):
        self.identifier = identifier
        self.registry = registry
        self.languages: tuple[str, ...] = tuple(dict.fromkeys(normalize_lang(c, "languages[]") for c in languages))
        self._table: Mapping[str, RouteTarget] = MappingProxyType({})
        self._write = threading.Lock()  # serialises table writers; readers take no lock

    @classmethod
    def from_config(cls, cfg: RouterSettings, languages: LanguagesConfig, refresh: bool = True) -> Router:
        """The configured identifier (the enabled languages break its near-ties) over ``cfg.adapters.registry``."""
        from compass.langid import make_identifier
        from compass.registry import AdapterRegistry

        enabled = languages.enabled
        router = cls(make_identifier(cfg.langid, enabled), AdapterRegistry(cfg.adapters.registry), enabled)
        if refresh:
            router.refresh()
        return router

    # ----- the table -----
    @property
    def table(self) -> Mapping[str, RouteTarget]:
        """The current table, language -> RouteTarget (a read-only snapshot)."""
        return self._table

    def read_target(self, lang: str) -> RouteTarget | None:
        """The registry's current adapter of ``lang`` (None when nothing is promoted); reads the registry."""
        if self.registry is None:
            return None
        version = self.registry.current(lang)
        if version is None:
            return None
        from compass.registry import AdapterManifest

        raw = self.registry.read_file(lang, version, MANIFEST)  # the manifest alone, not the weights
        manifest = AdapterManifest.from_json(raw, f"{self.registry.url}/{lang}/versions/{version}/{MANIFEST}")
        return RouteTarget(version, "target_only" if manifest.kind == "target_only" else "compass")

    def refresh(self, lang: str | None = None) -> dict[str, RouteTarget | None]:
        """Re-read the current pointers of ``lang`` (or every configured language) into the table.

        Returns the entries that changed, language -> new target (None = no adapter any more). A language whose
        pointer cannot be read keeps its previous entry (logged): a broken registry never drops serving adapters."""
        langs = self.languages if lang is None else (normalize_lang(lang),)
        found: dict[str, RouteTarget | None] = {}
        for code in langs:
            try:
                found[code] = self.read_target(code)
            except CompassError as e:
                log.warning("router: keeping the cached adapter of %s; cannot read the registry: %s", code, e)
        changed = {c: t for c, t in found.items() if self._table.get(c) != t}
        if changed:
            self.set_targets(changed)
        return changed

    def set_target(self, lang: str, target: RouteTarget | None) -> None:
        """Point ``lang`` at ``target`` (None: the base model), e.g. once the server has loaded that version."""
        self.set_targets({normalize_lang(lang): target})

    def set_targets(self, targets: Mapping[str, RouteTarget | None]) -> None:
        with self._write:
            table = dict(self._table)
            for code, target in targets.items():
                if target is None:
                    table.pop(code, None)
                else:
                    table[code] = target
            self._table = MappingProxyType(table)  # one assignment: the swap is atomic for readers

    # ----- routing -----
    def detect(self, text: str, lang: str | None = None) -> Identification:
        """The query's language: ``lang`` when given (validated, confidence 1), else the identifier's answer."""
        if lang is not None:
            return Identification(normalize_lang(lang), 1.0)
        if not isinstance(text, str):
            raise RouteError(f"text must be a string; got {type(text).__name__}")
        return self.identifier.identify(text)

    def decide(self, ident: Identification, overridden: bool = False,
               table: Mapping[str, RouteTarget] | None = None) -> RouteDecision:
        """The §3.2.5 decision for an identified language: ``classify`` (served / undetermined / not configured,
        the rule the consumers share), then the adapter table (default: the current one) for a served language."""
        table = self._table if table is None else table
        status = classify(ident, self.languages)
        lang, conf = status.language, status.confidence
        if status.reason == UNDETERMINED:
            return RouteDecision(lang, conf, None, None, "base",
                                 f"language undetermined (confidence {conf:.2f} below the language-ID threshold); "
                                 "base model")
        how = "set by the caller" if overridden else f"detected with confidence {conf:.2f}"
        if status.reason == NOT_CONFIGURED:
            return RouteDecision(lang, conf, None, None, "base", f"{lang} {how}; language not configured; base model")
        target = table.get(lang)
        if target is None:
            return RouteDecision(lang, conf, None, None, "base", f"{lang} {how}; no adapter promoted; base model")
        if target.kind == "target_only":
            return RouteDecision(lang, conf, lang, target.version, "target_only",
                                 f"{lang} {how}; no usage proxy yet, target-only adapter {target.version}")
        return RouteDecision(lang, conf, lang, target.version, "compass",
                             f"{lang} {how}; COMPASS adapter {target.version}")

    def route(self, text: str, lang: str | None = None) -> RouteDecision:
        """Detect (or take ``lang``) and decide; no registry read."""
        return self.decide(self.detect(text, lang), overridden=lang is not None)

    def route_batch(self, texts: Sequence[str], lang: str | None = None) -> list[RouteDecision]:
        table = self._table  # one table for the whole batch
        return [self.decide(self.detect(t, lang), lang is not None, table) for t in texts]
