"""Language identification: text -> (language, confidence) in compass's one language-code scheme.

Codes are those of ``compass/langcodes.py``: lowercase ISO 639-1 where one exists (``en``, ``sw``, ``yo``),
else ISO 639-3 (``ceb``); region/script subtags dropped; members of a macrolanguage folded into it
(``arz`` -> ``ar``, ``yue`` -> ``zh``); ``und`` = undetermined. Every backend label goes through
``langcodes.normalize``, and labels that fold onto one code have their probabilities summed.

Backends (``LangIdConfig.backend``):
  py3langid  the bundled naive-Bayes model (about 140 languages, no download).
  fasttext   a user-supplied fastText-format model file (``langid.model_path``), e.g. GlotLID's
             ``model.bin`` (labels such as ``__label__swh_Latn``), read through fasttext-predict.

Answers:
  * empty or whitespace-only text -> ``('und', 0.0)``;
  * best confidence below ``min_confidence`` -> ``('und', confidence)`` (the confidence of the best guess);
  * with a restriction set (``restrict_to_configured``), only those languages (and ``und``) are answered
    and confidences are renormalised over that set, i.e. they are P(language | one of the set).
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
from compass.config import LangIdConfig
from compass.errors import LanguageIdError

log = logging.getLogger(__name__)

UND = langcodes.UNDETERMINED


@dataclass(frozen=True, slots=True)
class Identification:
    """One answer: ``lang`` in compass's scheme (``und`` when undetermined) and its probability."""

    lang: str
    confidence: float


@runtime_checkable
class LanguageIdentifier(Protocol):
    """What the rest of compass uses. ``languages``: the codes it can answer besides ``und``."""

    backend: str
    languages: frozenset[str]

    def identify(self, text: str) -> Identification: ...

    def identify_batch(self, texts: Iterable[str]) -> list[Identification]: ...


def make_identifier(cfg: LangIdConfig, languages: Sequence[str] | None = None) -> LanguageIdentifier:
    """Build the configured backend.

    ``languages`` is the restriction set used when ``cfg.restrict_to_configured`` is true (codes in any form
    ``langcodes.normalize`` accepts); when it is None the enabled languages of ``configs/languages.yaml``
    are used. A restriction language the backend cannot answer raises ``LanguageIdError`` naming it.
    """
    restrict: list[str] | None = None
    if cfg.restrict_to_configured:
        if languages is None:
            from compass.config import load_languages

            languages = load_languages().enabled
        restrict = _normalize_all(languages)
    if cfg.backend == "fasttext":
        if cfg.model_path is None:
            raise LanguageIdError("langid.backend is fasttext but langid.model_path is not set")
        return FastTextIdentifier(cfg.model_path, restrict, cfg.min_confidence)
    return Py3LangIdIdentifier(restrict, cfg.min_confidence)


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
        raise LanguageIdError("invalid language in the language-ID restriction set: " + "; ".join(bad))
    if not codes:
        raise LanguageIdError(
            "the language-ID restriction set is empty; enable languages in configs/languages.yaml "
            "or set langid.restrict_to_configured: false"
        )
    return codes


def _label_code(label: str) -> str:
    """Backend label -> compass code; labels outside the scheme count as ``und`` (with a warning)."""
    try:
        return langcodes.normalize(label)
    except ValueError:
        log.warning("language-ID label %r is not a language code; its answers count as 'und'", label)
        return UND


class _GroupedScorer:
    """Shared logic: per-label probabilities -> per-code probabilities -> restricted, thresholded answer."""

    backend = ""

    def _setup_groups(self, labels: Sequence[str], restrict: list[str] | None, min_confidence: float) -> None:
        codes = [_label_code(label) for label in labels]
        known = set(codes)
        if restrict is not None:
            missing = [c for c in restrict if c not in known]
            if missing:
                names = ", ".join(f"{c!r} ({langcodes.name(c)})" for c in missing)
                raise LanguageIdError(
                    f"the {self.backend} language-ID model cannot identify {names}; remove it from the "
                    "enabled languages, use a model that covers it (langid.backend: fasttext with "
                    "langid.model_path), or set langid.restrict_to_configured: false"
                )
            allowed = set(restrict) | {UND}
        else:
            allowed = known
        self.min_confidence = float(min_confidence)
        self.languages = frozenset(c for c in allowed if c != UND)
        self._codes = sorted(allowed & known)
        index = {c: i for i, c in enumerate(self._codes)}
        # column i of the backend contributes to group _group[i]; -1 = outside the restriction set
        self._group = np.array([index.get(c, -1) for c in codes], dtype=np.intp)
        self._keep = self._group >= 0

    def _answer(self, probs: np.ndarray) -> Identification:
        probs = probs[self._keep]
        grouped = np.bincount(self._group[self._keep], weights=probs, minlength=len(self._codes))
        total = float(grouped.sum())
        if total <= 0.0:
            return Identification(UND, 0.0)
        i = int(grouped.argmax())
        conf = float(grouped[i]) / total
        lang = self._codes[i]
        if conf < self.min_confidence:
            lang = UND
        return Identification(lang, conf)

    def identify(self, text: str) -> Identification:
        raise NotImplementedError

    def identify_batch(self, texts: Iterable[str]) -> list[Identification]:
        """One answer per text, in order (the same answers ``identify`` gives one by one)."""
        return [self.identify(t) for t in texts]


@functools.cache
def _py3langid_base() -> Any:
    """The bundled model, loaded once per process (about 1 s); never restricted itself."""
    from py3langid.langid import MODEL_FILE
    from py3langid.langid import LanguageIdentifier as _Lid

    return _Lid.from_model_file(MODEL_FILE, norm_probs=True)


class Py3LangIdIdentifier(_GroupedScorer):
    """py3langid with probabilities normalised over its classes (``norm_probs=True``).

    py3langid's ``set_languages`` replaces the instance's class arrays, so one identifier per restriction
    set is built here; they share the loaded model arrays (restriction copies only the kept columns).
    """

    backend = "py3langid"

    def __init__(self, restrict: list[str] | None = None, min_confidence: float = 0.5):
        base = _py3langid_base()
        try:
            self._lid = type(base)(
                base.nb_ptc, base.nb_pc, base.nb_classes, base.tk_nextmove, base.tk_output,
                norm_probs=True, tk_row=base.tk_row,
            )
        except TypeError:  # another py3langid constructor signature: load a private copy instead
            from py3langid.langid import MODEL_FILE

            self._lid = type(base).from_model_file(MODEL_FILE, norm_probs=True)
        labels = list(base.nb_classes)
        if restrict is not None:
            # Keep every label folding onto an allowed code, plus 'zxx' so text without language stays 'und'.
            wanted = set(restrict) | {UND}
            keep = sorted({lab for lab in labels if _label_code(lab) in wanted})
            if keep:
                self._lid.set_languages(keep)
            labels = list(self._lid.nb_classes)
        self._setup_groups(labels, restrict, min_confidence)

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

    def __init__(
        self, model_path: str | Path, restrict: list[str] | None = None, min_confidence: float = 0.5
    ):
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
        self._setup_groups(self._labels, restrict, min_confidence)

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
