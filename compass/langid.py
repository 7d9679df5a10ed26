"""Language identification: text -> (language, confidence) in compass's one language-code scheme.

Codes are those of ``compass/langcodes.py``: lowercase ISO 639-1 where one exists (``en``, ``sw``, ``yo``),
else ISO 639-3 (``ceb``); region/script subtags dropped; members of a macrolanguage folded into it
(``arz`` -> ``ar``, ``yue`` -> ``zh``); ``und`` = undetermined. Every backend label goes through
``langcodes.normalize``, and labels that fold onto one code have their probabilities summed.

Backends (``LangIdConfig.backend``):
  py3langid  the bundled naive-Bayes model (about 140 languages, no download).
  fasttext   a user-supplied fastText-format model file (``langid.model_path``), e.g. GlotLID's
             ``model.bin`` (labels such as ``__label__swh_Latn``), read through fasttext-predict.

Answers (``make_identifier``), from the full model's probabilities over every language it knows:
  * empty or whitespace-only text -> ``('und', 0.0)``;
  * the top language's probability below ``min_confidence`` -> ``('und', that probability)``;
  * otherwise the top language with its probability, configured or not: an unconfigured language is reported
    as itself (Catalan as ``ca``), so the router can send it to the base model (§3.2.5);
  * near-tie: when the top language is not configured and the best configured language is within
    ``configured_tie_margin`` probability points of it (``gl`` 0.46, ``pt`` 0.44), the configured one is answered
    with its own probability. The configured set only breaks such near-ties; it never promotes a language the
    model ranks far below, and it never renormalises (a renormalised confidence would mean nothing).
    ``min_confidence`` is checked on the top language first (is the model sure of anything?), so a near-tie
    answer may carry less than ``min_confidence``: the two languages together hold most of the mass.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from compass import langcodes
from compass.errors import LanguageIdError
from compass.langid_config import LangIdConfig

log = logging.getLogger(__name__)

UND = langcodes.UNDETERMINED


@dataclass(frozen=True, slots=True)
class Identification:
    """One answer: ``lang`` in compass's scheme (``und`` when undetermined) and its probability."""

    lang: str
    confidence: float


@runtime_checkable
class LanguageIdentifier(Protocol):
    """What the rest of compass uses. ``languages``: the codes it can answer besides ``und`` (every language of
    the model); ``configured``: the languages that win near-ties (``configured_tie_margin``)."""

    backend: str
    languages: frozenset[str]
    configured: frozenset[str]

    def identify(self, text: str) -> Identification: ...

    def identify_batch(self, texts: Iterable[str]) -> list[Identification]: ...


def make_identifier(cfg: LangIdConfig, languages: Sequence[str]) -> LanguageIdentifier:
    """Build the configured backend over the full model.

    ``languages`` are the configured languages (codes in any form ``langcodes.normalize`` accepts; the caller
    passes what it loaded, e.g. ``load_languages(path).enabled``, or ``()`` for none); they only break
    near-ties (``cfg.configured_tie_margin``). A configured language the backend cannot identify raises
    ``LanguageIdError`` naming it: its queries could never reach its adapter.
    """
    if languages is None:
        # an explicit None once meant "read configs/languages.yaml"; the method reads no config file itself
        raise LanguageIdError(
            "make_identifier needs the configured languages: pass languages=load_languages(path).enabled "
            "(compass.languages), or languages=() for none"
        )
    configured = _normalize_all(languages)
    if cfg.backend == "fasttext":
        if cfg.model_path is None:
            raise LanguageIdError("langid.backend is fasttext but langid.model_path is not set")
        return FastTextIdentifier(cfg.model_path, configured, cfg.min_confidence, cfg.configured_tie_margin)
    return Py3LangIdIdentifier(configured, cfg.min_confidence, cfg.configured_tie_margin)


def _normalize_all(languages: Sequence[str]) -> list[str]:
    if isinstance(languages, str):  # a bare "en" would otherwise become {"e", "n"}
        languages = [languages]
    codes, bad = [], []
    for value in languages:
        try:
            code = langcodes.normalize(value)
        except ValueError as e:
            bad.append(str(e))
            continue
        if code != UND and code not in codes:
            codes.append(code)
    if bad:
        raise LanguageIdError("invalid configured language for language ID: " + "; ".join(bad))
    return codes


def _label_code(label: str) -> str:
    """Backend label -> compass code; labels outside the scheme count as ``und`` (with a warning)."""
    try:
        return langcodes.normalize(label)
    except ValueError:
        log.warning("language-ID label %r is not a language code; its answers count as 'und'", label)
        return UND


class _GroupedScorer:
    """Shared logic: per-label probabilities -> per-code probabilities -> thresholded answer with near-ties
    broken towards the configured languages."""

    backend = ""

    def _setup_groups(self, labels: Sequence[str], configured: Sequence[str] | None, min_confidence: float,
                      tie_margin: float) -> None:
        codes = [_label_code(label) for label in labels]
        known = set(codes)
        configured = list(configured or ())
        missing = [c for c in configured if c not in known]
        if missing:
            names = ", ".join(f"{c!r} ({langcodes.name(c)})" for c in missing)
            raise LanguageIdError(
                f"the {self.backend} language-ID model cannot identify configured language {names}, so its "
                "queries would never reach its adapter; disable it in configs/languages.yaml or use a model "
                "that covers it (langid.backend: fasttext with langid.model_path)"
            )
        if not 0.0 <= tie_margin <= 1.0:
            raise LanguageIdError(f"langid.configured_tie_margin {tie_margin!r} is not a probability in [0, 1]; "
                                  "use e.g. 0.1, or 0 to turn near-tie breaking off")
        self.min_confidence = float(min_confidence)
        self.tie_margin = float(tie_margin)
        self.languages = frozenset(known - {UND})
        self.configured = frozenset(configured)
        self._codes = sorted(known)
        index = {c: i for i, c in enumerate(self._codes)}
        self._group = np.array([index[c] for c in codes], dtype=np.intp)  # backend column -> code
        self._configured_idx = np.array(sorted(index[c] for c in configured), dtype=np.intp)
        self._is_configured = np.zeros(len(self._codes), dtype=bool)
        self._is_configured[self._configured_idx] = True
        self._und = index.get(UND, -1)

    def _answer(self, probs: np.ndarray) -> Identification:
        grouped = np.bincount(self._group, weights=probs, minlength=len(self._codes))
        total = float(grouped.sum())
        if total <= 0.0:
            return Identification(UND, 0.0)
        grouped /= total  # fastText's k=-1 probabilities may miss 1 by rounding
        i = int(grouped.argmax())
        conf = float(grouped[i])
        if conf < self.min_confidence:
            return Identification(UND, conf)
        if i != self._und and not self._is_configured[i] and self.tie_margin > 0.0 and self._configured_idx.size:
            j = int(self._configured_idx[grouped[self._configured_idx].argmax()])
            # 1e-12: "within 0.1" must hold for 0.46 vs 0.36, whose float difference is 0.10000000000000003
            if conf - float(grouped[j]) <= self.tie_margin + 1e-12:
                return Identification(self._codes[j], float(grouped[j]))
        return Identification(self._codes[i], conf)

    def identify(self, text: str) -> Identification:
        raise NotImplementedError

    def identify_batch(self, texts: Iterable[str]) -> list[Identification]:
        """One answer per text, in order (the same answers ``identify`` gives one by one)."""
        return [self.identify(t) for t in texts]


@functools.cache
def _py3langid_base() -> Any:
    """The bundled model, loaded once per process (about 1 s) and shared: identifiers only read it."""
    from py3langid.langid import MODEL_FILE
    from py3langid.langid import LanguageIdentifier as _Lid

    return _Lid.from_model_file(MODEL_FILE, norm_probs=True)


class Py3LangIdIdentifier(_GroupedScorer):
    """py3langid with probabilities normalised over all its classes (``norm_probs=True``)."""

    backend = "py3langid"

    def __init__(self, configured: Sequence[str] | None = None, min_confidence: float = 0.5,
                 tie_margin: float = 0.1):
        self._lid = _py3langid_base()
        self._setup_groups(list(self._lid.nb_classes), configured, min_confidence, tie_margin)

    def identify(self, text: str) -> Identification:
        if not isinstance(text, str):
            raise TypeError(f"identify() needs a str; got {type(text).__name__}")
        if not text.strip():
            return Identification(UND, 0.0)
        # _decide is py3langid's per-class probability vector (classify() keeps only the arg max);
        # the column order is self._lid.nb_classes, the order _setup_groups saw.
        return self._answer(self._lid._decide(text))


class FastTextIdentifier(_GroupedScorer):
    """A fastText-format supervised model (``.bin``/``.ftz``) through fasttext-predict."""

    backend = "fasttext"

    def __init__(self, model_path: str | Path, configured: Sequence[str] | None = None,
                 min_confidence: float = 0.5, tie_margin: float = 0.1):
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise LanguageIdError(
                f"fastText model file {str(path)!r} does not exist; set langid.model_path to a fastText "
                ".bin/.ftz language-ID model (e.g. GlotLID's model.bin) or use langid.backend: py3langid"
            )
        try:
            import fasttext
        except ImportError:
            raise LanguageIdError(
                "langid.backend fasttext needs the fasttext-predict package: "
                "pip install 'compass-ecda[fasttext]'"
            ) from None
        try:
            self._model = fasttext.load_model(str(path))
        except (ValueError, RuntimeError, MemoryError) as e:
            raise LanguageIdError(
                f"cannot load fastText model {str(path)!r} (langid.model_path): {e}".rstrip()
            ) from None
        self.model_path = path
        # fasttext-predict has no label list; an empty line (the end-of-sentence token, present in every
        # trained model) with k=-1 returns every label.
        labels, _ = self._model.predict("", k=-1)
        if not labels:
            raise LanguageIdError(f"fastText model {str(path)!r} (langid.model_path) reports no labels")
        self._labels = [lab.removeprefix("__label__") for lab in labels]
        self._column = {lab: i for i, lab in enumerate(labels)}
        self._setup_groups(self._labels, configured, min_confidence, tie_margin)

    def identify(self, text: str) -> Identification:
        if not isinstance(text, str):
            raise TypeError(f"identify() needs a str; got {type(text).__name__}")
        if not text.strip():
            return Identification(UND, 0.0)
        # fastText predicts one line at a time; its tokenizer treats other whitespace as separators.
        labels, probs = self._model.predict(" ".join(text.split()), k=-1)
        vec = np.zeros(len(self._labels), dtype=np.float64)
        for label, p in zip(labels, probs, strict=True):
            vec[self._column[label]] = p
        return self._answer(vec)
