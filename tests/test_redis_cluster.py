"""compass on a real 3-master Redis Cluster (``redis.cluster: true``): the client factory, the monitor windows of
infra/window/ (W_recent of eq. 4) with languages on different nodes, and the codebook pointer.

The fixture starts its own cluster on 127.0.0.1 (Debian's redis-server and redis-cli, free ports, one tmp dir per
node) and stops each node by its own PID."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis
from redis.cluster import RedisCluster, key_slot

from compass.cluster import make_clusterer
from deploy.local.process import free_ports, log_tail, tcp_answers
from infra.clients import redis_client
from infra.codebook import CodebookStore
from infra.errors import ServiceUnavailable
from infra.settings import RedisConfig
from infra.window import ApplyResult, Assignment, WindowStore

TOPIC = "compass.queries"
N_MASTERS = 3
START_TIMEOUT_S = 30.0
# One language per master with the slot ranges redis-cli gives 3 masters (0-5460, 5461-10922, 10923-16383):
# sw -> slot 4986, tr -> 6728, en -> 14775. The tests check this against the cluster's own slot map.
LANGS = ("sw", "tr", "en")

pytestmark = pytest.mark.skipif(
    not (shutil.which("redis-server") and shutil.which("redis-cli")), reason="needs redis-server and redis-cli"
)


@dataclass(frozen=True)
class Cluster:
    ports: tuple[int, ...]  # client ports of the masters; each node's bus port is separate (cluster-port)


def _node_conf(port: int, bus_port: int, node_dir: Path) -> str:
    return "\n".join([
        f"port {port}", f"cluster-port {bus_port}", "bind 127.0.0.1", "cluster-enabled yes",
        "cluster-config-file nodes.conf", "cluster-node-timeout 5000", "daemonize no", 'save ""',
        "appendonly no", f'dir "{node_dir}"', "",
    ])


def _wait(what: str, ok, logs: list[Path], timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p}\n{log_tail(p)}" for p in logs)
            raise RuntimeError(f"Redis Cluster: {what} not within {timeout_s} s\n{tails}")
        time.sleep(0.1)


def _cluster_ok(port: int) -> bool:
    with redis.Redis(port=port, socket_timeout=2) as node:
        try:
            return node.execute_command("CLUSTER INFO").get("cluster_state") == "ok"  # parsed into a dict
        except redis.RedisError:
            return False


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:  # each by its own PID
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    ports = free_ports(2 * N_MASTERS)  # client ports, then bus ports (port + 10000 may exceed 65535)
    client_ports, bus_ports = ports[:N_MASTERS], ports[N_MASTERS:]
    root = tmp_path_factory.mktemp("redis-cluster")
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []
    try:
        for port, bus in zip(client_ports, bus_ports, strict=True):
            node_dir = root / str(port)
            node_dir.mkdir()
            (node_dir / "redis.conf").write_text(_node_conf(port, bus, node_dir), encoding="utf-8")
            logs.append(node_dir / "redis.log")
            with logs[-1].open("wb") as log:
                procs.append(subprocess.Popen(["redis-server", str(node_dir / "redis.conf")], stdout=log,
                                              stderr=subprocess.STDOUT))
        _wait("nodes answering", lambda: all(tcp_answers(p) for p in client_ports), logs)
        create = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in client_ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )
        assert create.returncode == 0, f"redis-cli --cluster create failed:\n{create.stdout}\n{create.stderr}"
        _wait("cluster_state:ok on every node", lambda: all(_cluster_ok(p) for p in client_ports), logs)
        yield Cluster(tuple(client_ports))
    finally:
        _stop(procs)


@pytest.fixture
def client(cluster: Cluster) -> Iterator[RedisCluster]:
    """A cluster client from the factory, every master flushed before and after the test."""
    c = redis_client(RedisConfig(port=cluster.ports[0], cluster=True))
    c.flushall()
    yield c
    c.flushall()
    c.close()


def _node_of_slot(port: int) -> dict[int, int]:
    """Slot -> client port of the master serving it, from CLUSTER SLOTS of one node (the cluster's own map)."""
    owner = {}
    with redis.Redis(port=port) as node:
        for start, end, primary, *_ in node.execute_command("CLUSTER SLOTS"):
            for slot in range(int(start), int(end) + 1):
                owner[slot] = int(primary[1])
    return owner


def _keys_on(port: int) -> set[str]:
    """Every key that one node holds (a plain, non-cluster connection sees only its own node)."""
    with redis.Redis(port=port) as node:
        return {k.decode() for k in node.scan_iter(count=1000)}


def items(bucket_offsets: list[tuple[int, int]], partition: int = 0) -> list[Assignment]:
    """Assignments q<partition>-<offset> with the given (bucket, offset) pairs and text 't<offset>'."""
    return [Assignment(f"q{partition}-{off}", b, TOPIC, partition, off, text=f"t{off}") for b, off in bucket_offsets]


# ---------------------------------------------------------------------------------------------- the client


def test_redis_client_builds_a_cluster_client_that_answers(cluster):
    c = redis_client(RedisConfig(port=cluster.ports[0], cluster=True))
    try:
        assert isinstance(c, RedisCluster)
        assert c.ping() is True
        # one seed node was given; the client discovered all three masters
        assert sorted(n.port for n in c.get_primaries()) == sorted(cluster.ports)
        assert c.set("compass:{sw}:probe", "1") and c.get("compass:{sw}:probe") == b"1"
        assert c.delete("compass:{sw}:probe") == 1
    finally:
        c.close()


def test_a_plain_config_still_builds_a_single_node_client(cluster):
    c = redis_client(RedisConfig(port=cluster.ports[0]))
    try:
        assert type(c) is redis.Redis and c.ping() is True
    finally:
        c.close()


@pytest.mark.timeout(20)
def test_an_unreachable_seed_node_names_the_address_and_the_fix():
    (closed,) = free_ports(1)
    with pytest.raises(ServiceUnavailable) as err:
        redis_client(RedisConfig(port=closed, cluster=True, socket_timeout_s=1))
    assert err.value.service == "Redis"
    assert f"Redis is not reachable at 127.0.0.1:{closed}" in str(err.value)
    assert "compass stack up" in str(err.value)


# ---------------------------------------------------------------------------------------------- the windows


def test_each_language_lives_on_its_own_master(client, cluster):
    store = WindowStore(client)
    owner = _node_of_slot(cluster.ports[0])
    slots = {lang: {key_slot(k.encode()) for k in store.keys(lang).values()} for lang in LANGS}
    assert slots == {"sw": {4986}, "tr": {6728}, "en": {14775}}  # one slot per language: the {lang} hash tag
    assert {owner[4986], owner[6728], owner[14775]} == set(cluster.ports)  # three different masters


def test_windows_on_three_masters_count_exactly_once(client, cluster):
    store = WindowStore(client)
    batch = {
        "sw": (3, items([(0, 0), (1, 1), (1, 2), (3, 3), (2, 4)])),  # window keeps [1, 3, 2]
        "tr": (10, items([(2, 0), (2, 1), (0, 2)], partition=1)),  # [2, 2, 0]
        "en": (4, items([(3, 5), (3, 6), (3, 7), (1, 8), (0, 9)])),  # [3, 3, 1, 0]
    }
    assert store.apply_batch(batch, "v1", 4) == {
        "sw": ApplyResult(5, 0, 2, reset=True), "tr": ApplyResult(3, 0, 0, reset=True),
        "en": ApplyResult(5, 0, 1, reset=True),
    }
    expected = {"sw": [0, 1, 1, 1], "tr": [1, 0, 2, 0], "en": [1, 1, 0, 2]}
    offsets = {"sw": {f"{TOPIC}:0": 4}, "tr": {f"{TOPIC}:1": 2}, "en": {f"{TOPIC}:0": 9}}

    def check() -> None:
        for lang in LANGS:
            snap = store.snapshot(lang)
            assert snap.counts.dtype == np.int64 and snap.counts.tolist() == expected[lang]
            assert (snap.size, snap.codebook_version, snap.offsets) == (sum(expected[lang]), "v1", offsets[lang])

    check()
    # at-least-once delivery: the same batch again is all duplicates and changes nothing
    assert store.apply_batch(batch, "v1", 4) == {
        "sw": ApplyResult(0, 5, 0), "tr": ApplyResult(0, 3, 0), "en": ApplyResult(0, 5, 0),
    }
    check()
    # a re-delivered item next to a new one: only the new one counts (sw window [1, 3, 2] -> [3, 2, 0])
    assert store.apply_batch({"sw": (3, items([(2, 4), (0, 5)]))}, "v1", 4) == {"sw": ApplyResult(1, 1, 1)}
    assert store.snapshot("sw").counts.tolist() == [1, 0, 1, 1]
    assert store.recent("tr") == [("q1-0", "t0"), ("q1-1", "t1"), ("q1-2", "t2")]
    # the keys are physically spread: each master holds the six keys of exactly one language
    owner = _node_of_slot(cluster.ports[0])
    for lang in LANGS:
        k = store.keys(lang)
        held = {k["window"], k["counts"], k["offsets"], k["recent"], k["meta"]}
        assert _keys_on(owner[key_slot(k["window"].encode())]) == held  # no quality scores were sent


def test_languages_scans_every_master_and_reset_deletes_one_language(client, cluster):
    store = WindowStore(client)
    other = WindowStore(client, prefix="other")
    store.apply_batch({lang: (5, items([(0, 0), (1, 1)])) for lang in LANGS}, "v1", 2)
    other.apply("ar", 5, "v1", 2, items([(1, 0)]))
    # each node's own SCAN sees only its keys (5 per language); the store lists the languages of all masters
    assert sorted(len(_keys_on(p)) for p in cluster.ports) == [5, 5, 10]  # ar (slot 9934) shares tr's master
    assert store.languages() == ["en", "sw", "tr"]
    store.reset("tr")
    assert store.languages() == ["en", "sw"]
    snap = store.snapshot("tr")
    assert (snap.size, snap.codebook_version, snap.offsets, snap.counts.shape) == (0, None, {}, (0,))
    assert store.snapshot("en").counts.tolist() == [1, 1]
    store.reset()
    assert store.languages() == []
    assert other.languages() == ["ar"]
    # after a reset the offsets are gone: a rebuild counts the topic again
    assert store.apply("en", 5, "v1", 2, items([(0, 0)])) == ApplyResult(1, 0, 0, reset=True)


# ---------------------------------------------------------------------------------------------- the codebook


def _kmeans(k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = np.concatenate([c + rng.normal(0, 0.05, (30, 3)) for c in np.eye(3)])
    model = make_clusterer("kmeans", seed=seed, n_clusters=k)
    model.fit_predict((X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32))
    return model


def test_codebook_pointer_on_the_cluster(client, tmp_path):
    store = CodebookStore(tmp_path / "cb", client)
    assert store.current_version() is None
    first = store.publish(_kmeans(3), "m")
    assert store.current_version() == first.version
    assert client.get("compass:codebook:current") == first.version.encode()
    rev = store.publish(_kmeans(3, seed=2), "m", parent=first.version)  # a revision: same lineage
    assert rev.lineage == first.version and store.current_version() == rev.version
    second = store.publish(_kmeans(4, seed=1), "m")  # a new fit: a new lineage
    assert store.current_version() == second.version
    assert store.load().n_buckets == 5


def test_a_lease_on_an_untagged_key_works_on_the_cluster(client):
    # the codebook publisher's lease key has no hash tag: its fence counter must still share the key's slot
    from redis.cluster import key_slot

    from infra.lease import Lease

    a = Lease(client, "compass:codebook:publisher", "a", ttl_ms=5000)
    b = Lease(client, "compass:codebook:publisher", "b", ttl_ms=5000)
    assert key_slot(a._fence_key.encode()) == key_slot(b"compass:codebook:publisher")
    assert (a.acquire(), b.acquire()) == (1, None)
    assert a.release() and b.acquire() == 2
    tagged = Lease(client, "compass:{sw}:lease", "c", ttl_ms=5000)
    assert tagged._fence_key == "compass:{sw}:lease:fence" and tagged.acquire() == 1


# ------------------------------------------------------------------------------------------ daemon and worker


def test_daemon_and_worker_intake_end_to_end_on_the_cluster(cluster, services, topic_factory, tmp_path):
    """The daemon's whole check cycle and the worker's job intake on the 3-master cluster, with the real Kafka:
    three languages on three masters drift, each gets exactly one job; the worker moves the jobs into its queue
    (``{worker}`` keys, one slot), takes the per-language training lock, and its reports bring each language back
    from `updating` through the inbox, status and history keys of that language's own master."""
    import json

    from compass.languages import LanguagesConfig
    from daemon.scheduler.service import Daemon
    from daemon.worker.service import Worker, lock_key
    from infra.clients import kafka_producer
    from infra.lease import Lease
    from infra.messages import Event, encode
    from infra.reference import set_reference

    base = services.config
    cfg = base.model_copy(update={
        "redis": RedisConfig(port=cluster.ports[0], cluster=True),
        "kafka": base.kafka.model_copy(update={"jobs_topic": topic_factory(), "events_topic": topic_factory(),
                                               "dead_letter_topic": topic_factory()}),
        "daemon": base.daemon.model_copy(update={"events_group_id": f"cluster-daemon-{tmp_path.name}",
                                                 "stale_far_max_texts": 0}),
        "worker": base.worker.model_copy(update={"group_id": f"cluster-worker-{tmp_path.name}"}),
    })
    langs = LanguagesConfig.model_validate({"defaults": {"min_samples": 4, "window_size": 4, "theta": 0.2,
                                                         "cooldown_s": 100},
                                            "languages": {lang: {} for lang in LANGS}})
    client = redis_client(cfg.redis)
    client.flushall()
    store = WindowStore(client)
    for i, lang in enumerate(LANGS):
        store.apply_batch({lang: (4, [Assignment(f"{lang}{j}", 0, TOPIC, i, j) for j in range(4)])}, "v1", 3)
        set_reference(client, lang, probs=[0.5, 0.5, 0.0], codebook_version="v1", adapter_version="a1")
    daemon = Daemon(cfg, langs, owner="cluster-daemon", client=client)
    import torch

    class NoModel:  # the intake never touches the model
        pass

    worker = Worker(cfg, langs, client=client, model=torch.nn.Linear(1, 1), tokenizer=NoModel(), embedder=NoModel())
    try:
        now = 1_000_000.0
        results = {lang: daemon.check(lang, now) for lang in LANGS}
        assert {lang: (r.state, r.fired) for lang, r in results.items()} == {lang: ("drift", True) for lang in LANGS}
        taken = 0
        for _ in range(40):
            taken += worker.intake(timeout_ms=500)
            if taken >= 3:
                break
        assert sorted(e.job_id for e in worker.queue.pending()) == sorted(r.job.job_id for r in results.values())
        lock = Lease(client, lock_key("tr", cfg.redis.key_prefix), worker.owner, 5000)
        assert lock.acquire() is not None
        assert Lease(client, lock_key("tr", cfg.redis.key_prefix), "other", 5000).acquire() is None
        lock.release()

        producer = kafka_producer(cfg.kafka)
        for lang, r in results.items():
            for ev in (Event("update_started", lang, now + 1, r.job.job_id, {"attempt": 1}),
                       Event("update_finished", lang, now + 2, r.job.job_id, {"ok": True, "outcome": "finished"})):
                producer.send(cfg.kafka.events_topic, key=lang.encode(), value=encode(ev)).get(timeout=10)
        producer.close()
        queued = 0
        for _ in range(60):
            queued += daemon.poll_events(timeout_ms=500)
            if queued >= 6:
                break
        assert queued == 6
        after = {lang: daemon.check(lang, now + 3).state for lang in LANGS}
        assert after == {lang: "disarmed" for lang in LANGS}  # idle again; the same P_ref still drifts
        owner = _node_of_slot(cluster.ports[0])
        for lang in LANGS:
            status = json.loads(client.get(f"compass:{{{lang}}}:status"))
            assert status["phase"] == "idle" and status["last_update"]["outcome"] == "finished"
            port = owner[key_slot(f"compass:{{{lang}}}:status".encode())]
            assert f"compass:{{{lang}}}:status" in _keys_on(port)  # on the language's own master
    finally:
        daemon.stop()
        if worker._consumer is not None:
            worker._consumer.close()
        worker.producer.close()
        client.flushall()
        client.close()
