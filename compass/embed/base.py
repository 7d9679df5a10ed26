"""The embedder contract every backend meets, and the input checks and normalisation they share.

An embedder turns texts into a float32 array of shape (n, dim) whose rows have unit L2 norm, so a dot
product is a cosine. ``model_id`` names the vector space: two embedders with the same ``model_id`` must give
the same vectors for the same text, in any process, because the on-disk cache is keyed by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, Self, runtime_checkable

import numpy as np

from compass.errors import EmbedderError


@runtime_checkable
class Embedder(Protocol):
    """Texts in, an (n, dim) float32 array of unit-norm rows out; ``close()`` releases what the backend holds.

    Backends subclass it to inherit the no-op ``close`` and ``with`` support; those holding a model, a connection
    or a file override ``close``, so callers always call ``embedder.close()`` (or use ``with``) without asking
    first. Subclasses that know their vector space at construction set ``self._dim`` and ``self._model_id`` and
    inherit ``dim`` and ``model_id``.
    """

    @property
    def dim(self) -> int:
        """The length of every vector."""
        return self._dim  # type: ignore[attr-defined]  # not annotated: a Protocol member would be required

    @property
    def model_id(self) -> str:
        """The name of the vector space (the cache key)."""
        return self._model_id  # type: ignore[attr-defined]

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...

    def close(self) -> None:
        """Release the backend's resources; a no-op by default. Calling it twice is harmless."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EmbedderInputError(EmbedderError, TypeError):
    """``encode`` was called with something other than a sequence of strings."""


def check_texts(texts: Sequence[str]) -> list[str]:
    """Return ``texts`` as a list, or raise EmbedderInputError naming the first bad item."""
    if isinstance(texts, str | bytes):
        # A bare string is a sequence of characters; embedding each character is never what was meant.
        raise EmbedderInputError(
            f"encode() got a single {type(texts).__name__} ({texts[:40]!r}); pass a list of strings, "
            "e.g. encode([text])"
        )
    try:
        items = list(texts)
    except TypeError:
        raise EmbedderInputError(
            f"encode() got {type(texts).__name__}; pass a list of strings"
        ) from None
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise EmbedderInputError(
                f"encode() item {i} is {type(t).__name__} ({t!r:.60}), not str; convert or drop it "
                "before embedding"
            )
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            # Lone surrogates (from a bad decode upstream) can reach no backend and have no stable hash.
            raise EmbedderInputError(
                f"encode() item {i} ({t!r:.60}) is not valid Unicode ({e.reason} at position {e.start}); "
                "decode the source with errors='replace'"
            ) from None
    return items


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32. All-zero rows stay zero instead of becoming NaN.

    Rows already of unit norm (within float32 rounding) come back bit-identical, so normalising twice,
    in a backend and again in the cache, never changes a vector's last bits.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"l2_normalize expects a 2-D array (n, dim); got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    keep = (norms == 0) | (np.abs(norms - 1.0) <= 1e-6)
    return (x / np.where(keep, 1.0, norms)).astype(np.float32, copy=False)


def empty(dim: int) -> np.ndarray:
    """The (0, dim) answer to an empty input."""
    return np.zeros((0, dim), dtype=np.float32)
