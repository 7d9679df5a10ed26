"""One serving target over HTTP: vLLM's runtime LoRA protocol (``POST /v1/load_lora_adapter``,
``/v1/unload_lora_adapter``), which vLLM, SGLang and `compass serve --allow-lora-updates` speak, ``GET /v1/models``
for what is loaded, and a 1-token completion that confirms a loaded adapter answers."""

from __future__ import annotations

import os

import httpx

from compass.errors import CompassError
from infra.settings.serving import ServingTarget

CONFIRM = {"prompt": "ping", "max_tokens": 1, "temperature": 0}
_BODY_CHARS = 300  # of an error answer quoted in the message


class TargetError(CompassError, RuntimeError):
    """A target refused or failed a request; the message names the target, the request and what it said."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status  # the HTTP status the target answered, if it answered


class TargetDown(TargetError):
    """A target did not answer at all (connection refused, timeout): retried with back-off."""


class TargetClient:
    """Requests to one target. ``transport``: an httpx transport (tests may pass one; production uses the
    network)."""

    def __init__(self, target: ServingTarget, timeout_s: float, transport: httpx.BaseTransport | None = None):
        self.target = target
        self.http = httpx.Client(base_url=target.url, timeout=timeout_s, transport=transport)

    def close(self) -> None:
        self.http.close()

    def _headers(self) -> dict[str, str]:
        var = self.target.token_env
        if var is None:
            return {}
        token = os.environ.get(var)  # read per request: a rotated key takes effect without a restart
        if not token:
            raise TargetError(f"target {self.target.name!r}: serving.targets token_env names {var} but that "
                              f"environment variable is not set; export {var}=<the server's API key> for `compass "
                              "sync`, or remove token_env")
        return {"Authorization": f"Bearer {token}"}

    def _call(self, method: str, path: str, what: str, json: dict | None = None) -> httpx.Response:
        where = f"target {self.target.name!r} ({self.target.kind} at {self.target.url})"
        try:
            r = self.http.request(method, path, json=json, headers=self._headers())
        except httpx.TransportError as e:
            raise TargetDown(f"{where} is unreachable ({type(e).__name__}: {e}) for {what}; retrying with back-off "
                             "(is the server running at that url?)") from None
        if r.status_code >= 400:
            hint = ""
            if r.status_code in (401, 403):
                hint = ("; check token_env, and that runtime LoRA updates are on (vLLM: "
                        "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True; compass serve: --allow-lora-updates)")
            elif r.status_code == 404 and path.endswith("_lora_adapter"):
                hint = ("; either the server lacks vLLM's runtime LoRA protocol (SGLang: start it with "
                        "--enable-lora) or it cannot read the directory (serving.export_dir must be a volume "
                        "every target mounts at the same path)")
            raise TargetError(f"{where} answered {r.status_code} to {what}: {r.text[:_BODY_CHARS]}{hint}",
                              r.status_code)
        return r

    def models(self) -> list[str]:
        """The ids of GET /v1/models (the base model, the loaded adapters, ...)."""
        r = self._call("GET", "/v1/models", "GET /v1/models")
        try:
            return [str(m["id"]) for m in r.json()["data"]]
        except (ValueError, KeyError, TypeError) as e:
            raise TargetError(f"target {self.target.name!r}: GET /v1/models is not OpenAI's model list ({e}); is "
                              f"{self.target.url} an OpenAI-compatible server?") from None

    def load(self, name: str, path: str) -> None:
        """Load the PEFT directory ``path`` (on the target's disk) as ``name``; a name the target already has (a load
        whose answer was lost) counts as done: the confirm that follows proves it answers."""
        try:
            self._call("POST", "/v1/load_lora_adapter", f"loading {name} from {path}",
                       {"lora_name": name, "lora_path": path})
        except TargetError as e:
            if e.status != 400 or "already" not in str(e):  # vLLM, compass: "... has already been loaded"
                raise

    def unload(self, name: str) -> None:
        """Unload ``name``; one the target no longer has counts as done."""
        try:
            self._call("POST", "/v1/unload_lora_adapter", f"unloading {name}", {"lora_name": name})
        except TargetError as e:
            if e.status != 404:  # vLLM and compass serve answer 404 to a name they do not have
                raise

    def confirm(self, name: str) -> None:
        """A 1-token completion on ``name``: it is loaded and answers."""
        r = self._call("POST", "/v1/completions", f"a 1-token completion on {name}", {"model": name, **CONFIRM})
        try:
            r.json()["choices"][0]
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise TargetError(f"target {self.target.name!r}: the completion on {name} is not OpenAI's completion "
                              f"shape ({e}): {r.text[:_BODY_CHARS]}") from None
