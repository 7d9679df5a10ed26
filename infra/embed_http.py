"""An OpenAI-compatible embeddings endpoint: POST {url}/embeddings with {"model", "input": [...]}.

Texts go in batches of ``batch_size``. Connection errors, timeouts, HTTP 429 and 5xx are retried up to
``max_retries`` times with the project's retry policy (``infra/retry.py``: exponential back-off with jitter,
honouring a Retry-After header); any other 4xx fails at once, since sending the same request again cannot help. The
bearer token lives only in the client's headers: it is never logged, put in a repr, or echoed back in an error
message.

``dim`` is learned from the first response; reading it earlier sends one probe request.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import numpy as np
import tenacity

from compass.embed.base import Embedder, check_texts, empty, l2_normalize
from compass.errors import EmbedderError, EmbedderUnavailable
from infra.retry import parse_retry_after, retrying

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({429}) | frozenset(range(500, 600))
_SNIPPET = 300


class _Retryable(Exception):
    """A failed attempt worth repeating; ``retry_after_s`` is the server's requested wait, if any (the hint
    ``infra.retry`` honours)."""

    def __init__(self, reason: str, retry_after_s: float | None = None):
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class HttpEmbedder(Embedder):
    """Client of an OpenAI-compatible ``/embeddings`` endpoint. Use as a context manager or call ``close``."""

    def __init__(
        self,
        url: str,
        model: str | None = None,
        api_key: str | None = None,
        batch_size: int = 64,
        timeout_s: float = 30.0,
        max_retries: int = 4,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not url.startswith(("http://", "https://")):
            raise EmbedderError(f"backend http: url must start with http:// or https://; got {url!r}")
        if batch_size < 1:
            raise EmbedderError(f"backend http: batch_size must be >= 1; got {batch_size}")
        if max_retries < 0:
            raise EmbedderError(f"backend http: max_retries must be >= 0; got {max_retries}")
        self.url = url.rstrip("/")
        self.endpoint = f"{self.url}/embeddings"
        self.model = model
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.requests_sent = 0
        self._sleep = sleep
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), headers=headers, transport=transport)
        self._dim: int | None = None
        self._model_id = f"http:{model or 'default'}@{self.url}"

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._embed_batch(["dimension probe"])
        assert self._dim is not None
        return self._dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        items = check_texts(texts)
        if not items:
            return empty(self.dim)
        step = self.batch_size
        parts = [self._embed_batch(items[i : i + step]) for i in range(0, len(items), step)]
        return np.concatenate(parts, axis=0)

    # ----------------------------------------------------------------------------------------- internals

    def _redact(self, text: str) -> str:
        # Read back from the client rather than kept on self, where vars() or a debugger would show it.
        token = self._client.headers.get("Authorization", "").removeprefix("Bearer ")
        return text.replace(token, "***") if token else text

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "embeddings %s: %s; retry %d/%d in %.2fs",
            self.endpoint, error, state.attempt_number, self.max_retries, delay,
        )

    def _embed_batch(self, batch: list[str]) -> np.ndarray:
        payload: dict[str, Any] = {"input": batch, "encoding_format": "float"}
        if self.model:
            payload["model"] = self.model
        # Jitter "half" (a random 50-100% of the exponential ceiling) keeps many clients from retrying in step;
        # a Retry-After hint raises the wait to at most backoff_max_s.
        policy = retrying(
            on=_Retryable, attempts=self.max_retries + 1, base_s=self.backoff_base_s, max_s=self.backoff_max_s,
            jitter="half", sleep=self._sleep, before_sleep=self._log_retry,
        )
        try:
            return policy(self._attempt, payload, batch)
        except _Retryable as e:
            raise EmbedderUnavailable(
                f"embeddings endpoint {self.endpoint} failed after {self.max_retries + 1} attempt(s); "
                f"last error: {e}. Check that the server is running and reachable, or raise "
                "embedder.timeout_s / embedder.max_retries"
            ) from None

    def _attempt(self, payload: dict[str, Any], batch: list[str]) -> np.ndarray:
        self.requests_sent += 1
        try:
            resp = self._client.post(self.endpoint, json=payload)
        except httpx.TimeoutException as e:
            raise _Retryable(f"no answer within {self.timeout_s}s ({type(e).__name__})") from None
        except httpx.RequestError as e:  # connection refused or reset, protocol errors, ...
            raise _Retryable(f"{type(e).__name__}: {self._redact(str(e))}") from None
        status = resp.status_code
        if 300 <= status < 400:
            raise EmbedderError(
                f"embeddings endpoint {self.endpoint} answered HTTP {status}, a redirect to "
                f"{resp.headers.get('Location')!r}; set embedder.url to the address it redirects to"
            )
        if status in _RETRY_STATUS:
            raise _Retryable(
                f"HTTP {status}: {self._snippet(resp)}", parse_retry_after(resp.headers.get("Retry-After"))
            )
        if status >= 400:
            raise EmbedderError(
                f"embeddings endpoint {self.endpoint} answered HTTP {status}: {self._snippet(resp)}. "
                f"{self._hint(status)}"
            )
        return self._parse(resp, len(batch))

    def _snippet(self, resp: httpx.Response) -> str:
        text = resp.text.strip().replace("\n", " ")
        text = self._redact(text)
        return repr(text[:_SNIPPET] + ("..." if len(text) > _SNIPPET else ""))

    def _hint(self, status: int) -> str:
        if status in (401, 403):
            return "Set a valid token in COMPASS_EMBEDDER_API_KEY"
        if status == 404:
            return f"Check embedder.url {self.url!r}: it should be the API base, e.g. http://127.0.0.1:8080/v1"
        return f"Check embedder.model ({self.model!r}) and that the server accepts a list of strings as input"

    def _parse(self, resp: httpx.Response, n: int) -> np.ndarray:
        def bad(problem: str) -> EmbedderError:
            return EmbedderError(
                f"embeddings endpoint {self.endpoint} sent an unusable response: {problem}; body starts "
                f"{self._snippet(resp)}. Check that embedder.url points at an OpenAI-compatible API"
            )

        try:
            body = resp.json()
        except ValueError:
            raise bad("not JSON") from None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise bad("no 'data' list")
        if len(data) != n:
            raise bad(f"{len(data)} embeddings for {n} inputs")
        try:
            # The API does not promise order; "index" does.
            rows = sorted(data, key=lambda d: int(d["index"]))
            if [int(d["index"]) for d in rows] != list(range(n)):
                raise bad(f"indices are not 0..{n - 1}")
            vecs = [self._vector(d["embedding"]) for d in rows]
        except (KeyError, TypeError, ValueError) as e:
            raise bad(f"malformed item ({type(e).__name__}: {e})") from None
        dims = {len(v) for v in vecs}
        if len(dims) != 1 or 0 in dims:
            raise bad(f"embeddings of differing or zero lengths {sorted(dims)}")
        x = np.stack(vecs)
        if not np.isfinite(x).all():
            raise bad("non-finite values in an embedding")
        d = x.shape[1]
        if self._dim is None:
            self._dim = d
        elif d != self._dim:
            raise bad(f"dimension {d}, earlier responses had {self._dim}")
        return l2_normalize(x)

    @staticmethod
    def _vector(emb: Any) -> np.ndarray:
        if isinstance(emb, str):  # encoding_format "base64", should a server ignore our "float"
            return np.frombuffer(base64.b64decode(emb), dtype="<f4").astype(np.float32)
        v = np.asarray(emb, dtype=np.float32)
        if v.ndim != 1:
            raise ValueError(f"an embedding must be a flat list of numbers; got shape {v.shape}")
        return v

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"HttpEmbedder(model_id={self._model_id!r}, batch_size={self.batch_size})"
