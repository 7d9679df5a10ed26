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

from compass.errors import CompassError
from compass.languages import LanguagesConfig
from compass.route import RouteDecision, RouteError, Router, RouteTarget
from daemon.serving.adapters import AdapterLoadError, adapter_name, load_into
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
        self._peft: Any = None
        self._loaded: dict[str, tuple[str, str]] = {}  # adapter name -> (lang, version)
        self._refs: Counter[str] = Counter()
        self._retired: set[str] = set()
        self._table_lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self.listener: PromotionListener | _NoListener = NO_LISTENER
        self.load_errors = 0
        self.metrics = ServingMetrics()
        self.metrics.adapters_loaded.set_function(lambda: len(self._loaded))
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
                        self._load(code, target.version)
                    self._swap(code, target)
                    changed[code] = target
                except CompassError as e:
                    self.load_errors += 1
                    self.metrics.load_errors.inc()
                    log.error("serving: %s stays on %s: %s", code, self.router.table.get(code), e)
            return changed

    def _load(self, lang: str, version: str) -> None:
        name = adapter_name(lang, version)
        with self._table_lock:
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
                    if len(self._loaded) <= 1:
                        continue  # peft keeps at least one adapter; an unrouted one costs memory only
                    self._retired.discard(name)
                    self._loaded.pop(name, None)
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
        decisions, outs = self._routed(texts, lang, lambda name, batch: self._generate(name, batch, n_new))
        return [Generation(text, d, ids) for d, (text, ids) in zip(decisions, outs, strict=True)]

    def next_token_logits(self, texts: Sequence[str], lang: str | Sequence[str | None] | None = None
                          ) -> list[tuple[RouteDecision, torch.Tensor]]:
        """The routed model's next-token logits after each text (float32, CPU): scoring without generating."""
        decisions, outs = self._routed(texts, lang, self._logits)
        return list(zip(decisions, outs, strict=True))

    def _routed(self, texts: Sequence[str], lang: str | Sequence[str | None] | None,
                run: Callable[[str | None, list[str]], list[Any]]) -> tuple[list[RouteDecision], list[Any]]:
        """Route every text, hold a reference to each routed adapter, run ``run(adapter name, texts)`` per group
        of one adapter (chunks of ``serving.max_batch``), release the references; results in input order."""
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
                        results = run(name, [texts[i] for i in chunk])
                    for i, res in zip(chunk, results, strict=True):
                        out[i] = res
            return decisions, out
        finally:
            self._release([n for n in names if n])

    def _release(self, names: list[str]) -> None:
        idle = []
        with self._table_lock:
            self._refs.subtract(names)
            for name in set(names):
                if self._refs[name] <= 0:
                    del self._refs[name]
                    if name in self._retired:
                        idle.append(name)
        self._unload(idle)

    @contextmanager
    def _active(self, name: str | None) -> Iterator[Any]:
        """The model with adapter ``name`` active (None: the base model Θ alone, §3.2.5's fallback), locked."""
        with self._model_lock, torch.inference_mode():
            if self._peft is None:
                yield self.model
            elif name is None:
                with self._peft.disable_adapter():
                    yield self._peft
            else:
                self._peft.set_adapter(name)
                yield self._peft

    def _generate(self, name: str | None, texts: list[str], max_new_tokens: int) -> list[tuple[str, tuple[int, ...]]]:
        tok = self.tokenizer
        enc = tok(texts, return_tensors="pt", padding=True).to(self.device)
        with self._active(name) as model:
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

    def _logits(self, name: str | None, texts: list[str]) -> list[torch.Tensor]:
        enc = self.tokenizer(texts, return_tensors="pt", padding=True).to(self.device)
        with self._active(name) as model:
            logits = model(**enc).logits[:, -1, :]  # left padding: the last position is each text's last token
        return [row.float().cpu() for row in logits]

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
