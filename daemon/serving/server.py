"""``AdapterServer``: the base model loaded once, every language's current adapter loaded once into one peft
model, generation routed per query (§3.2.5).

Concurrency. Three locks, never nested across each other except table -> nothing:
  * ``_table_lock``: routing decisions and adapter reference counts change together, so a request that was
    routed to ``it@v1`` holds a reference to it before a promotion can retire it;
  * ``_model_lock``: ``set_adapter`` + ``generate`` (peft's active adapter is model-global state), and
    loading / unloading adapters;
  * ``_sync_lock``: one registry sync at a time (the promotion listener and the registry poll both sync).
A promotion loads the new version beside the old one, then swaps the routing entry; requests already routed
finish on the old version, which is unloaded when its last request releases it.

OpenAI-style requests (``complete``/``stream``, daemon/api/openai_compat.py) take the same route: ``model="auto"``
goes through ``Router.decide`` under ``_table_lock`` exactly as ``generate`` does; a pinned adapter name takes a
reference the same way. A stream generates on a thread of its own that holds ``_model_lock`` for the whole
generation (other requests queue behind it, as behind any generation) and releases its reference when done; the
HTTP side only reads the streamer's queue, under no lock. Adapters loaded at runtime from a PEFT directory
(``load_adapter_dir``, vLLM's /v1/load_lora_adapter) live beside the registry's; ``unload_adapter`` retires one
(no new request can pin it), waits until its in-flight requests released it, then deletes it.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import StoppingCriteriaList, TextIteratorStreamer

from compass.errors import CompassError
from compass.expand import get_spec, load_expanded, set_language
from compass.expand.io import MANIFEST as EXPAND_MANIFEST
from compass.languages import LanguagesConfig
from compass.route import RouteDecision, RouteError, Router, RouteTarget
from daemon.serving.adapters import AdapterLoadError, adapter_name, load_into, read_peft_dir
from daemon.serving.chat import Completion, RequestError, Sampling, Served, StopBuffer, StopOn, cut_at_stop
from daemon.serving.metrics import ServingMetrics
from infra.settings import ServiceConfig

if TYPE_CHECKING:
    from compass.registry import AdapterRegistry
    from daemon.serving.listener import PromotionListener

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Generation:
    """One answer: the generated continuation and the routing decision that produced it."""

    text: str
    decision: RouteDecision
    token_ids: tuple[int, ...]

    @property
    def language(self) -> str:
        return self.decision.language

    @property
    def adapter_version(self) -> str | None:
        return self.decision.version

    @property
    def kind(self) -> str:
        return self.decision.kind

    @property
    def reason(self) -> str:
        return self.decision.reason

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "language": self.language, "adapter_version": self.adapter_version,
                "kind": self.kind, "reason": self.reason}


class _NoListener:
    """The listener of a server that does not follow promotions (start_listener was not called)."""

    state = "off"

    def stop(self) -> None:
        pass


NO_LISTENER = _NoListener()


def _ignore_decisions(decisions: list[RouteDecision]) -> None:
    pass


class AdapterServer:
    """Routes and generates. ``model``/``tokenizer`` may be given (tests, or a caller sharing a loaded model);
    otherwise ``cfg.model`` is loaded. ``languages``: the configured languages (or a list of codes)."""

    def __init__(self, cfg: ServiceConfig, languages: LanguagesConfig | Sequence[str], model: Any = None,
                 tokenizer: Any = None, registry: AdapterRegistry | None = None, sync: bool = True):
        from compass.adapt import load_base, load_tokenizer, resolve_device
        from compass.langid import make_identifier
        from compass.registry import AdapterRegistry

        self.cfg = cfg
        codes = languages.enabled if isinstance(languages, LanguagesConfig) else list(languages)
        self.registry = registry if registry is not None else AdapterRegistry(cfg.adapters.registry)
        self.router = Router(make_identifier(cfg.langid, codes), self.registry, codes)
        self.device = resolve_device(cfg.model.device)
        dtype = getattr(torch, cfg.model.dtype)
        if model is None or isinstance(model, str | Path):
            path = model if model is not None else cfg.model.path
            if path is None:
                raise CompassError("model.path is not set; point it at a local model directory (or the directory of "
                                   "model.gguf_file); compass.adapt.packaged_model('smollm2') gives the packaged "
                                   "SmolLM2's directory and GGUF file")
            if (Path(path) / EXPAND_MANIFEST).is_file():  # a `compass expand` model: language experts (issue 18)
                model, _, _ = load_expanded(path, device=self.device)
                model = model.to(dtype)
            else:
                model = load_base(path, dtype=dtype, device=self.device, gguf_file=cfg.model.gguf_file)
            tokenizer = tokenizer or load_tokenizer(path, cfg.model.gguf_file)
        else:
            model = load_base(model, dtype=dtype, device=self.device)
        if tokenizer is None:
            raise CompassError("a model object was given without its tokenizer; pass tokenizer=")
        tokenizer.padding_side = "left"  # decoder-only batches: pad on the left so new tokens follow the prompt
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        self.model = model.eval()  # the plain base model until the first adapter wraps it in a PeftModel
        # an upcycled model routes each request's rows to the expert of its language (compass/expand, hard mode)
        self.experts = get_spec(model)  # None for a dense model
        self._peft: Any = None
        self._loaded: dict[str, tuple[str, str]] = {}  # adapter name -> (lang, version)
        self._kinds: dict[str, str] = {}  # adapter name -> manifest kind, or "external" (load_adapter_dir)
        self._external: dict[str, str] = {}  # runtime-loaded adapter name -> its PEFT directory
        self._pending: set[str] = set()  # external names being loaded: a second load of one name is refused
        self._refs: Counter[str] = Counter()
        self._retired: set[str] = set()
        self._table_lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._released = threading.Condition(self._table_lock)  # notified when requests release references
        self.listener: PromotionListener | _NoListener = NO_LISTENER
        self.load_errors = 0
        self.metrics = ServingMetrics()
        self.metrics.adapters_loaded.set_function(lambda: len(self._loaded) + len(self._external))
        # Test/diagnostic hook: called with the decisions of a request after routing, before generation.
        self.on_routed: Callable[[list[RouteDecision]], None] = _ignore_decisions
        if sync:
            self.sync()

    # ----- adapters -----
    @property
    def loaded(self) -> dict[str, tuple[str, str]]:
        """Adapter names now in the model -> (language, version)."""
        with self._table_lock:
            return dict(self._loaded)

    def sync(self, lang: str | None = None, expect: str | None = None) -> dict[str, RouteTarget | None]:
        """Bring the served adapters of ``lang`` (or every language) in line with the registry's pointers: load
        what changed, then swap the routing entry. Returns the changed entries. Errors are logged per language
        and leave the language on what it served before. ``expect``: the version an event announced (a
        mismatch is logged; the registry pointer wins, being the commit point)."""
        with self._sync_lock:
            langs = self.router.languages if lang is None else (lang,)
            changed: dict[str, RouteTarget | None] = {}
            for code in langs:
                try:
                    target = self.router.read_target(code)
                    if expect is not None and (target is None or target.version != expect):
                        log.warning("serving: %s was announced as %s but the registry points at %s; serving the "
                                    "registry's", code, expect, target.version if target else None)
                    if target == self.router.table.get(code):
                        continue
                    if target is not None:
                        self._load(code, target.version, target.kind)
                    self._swap(code, target)
                    changed[code] = target
                except CompassError as e:
                    self.load_errors += 1
                    self.metrics.load_errors.inc()
                    log.error("serving: %s stays on %s: %s", code, self.router.table.get(code), e)
            return changed

    def _load(self, lang: str, version: str, kind: str = "compass") -> None:
        name = adapter_name(lang, version)
        with self._table_lock:
            self._kinds[name] = kind
            if name in self._loaded:
                self._retired.discard(name)  # e.g. a rollback to a version still draining
                return
        tensors, config, _ = self.registry.read_version(lang, version)
        where = f"{self.registry.url}/{lang}/versions/{version}"
        with self._model_lock:
            try:
                self._peft = load_into(self._peft if self._peft is not None else self.model, name, tensors, config,
                                       where)
            except AdapterLoadError:
                raise
            self.model = self._peft
        with self._table_lock:
            self._loaded[name] = (lang, version)
        log.info("serving: loaded %s", name)

    def _swap(self, lang: str, target: RouteTarget | None) -> None:
        idle: list[str] = []
        with self._table_lock:
            old = self.router.table.get(lang)
            self.router.set_target(lang, target)
            if old is not None:
                old_name = adapter_name(lang, old.version)
                if target is None or adapter_name(lang, target.version) != old_name:
                    self._retired.add(old_name)
                    if self._refs[old_name] == 0:
                        idle.append(old_name)
        log.info("serving: %s now routes to %s (was %s)", lang, target, old)
        self._unload(idle)

    def _unload(self, names: list[str]) -> None:
        for name in names:
            with self._model_lock:
                with self._table_lock:
                    if self._refs[name] or name not in self._retired:
                        continue  # re-acquired or un-retired meanwhile
                    if len(self._loaded) + len(self._external) <= 1:
                        continue  # peft keeps at least one adapter; an unrouted one costs memory only
                    self._retired.discard(name)
                    self._loaded.pop(name, None)
                    self._external.pop(name, None)
                    self._kinds.pop(name, None)
                self._peft.delete_adapter(name)
            log.info("serving: unloaded %s", name)

    # ----- requests -----
    def route(self, text: str, lang: str | None = None) -> RouteDecision:
        return self.router.route(text, lang)

    def generate(self, texts: Sequence[str], max_new_tokens: int | None = None,
                 lang: str | Sequence[str | None] | None = None) -> list[Generation]:
        """Greedy continuations of ``texts``, each on its routed adapter; ``lang`` overrides detection for all
        texts (a code) or per text (a list). Texts of one adapter run as one batch (at most ``serving.max_batch``)."""
        n_new = int(max_new_tokens or self.cfg.serving.max_new_tokens)
        if not 1 <= n_new <= 4096:
            raise RouteError(f"max_new_tokens is {max_new_tokens!r}; give an integer in [1, 4096]")
        decisions, outs = self._routed(texts, lang, lambda name, batch, langs: self._generate(name, batch, n_new,
                                                                                                 langs))
        return [Generation(text, d, ids) for d, (text, ids) in zip(decisions, outs, strict=True)]

    def next_token_logits(self, texts: Sequence[str], lang: str | Sequence[str | None] | None = None
                          ) -> list[tuple[RouteDecision, torch.Tensor]]:
        """The routed model's next-token logits after each text (float32, CPU): scoring without generating."""
        decisions, outs = self._routed(texts, lang, self._logits)
        return list(zip(decisions, outs, strict=True))

    def _routed(self, texts: Sequence[str], lang: str | Sequence[str | None] | None,
                run: Callable[[str | None, list[str], list[str | None]], list[Any]]
                ) -> tuple[list[RouteDecision], list[Any]]:
        """Route every text, hold a reference to each routed adapter, run ``run(adapter name, texts, languages)``
        per group of one adapter (chunks of ``serving.max_batch``), release the references; results in input
        order."""
        if isinstance(texts, str):
            raise RouteError("texts must be a list of strings, not one string; wrap it: [text]")
        texts = list(texts)
        langs = list(lang) if isinstance(lang, list | tuple) else [lang] * len(texts)
        if len(langs) != len(texts):
            raise RouteError(f"lang has {len(langs)} entries for {len(texts)} texts; give one per text or one code")
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise RouteError(f"texts[{i}] is {t!r}; give a non-empty string")
        idents = [self.router.detect(t, lg) for t, lg in zip(texts, langs, strict=True)]
        with self._table_lock:  # decide and take references together: nothing routed here can be unloaded
            table = self.router.table
            decisions = [self.router.decide(i, lg is not None, table) for i, lg in zip(idents, langs, strict=True)]
            names = [adapter_name(d.language, d.version) if d.version else None for d in decisions]
            self._refs.update(n for n in names if n)
        for d in decisions:
            self.metrics.requests.labels(d.language, d.kind).inc()
        try:
            self.on_routed(decisions)
            out: list[Any] = [None] * len(texts)
            groups: dict[str | None, list[int]] = {}
            for i, name in enumerate(names):
                groups.setdefault(name, []).append(i)
            step = self.cfg.serving.max_batch
            for name, idx in groups.items():
                for s in range(0, len(idx), step):
                    chunk = idx[s:s + step]
                    with self.metrics.batch_seconds.labels(decisions[chunk[0]].language).time():
                        results = run(name, [texts[i] for i in chunk], [decisions[i].language for i in chunk])
                    for i, res in zip(chunk, results, strict=True):
                        out[i] = res
            return decisions, out
        finally:
            self._release([n for n in names if n])

    def _release(self, names: list[str]) -> None:
        idle = []
        with self._table_lock:
            self._refs.subtract(names)
            self._released.notify_all()
            for name in set(names):
                if self._refs[name] <= 0:
                    del self._refs[name]
                    if name in self._retired:
                        idle.append(name)
        self._unload(idle)

    @contextmanager
    def _active(self, name: str | None, langs: Sequence[str | None] | None = None) -> Iterator[Any]:
        """The model with adapter ``name`` active (None: the base model Θ alone, §3.2.5's fallback), locked.
        ``langs``: each row's language, which picks its expert on an expanded model (ignored otherwise)."""
        with self._model_lock, torch.inference_mode():
            if self.experts is not None:
                set_language(self.model, list(langs) if langs is not None else None)
            if self._peft is None:
                yield self.model
            elif name is None:
                with self._peft.disable_adapter():
                    yield self._peft
            else:
                self._peft.set_adapter(name)
                yield self._peft

    def _generate(self, name: str | None, texts: list[str], max_new_tokens: int,
                  langs: Sequence[str | None] | None = None) -> list[tuple[str, tuple[int, ...]]]:
        tok = self.tokenizer
        enc = tok(texts, return_tensors="pt", padding=True).to(self.device)
        with self._active(name, langs) as model:
            seqs = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                  pad_token_id=tok.pad_token_id)
        new = seqs[:, enc["input_ids"].shape[1]:].tolist()
        eos = tok.eos_token_id
        results = []
        for row in new:
            if eos is not None and eos in row:
                row = row[:row.index(eos) + 1]  # what follows the first EOS is padding
            results.append((tok.decode(row, skip_special_tokens=True), tuple(row)))
        return results

    def _logits(self, name: str | None, texts: list[str], langs: Sequence[str | None] | None = None
                ) -> list[torch.Tensor]:
        enc = self.tokenizer(texts, return_tensors="pt", padding=True).to(self.device)
        with self._active(name, langs) as model:
            logits = model(**enc).logits[:, -1, :]  # left padding: the last position is each text's last token
        return [row.float().cpu() for row in logits]

    # ----- OpenAI-style requests (daemon/api/openai_compat.py) -----
    @property
    def base_name(self) -> str:
        """The base model's id in GET /v1/models: its directory's name (``model.path``), else ``base``."""
        path = self.cfg.model.path or getattr(getattr(self.model, "config", None), "name_or_path", None)
        return Path(str(path)).name if path else "base"

    def models(self) -> list[dict[str, Any]]:
        """What a request can name as ``model``: the base model, then every adapter being served (registry
        versions as ``LANG@VERSION``, runtime-loaded ones by their name); retired ones (draining) are left out."""
        with self._table_lock:
            adapters = [(n, lang, v) for n, (lang, v) in self._loaded.items() if n not in self._retired]
            adapters += [(n, None, None) for n in self._external if n not in self._retired]
            kinds = dict(self._kinds)
        out: list[dict[str, Any]] = [{"id": self.base_name, "parent": None, "language": None, "version": None,
                                      "kind": "base"}]
        for name, lang, version in sorted(adapters, key=lambda a: a[0]):
            out.append({"id": name, "parent": self.base_name, "language": lang, "version": version,
                        "kind": kinds.get(name, "external" if lang is None else "compass")})
        return out

    def _reserve(self, model: str, text: str) -> tuple[Served, str | None]:
        """Pick the model of one request and hold a reference to its adapter (release with ``_release``).
        ``model == "auto"``: the §3.2.5 decision on ``text``; else the base model's id or an adapter name."""
        if model == "auto":
            ident = self.router.detect(text)
            with self._table_lock:  # decide and take the reference together, as _routed does
                d = self.router.decide(ident, False, self.router.table)
                name = adapter_name(d.language, d.version) if d.version else None
                if name:
                    self._refs[name] += 1
            self.metrics.requests.labels(d.language, d.kind).inc()
            try:
                self.on_routed([d])
            except BaseException:
                self._release([name] if name else [])
                raise
            return Served(name or self.base_name, name, d.language, d.version, d.kind, d.reason, True), name
        if model == self.base_name:
            return Served(model, None, None, None, "base", "pinned by the request's model", False), None
        key = model.replace(".", "_") if "@" in model else model  # LANG@1.2 is served as LANG@1_2
        with self._table_lock:
            if key in self._retired or (key not in self._loaded and key not in self._external):
                raise RequestError(f"model {model!r} is not served here; GET /v1/models lists what is: 'auto' "
                                   f"(route by language), {self.base_name!r} (the base model) and the loaded "
                                   "adapters", param="model", code="model_not_found", status=404)
            self._refs[key] += 1
            lang, version = self._loaded.get(key, (None, None))
            kind = self._kinds.get(key, "external")
        return Served(key, key, lang, version, kind, "pinned by the request's model", False), key

    def _encode(self, prompt: str, special: bool) -> dict[str, torch.Tensor]:
        enc = self.tokenizer([prompt], return_tensors="pt", add_special_tokens=special).to(self.device)
        if enc["input_ids"].shape[1] == 0:
            raise RequestError("the prompt tokenises to no tokens; send text", param="prompt")
        return enc

    def _run(self, name: str | None, enc: dict[str, torch.Tensor], sampling: Sampling,
             streamer: TextIteratorStreamer | None = None, cancel: threading.Event | None = None,
             lang: str | None = None) -> list[int]:
        """The new token ids of one prompt (cut after the first EOS) on adapter ``name`` (None: base model);
        ``lang`` picks the expert on an expanded model."""
        n = enc["input_ids"].shape[1]
        stop = StoppingCriteriaList([StopOn(self.tokenizer, n, sampling.stop, cancel)])
        with self._active(name, [lang]) as model:
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)  # the model lock serialises generation: the global RNG is ours
            seqs = model.generate(**enc, max_new_tokens=sampling.max_new_tokens,
                                  pad_token_id=self.tokenizer.pad_token_id, stopping_criteria=stop,
                                  streamer=streamer, **sampling.generate_kwargs())
        new = seqs[0, n:].tolist()
        eos = self.tokenizer.eos_token_id
        return new[:new.index(eos) + 1] if eos is not None and eos in new else new

    def complete(self, prompt: str, text: str, model: str, sampling: Sampling, special: bool = True) -> Completion:
        """One continuation of ``prompt`` on the model ``model`` names ("auto": routed by ``text``'s language).
        ``special``: tokenising adds the tokenizer's special tokens (False for chat-template prompts)."""
        enc = self._encode(prompt, special)
        served, name = self._reserve(model, text)
        try:
            with self.metrics.batch_seconds.labels(served.language or "-").time():
                new = self._run(name, enc, sampling, lang=served.language)
        finally:
            self._release([name] if name else [])
        out, hit = cut_at_stop(self.tokenizer.decode(new, skip_special_tokens=True), sampling.stop)
        eos = self.tokenizer.eos_token_id
        return Completion(out, "stop" if hit or (new and new[-1] == eos) else "length",
                          enc["input_ids"].shape[1], len(new), served)

    def stream(self, prompt: str, text: str, model: str, sampling: Sampling, special: bool = True) -> CompletionStream:
        """As ``complete``, but the text arrives in pieces while it is generated. Routing and errors happen
        here, before the first piece; iterate the result for the pieces, then read its ``completion``."""
        enc = self._encode(prompt, special)
        served, name = self._reserve(model, text)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel = threading.Event()
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                result["new"] = self._run(name, enc, sampling, streamer, cancel, lang=served.language)
            except BaseException as e:  # noqa: BLE001 - handed to the reader, which re-raises it
                result["error"] = e
                streamer.end()  # the reader would otherwise wait for text forever
            finally:
                self._release([name] if name else [])

        thread = threading.Thread(target=work, name=f"compass-stream-{served.model}", daemon=True)
        thread.start()
        return CompletionStream(served, streamer, thread, cancel, result, sampling.stop, enc["input_ids"].shape[1],
                                self.tokenizer.eos_token_id)

    # ----- runtime adapters (vLLM's /v1/load_lora_adapter and /v1/unload_lora_adapter) -----
    def load_adapter_dir(self, name: str, path: str | Path) -> None:
        """Load the PEFT adapter directory ``path`` as ``name`` (beside every served adapter; never in place)."""
        bad = [c for c in ("@", ".", "/", " ") if c in name]
        if not name or bad or len(name) > 128:
            raise RequestError(f"lora_name {name!r} is not a usable name: give 1-128 characters without "
                               "'@' (reserved for registry adapters LANG@VERSION), '.', '/' or spaces, e.g. "
                               "'sql-adapter'", param="lora_name")
        with self._table_lock:
            if name in (self.base_name, "auto") or name in self._external or name in self._pending:
                raise RequestError(f"The lora adapter {name!r} has already been loaded (or is the name of the base "
                                   "model or 'auto'); unload it first (POST /v1/unload_lora_adapter) or pick another "
                                   "lora_name", param="lora_name")
            self._pending.add(name)
        try:
            tensors, config = read_peft_dir(path)
            with self._model_lock:
                self._peft = load_into(self._peft if self._peft is not None else self.model, name, tensors, config,
                                       str(path))
                self.model = self._peft
            with self._table_lock:
                self._external[name] = str(path)
                self._kinds[name] = "external"
        finally:
            with self._table_lock:
                self._pending.discard(name)
        log.info("serving: loaded %s from %s", name, path)

    def unload_adapter(self, name: str, timeout: float | None = None) -> None:
        """Retire runtime-loaded adapter ``name`` (no new request can pin it) and wait until the requests using
        it have finished, then delete it. Registry adapters follow the registry's pointers instead."""
        with self._table_lock:
            if name not in self._external or name in self._retired:
                known = sorted(n for n in self._external if n not in self._retired)
                raise RequestError(f"The lora adapter {name!r} cannot be found among the adapters loaded with "
                                   f"/v1/load_lora_adapter ({known}); registry adapters LANG@VERSION follow the "
                                   "registry's promotions",
                                   param="lora_name", code="model_not_found", status=404)
            self._retired.add(name)
            if not self._released.wait_for(lambda: self._refs[name] <= 0, timeout):
                raise RequestError(f"adapter {name!r} is still in use after {timeout} s; it is retired and goes when "
                                   "its last request ends", param="lora_name", code="in_use", status=503)
        self._unload([name])

    # ----- lifecycle -----
    def start_listener(self, poll_s: float = 30.0, topic: str | None = None) -> PromotionListener:
        """Follow promotions on ``compass.events`` (and poll the registry every ``poll_s`` as a fallback)."""
        from daemon.serving.listener import PromotionListener

        if self.listener is NO_LISTENER:
            self.listener = PromotionListener(self, self.cfg.kafka, self.cfg.serving.events_group_id,
                                              poll_s=poll_s, topic=topic)
            self.listener.start()
        return self.listener

    def ready(self) -> dict[str, str]:
        """Readiness checks: the model is loaded; promotions come from Kafka or (degraded) the registry poll."""
        return {"model": "ok", "events": self.listener.state, "adapters": str(len(self.router.table))}

    def close(self) -> None:
        self.listener.stop()
        self.listener = NO_LISTENER


class CompletionStream:
    """The pieces of one streamed continuation (iterate once), then its ``completion`` (finish reason, token
    counts). Leaving the iteration early (the client went away) ends the generation at its next token."""

    def __init__(self, served: Served, streamer: TextIteratorStreamer, thread: threading.Thread,
                 cancel: threading.Event, result: dict[str, Any], stop: Sequence[str], prompt_tokens: int,
                 eos: int | None):
        self.served = served
        self._streamer, self._thread, self._cancel, self._result = streamer, thread, cancel, result
        self._stop, self._eos = tuple(stop), eos
        self.completion = Completion(prompt_tokens=prompt_tokens, served=served)

    def __iter__(self) -> Iterator[str]:
        buf, sent = StopBuffer(self._stop), []
        try:
            for chunk in self._streamer:
                piece = buf.push(chunk)
                if piece:
                    sent.append(piece)
                    yield piece
                if buf.stopped:
                    self._cancel.set()  # a stop string ended the text: stop generating too
                    break
            piece = buf.flush()
            if piece:
                sent.append(piece)
                yield piece
            self._thread.join()
            if "error" in self._result:
                raise self._result["error"]
            new = self._result["new"]
            self.completion.text = "".join(sent)
            self.completion.completion_tokens = len(new)
            self.completion.finish_reason = "stop" if buf.stopped or (new and new[-1] == self._eos) else "length"
        finally:
            self._cancel.set()
