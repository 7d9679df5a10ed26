"""A sentence-transformers model from a local directory the user brings (e.g. multilingual-e5-large).

Nothing is downloaded: the path must be an existing directory and loading uses ``local_files_only``.

Query prefix: a non-empty ``query_prefix`` (the config default "query: ", right for the e5 family) is given
to sentence-transformers as the prompt, replacing any prompt the model defines, so it is never applied
twice. An empty ``query_prefix`` uses the model's own "query" prompt if it defines one, else the raw text.
The prefix is part of ``model_id`` because it changes the vectors.

``model_id`` is ``st:<directory name>:<12 hex digits>``; the digits hash the model's files (see
``fingerprint``) and the prefix, so the same model in any process or location gets the same id, and a
retrained or different model a different one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from compass.embed.base import Embedder, check_texts, empty, l2_normalize
from compass.errors import EmbedderError

_WHOLE_FILE_MAX = 16 << 20  # files up to this size are hashed whole
_EDGE = 1 << 20  # larger files (weights): size plus first and last MiB, to keep loading fast
_SKIP_DIRS = {".git", ".cache", "__pycache__"}


def fingerprint(model_dir: Path, extra: str = "") -> str:
    """A sha256 hex digest of the directory's files (relative paths and contents) and ``extra``.

    Safetensors and similar weight files begin with a header describing every tensor, so the first and
    last MiB plus the size tell weight files apart without reading gigabytes on each start.
    """
    h = hashlib.sha256()
    files = sorted(
        p
        for p in model_dir.rglob("*")
        if p.is_file()
        and p.name != "README.md"  # the model card does not change vectors
        and not _SKIP_DIRS.intersection(p.relative_to(model_dir).parts)
    )
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.relative_to(model_dir).as_posix()}\0{size}\0".encode())
        with p.open("rb") as f:
            if size <= _WHOLE_FILE_MAX:
                h.update(f.read())
            else:
                h.update(f.read(_EDGE))
                f.seek(size - _EDGE)
                h.update(f.read(_EDGE))
    h.update(f"\0prefix\0{extra}".encode())
    return h.hexdigest()


class SentenceTransformerEmbedder(Embedder):
    """A local sentence-transformers model on cuda when available, else cpu."""

    def __init__(
        self,
        model_path: str | Path,
        query_prefix: str = "query: ",
        batch_size: int = 64,
        threads: int = 0,
        device: str | None = None,
        trust_remote_code: bool = False,
    ):
        path = Path(model_path).expanduser()
        if not path.is_dir():
            what = "is not a directory" if path.exists() else "does not exist"
            raise EmbedderError(
                f"backend sentence-transformers: model_path {str(path)!r} {what}; set embedder.model_path "
                "to a local model directory (saved with SentenceTransformer.save or fetched with "
                "`hf download`)"
            )
        if batch_size < 1:
            raise EmbedderError(f"backend sentence-transformers: batch_size must be >= 1; got {batch_size}")
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise EmbedderError(
                f"backend sentence-transformers: cannot import it ({e}); install sentence-transformers>=5"
            ) from None
        if threads > 0:
            torch.set_num_threads(threads)  # process-wide in torch
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self._model = SentenceTransformer(
                str(path.resolve()), device=device, local_files_only=True, trust_remote_code=trust_remote_code
            )
        except Exception as e:  # loaders raise many types (OSError, ValueError, KeyError, ...)
            raise EmbedderError(
                f"backend sentence-transformers: could not load {str(path)!r} ({type(e).__name__}: {e}); "
                "check that it holds a complete sentence-transformers or transformers model "
                "(modules.json or config.json plus weights and tokenizer files)"
            ) from None
        self.path = path
        self.query_prefix = query_prefix
        self.batch_size = batch_size
        self.device = device
        self._model_id = f"st:{path.resolve().name}:{fingerprint(path, query_prefix)[:12]}"
        dim = self._model.get_embedding_dimension()
        self._dim = int(dim) if dim else int(self._encode(["dimension probe"]).shape[1])

    def _encode(self, items: list[str]) -> np.ndarray:
        x = self._model.encode_query(
            items,
            prompt=self.query_prefix or None,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return l2_normalize(np.asarray(x, dtype=np.float32))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        items = check_texts(texts)
        if not items:
            return empty(self._dim)
        return self._encode(items)

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder(model_id={self._model_id!r}, dim={self._dim}, {self.device})"
