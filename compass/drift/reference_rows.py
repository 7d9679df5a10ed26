"""The rows behind an adapter version's P_ref (eq. 3), stored with the version so P_ref can be recomputed on any
codebook.

eq. 3 counts rows per bucket: ``n_ref(k) = n_eval(k) + n_aux,selected(k)``. A bucket count is tied to the codebook
it was taken on; the rows are not. Every adapter version therefore keeps, beside its weights, the rows that stand for
its eq. 3 numerators (``REFERENCE_ROWS_FILE``): per row an id, a source and a weight (its multiplicity in the
numerator), and its unit embedding in float16. On a new codebook:

    counts = rows.counts(codebook.assign(rows.X.astype(np.float32)), codebook.n_clusters)
    p_ref = counts / counts.sum()

Sources: ``"window"`` (a recent window query, the usage proxy E_t, weight 1), ``"target"`` (a D_t row that stood
in for E_t when there was no usage proxy, weight 1) and ``"selected"`` (a pool row COMPASS selected, weight = its
repetition count). The size is bounded by the window size + |D_t| + the budget-bounded selection (distinct rows).

The file is an ``.npz`` (``np.savez_compressed``) read with ``allow_pickle=False``: plain arrays only.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from compass.errors import CompassError

REFERENCE_ROWS_FILE = "reference_rows.npz"
SOURCES = ("window", "selected", "target")
_FORMAT = 1  # bumped when the arrays change meaning; from_bytes refuses other formats
_F16_MAX = float(np.finfo(np.float16).max)
_KEYS = ("format", "ids", "sources", "weights", "X")


class ReferenceRowsError(CompassError, ValueError):
    """Reference rows are inconsistent (shapes, weights, sources) or a stored file cannot be read."""


@dataclass(frozen=True)
class ReferenceRows:
    """The eq. 3 rows of one adapter version (module docstring). Arrays are coerced: weights to float64, X to
    float16; a row count mismatch, a negative or non-finite weight or an unknown source raises."""

    ids: tuple[str, ...]
    sources: tuple[str, ...]
    weights: np.ndarray  # (n,) float64: the row's multiplicity in eq. 3's numerator
    X: np.ndarray  # (n, d) float16 unit embeddings

    def __post_init__(self) -> None:
        ids, sources = tuple(str(i) for i in self.ids), tuple(str(s) for s in self.sources)
        w, x = np.asarray(self.weights), np.asarray(self.X)
        n = len(ids)
        if len(sources) != n or w.shape != (n,) or x.ndim != 2 or len(x) != n:
            raise ReferenceRowsError(f"ReferenceRows needs one id, source, weight and embedding row per row; got "
                                     f"{n} ids, {len(sources)} sources, weights of shape {w.shape} and X of shape "
                                     f"{x.shape} (want (n,) weights and (n, d) X)")
        if not np.issubdtype(w.dtype, np.number) or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ReferenceRowsError("ReferenceRows.weights must be finite numbers >= 0 (multiplicities in eq. 3); "
                                     f"got {w[:5]!r}{'...' if n > 5 else ''}")
        if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)) or np.any(np.abs(x) > _F16_MAX):
            raise ReferenceRowsError("ReferenceRows.X must hold finite numbers (unit embeddings, float16-safe)")
        bad = sorted(set(sources) - set(SOURCES))
        if bad:
            raise ReferenceRowsError(f"ReferenceRows.sources must each be one of {', '.join(SOURCES)}. "
                                     f"Got {bad} instead.")
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "sources", sources)
        object.__setattr__(self, "weights", w.astype(np.float64))
        object.__setattr__(self, "X", x.astype(np.float16))

    def __len__(self) -> int:
        return len(self.ids)

    def counts(self, buckets: np.ndarray, k: int, where: np.ndarray | None = None) -> np.ndarray:
        """(k+1,) float64 eq. 3 numerators: the weighted bincount of ``buckets`` (one codebook bucket per row, as
        ``Codebook.assign`` gives; bucket k or any negative id is noise, counted at index k); ``where`` (a boolean
        mask over the rows) counts only those rows."""
        b = np.asarray(buckets)
        if b.shape != (len(self),) or (b.size and not np.issubdtype(b.dtype, np.integer)):
            raise ReferenceRowsError(f"ReferenceRows.counts needs one integer bucket per row ({len(self)}); got "
                                     f"shape {b.shape}, dtype {b.dtype}")
        if b.size and b.max() > k:
            raise ReferenceRowsError(f"ReferenceRows.counts: bucket {int(b.max())} is past the noise bucket {k}; "
                                     "are the buckets from a codebook with more clusters than k?")
        b = np.where(b < 0, k, b).astype(np.int64)
        weights = self.weights if where is None else np.where(where, self.weights, 0.0)
        return np.bincount(b, weights=weights, minlength=k + 1).astype(np.float64)

    def to_bytes(self) -> bytes:
        """The ``.npz`` file content (compressed, no pickled objects)."""
        buf = io.BytesIO()
        np.savez_compressed(buf, format=np.int64(_FORMAT), ids=np.asarray(self.ids, dtype=np.str_),
                            sources=np.asarray(self.sources, dtype=np.str_), weights=self.weights, X=self.X)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ReferenceRows:
        """Read what ``to_bytes`` wrote; raises ReferenceRowsError on anything else (never unpickles)."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                missing = [key for key in _KEYS if key not in z.files]
                if missing:
                    raise ReferenceRowsError(f"{REFERENCE_ROWS_FILE} lacks the arrays {missing} (has {z.files}); "
                                             "it was not written by ReferenceRows.to_bytes")
                arrays = {key: z[key] for key in _KEYS}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            if isinstance(e, ReferenceRowsError):
                raise
            raise ReferenceRowsError(f"{REFERENCE_ROWS_FILE} cannot be read as an .npz of plain arrays: {e}") from e
        if arrays["format"].shape != () or int(arrays["format"]) != _FORMAT:
            raise ReferenceRowsError(f"{REFERENCE_ROWS_FILE} has format {arrays['format']!r}; this compass reads "
                                     f"format {_FORMAT} only")
        for key in ("ids", "sources"):
            if arrays[key].ndim != 1 or (arrays[key].size and arrays[key].dtype.kind != "U"):
                raise ReferenceRowsError(f"{REFERENCE_ROWS_FILE}: {key!r} must be a 1-d string array; got dtype "
                                         f"{arrays[key].dtype}, shape {arrays[key].shape}")
        return cls(tuple(arrays["ids"].tolist()), tuple(arrays["sources"].tolist()), arrays["weights"], arrays["X"])

    @classmethod
    def concat(cls, parts: list[ReferenceRows], dim: int) -> ReferenceRows:
        """All ``parts`` in order; ``dim`` gives the width of an empty result."""
        if not parts:
            return cls((), (), np.zeros(0), np.zeros((0, dim), np.float16))
        return cls(tuple(i for p in parts for i in p.ids), tuple(s for p in parts for s in p.sources),
                   np.concatenate([p.weights for p in parts]), np.concatenate([p.X for p in parts]))


class _ReadsFiles(Protocol):
    def files(self, lang: str, version: str) -> list[str]: ...

    def read_file(self, lang: str, version: str, name: str) -> bytes: ...


def read_reference_rows(registry: _ReadsFiles, lang: str, version: str) -> ReferenceRows | None:
    """The stored rows of ``lang``/``version``, or None for a version written before versions kept them (the
    caller then needs its own fallback, e.g. keeping that language's P_ref on the old codebook)."""
    if REFERENCE_ROWS_FILE not in registry.files(lang, version):
        return None
    return ReferenceRows.from_bytes(registry.read_file(lang, version, REFERENCE_ROWS_FILE))
