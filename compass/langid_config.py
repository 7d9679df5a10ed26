"""The ``langid:`` section: which language-ID backend answers (``compass/langid.py``) and how sure it must be."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from compass.validation import Frozen


def _langid_model_path_rule(backend: str, model_path: Path | None) -> str | None:
    if backend == "fasttext" and model_path is None:
        return "backend fasttext needs model_path (a fastText .bin/.ftz file, e.g. GlotLID)"
    return None


class LangIdConfig(Frozen):
    backend: Literal["py3langid", "fasttext"] = Field("py3langid", description="py3langid or fasttext")
    model_path: Path | None = Field(None, description="a fastText-format model file (fasttext backend)")
    min_confidence: float = Field(0.5, ge=0.0, le=1.0, description="a probability in [0, 1]")
    configured_tie_margin: float = Field(
        0.1, ge=0.0, le=1.0,
        description="probability points in [0, 1]: when the top language is not configured and a configured one "
        "is at most this far below it, the configured one is answered (e.g. gl 0.46 vs pt 0.44 -> pt); 0 = off",
    )
    _rules = (_langid_model_path_rule,)
