"""The far share measured incrementally (daemon/scheduler/farshare.py, issue 20) on the real Redis: the same share as
reading and embedding all the newest entries on every check, whatever the windows do between checks (move by a
few, by more than the entries kept, not at all, reset, lose their recent list), embedding only the new texts."""

from __future__ import annotations

from itertools import count

import numpy as np
import pytest

from compass.cluster import make_clusterer
from daemon.scheduler.farshare import RecentFarShare
from infra.codebook import CodebookStore
from infra.window import Assignment, WindowStore

KEPT = 30  # daemon.stale_far_max_texts here
FAR_VEC = -np.ones(3) / np.sqrt(3)  # 1 + 1/sqrt(3) from every centroid: far; e_i is a centroid: near
_offsets = count(1)


class TextEmbedder:
    """"far ..." to FAR_VEC, any other text to a centroid; counts the texts it embeds."""

    model_id = "fixed:test"
    dim = 3

    def __init__(self) -> None:
        self.texts = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.texts += len(texts)
        return np.asarray([FAR_VEC if t.startswith("far") else np.eye(3)[len(t) % 3] for t in texts],
                          dtype=np.float32)

    def close(self) -> None:
        pass


@pytest.fixture
def setup(services, redis, tmp_path):
    """(config keeping KEPT texts, a calibrated codebook version, a second one)."""
    base = services.config
    config = base.model_copy(update={
        "consumer": base.consumer.model_copy(update={"codebook_dir": tmp_path / "cb"}),
        "daemon": base.daemon.model_copy(update={"stale_far_max_texts": KEPT}),
    })
    store = CodebookStore(tmp_path / "cb", redis, base.redis.key_prefix)
    X = np.asarray([np.cos(a) * np.eye(3)[i] + s * np.sin(a) * np.eye(3)[(i + 1) % 3]
                    for i, a in enumerate((0.1, 0.2, 0.3)) for s in (1.0, -1.0)], dtype=np.float32)
    model = make_clusterer("kmeans", seed=0, n_clusters=3)
    model.fit_predict(X)
    return config, store.publish(model, "fixed:test", X_fit=X).version, store.publish(model, "fixed:test",
                                                                                      X_fit=X).version


def apply(windows: WindowStore, lang: str, n: int, rng: np.random.Generator, version: str) -> None:
    texts = rng.choice(["far away", "near", "nearer", "close by", "", None], size=n)
    items = [Assignment(f"q{o}", int(rng.integers(0, 3)), "compass.queries", 0, o, t)
             for t, o in zip(texts, (next(_offsets) for _ in range(n)), strict=True)]
    if items:
        windows.apply_batch({lang: (50, items)}, version, 4)


@pytest.mark.parametrize("recent_max", [5000, KEPT // 3])  # the consumers may keep fewer entries than KEPT
def test_incremental_far_share_measures_as_measuring_all(setup, redis, recent_max):
    config, version, newer = setup
    windows, rng = WindowStore(redis, recent_max=recent_max), np.random.default_rng(0)
    inc_embedder, all_embedder = TextEmbedder(), TextEmbedder()
    inc = RecentFarShare(config, windows, redis, inc_embedder)
    every = RecentFarShare(config, windows, redis, all_embedder, incremental=False)
    langs, shares = ("sw", "yo", "ha"), set()
    for step in range(60):
        v = newer if step >= 40 else version  # a new codebook: every kept text measured again
        for lang in langs:
            apply(windows, lang, int(rng.choice([0, 0, 1, 2, 3, 5, 7, 9, KEPT - 1, KEPT + 1, 90])), rng, v)
        if step == 15:
            windows.reset("yo")  # seen back to 0, recent gone
        if step == 25:
            redis.delete(windows.keys("ha")["recent"])  # the recent list expired; seen kept
        snaps = {lang: windows.snapshot(lang) for lang in langs}
        if step % 2:
            inc.prefetch(snaps)  # what a round does first
        for lang in langs:
            got, expected = inc(lang, snaps[lang]), every(lang, snaps[lang])
            assert got == expected, (step, lang)
            shares.add(expected)
    assert len(shares) > 10 and None in shares  # the cases met: many shares, and no text (reset, expired)
    if recent_max > KEPT:  # only the new texts embedded (all again at `newer`); windows here often move by > KEPT
        assert inc_embedder.texts < all_embedder.texts / 2


def test_a_window_that_did_not_move_costs_no_read_and_ids_only_cost_no_embedding(setup, redis):
    config, version, _ = setup
    windows, rng = WindowStore(redis, store_texts=False), np.random.default_rng(1)
    embedder = TextEmbedder()
    far = RecentFarShare(config, windows, redis, embedder)
    apply(windows, "sw", 40, rng, version)
    snap = windows.snapshot("sw")
    assert far("sw", snap) is None and embedder.texts == 0  # ids only: unknown, nothing embedded
    far._sync = None  # type: ignore[assignment]  # a read now would fail: none is made while `seen` is unchanged
    assert far("sw", snap) is None
    far.prefetch({"sw": snap})


def test_only_the_new_texts_are_embedded(setup, redis):
    config, version, _ = setup
    windows, embedder = WindowStore(redis), TextEmbedder()
    far = RecentFarShare(config, windows, redis, embedder)
    items = [Assignment(f"a{i}", 0, "compass.queries", 0, next(_offsets), "far away" if i < 10 else "near")
             for i in range(40)]
    windows.apply_batch({"sw": (50, items)}, version, 4)
    assert far("sw", windows.snapshot("sw")) == 0.0 and embedder.texts == KEPT  # the newest 30: all near
    items = [Assignment(f"b{i}", 0, "compass.queries", 0, next(_offsets), "far away") for i in range(6)]
    windows.apply_batch({"sw": (50, items)}, version, 4)
    assert far("sw", windows.snapshot("sw")) == pytest.approx(6 / KEPT) and embedder.texts == KEPT + 6
