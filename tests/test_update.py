"""compass/adapt/update.py and the checkpoints of train_adapter: the data plan of one update, bit-exact resume,
registry round trip and frozen base weights. Tiny random llama (tests/tinylm.py), CPU, seeded."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tinylm import make_tiny_lm

from compass.adapt import (
    Interrupted,
    TrainConfig,
    adapter_parameters,
    add_language_adapter,
    base_parameters,
    load_base,
    load_checkpoint,
    load_tokenizer,
    save_checkpoint,
    train_adapter,
)
from compass.adapt.plan import PlanSettings, plan_update
from compass.adapt.update import read_anchors, train_update
from compass.data import Record

WORDS = {"food": "pasta pizza vino pane formaggio", "tech": "computer rete codice server dati"}
CFG = TrainConfig(rank=2, alpha=4, batch_size=4, max_epochs=2, max_length=16, val_fraction=0.2, patience=5,
                  target_modules=("q_proj", "v_proj"))


def corpus(topic: str, n: int, tag: str) -> list[str]:
    w = WORDS[topic].split()
    return [f"{tag} {w[i % 5]} {w[(i + 1) % 5]} {w[(i + 3) % 5]} numero {i % 7}" for i in range(n)]


class HashEmbedder:
    """Deterministic unit vectors: topic words set their own axes, so the two topics fall in two clusters."""

    model_id = "hash:test"

    def encode(self, texts):
        out = np.zeros((len(texts), 8), np.float32)
        for i, t in enumerate(texts):
            h = hashlib.sha256(t.encode()).digest()
            out[i] = np.frombuffer(h[:8], np.uint8) / 255.0 * 0.2
            out[i, 0] += sum(w in t for w in WORDS["food"].split())
            out[i, 1] += sum(w in t for w in WORDS["tech"].split())
        return out / np.linalg.norm(out, axis=1, keepdims=True)


ALL_TEXTS = corpus("food", 40, "it") + corpus("tech", 40, "it") + corpus("food", 40, "es") + corpus("tech", 40, "es")


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    path = make_tiny_lm(tmp_path_factory.mktemp("lm"), ALL_TEXTS + ["it es numero"])
    return path, load_tokenizer(path)


def fresh(path, lang="it"):
    torch.manual_seed(1)
    return add_language_adapter(load_base(path), lang, CFG)


def test_resume_from_a_checkpoint_gives_the_uninterrupted_weights(lm, tmp_path):
    path, tok = lm
    texts = corpus("food", 20, "it") + corpus("tech", 10, "it")
    model = fresh(path)
    full = train_adapter(model, "it", texts, tok, CFG)
    want = {n: p.detach().clone() for n, p in adapter_parameters(model, "it").items()}

    steps = []
    model = fresh(path)
    with pytest.raises(Interrupted):
        train_adapter(model, "it", texts, tok, CFG, checkpoint_every=2,
                      on_checkpoint=lambda st: save_checkpoint(tmp_path / "ck", st),
                      should_stop=lambda: steps.append(1) or len(steps) == 9)  # stop mid-epoch 2
    state = load_checkpoint(tmp_path / "ck")
    assert (state.step, state.epoch, state.position) == (9, 2, 3)
    assert not any(k.endswith(".pkl") for k in map(str, (tmp_path / "ck").iterdir()))
    model = fresh(path)
    resumed = train_adapter(model, "it", texts, tok, CFG, resume=state)
    assert resumed.steps == full.steps == 12 and resumed.train_loss == full.train_loss
    for n, p in adapter_parameters(model, "it").items():
        assert torch.equal(p.detach(), want[n]), n


def _plan(n_target=10, n_recent=10, pool_n=20, max_examples=None, labelled=False):
    emb = HashEmbedder()
    target = [Record(id=f"t{i}", lang="it", text=t) for i, t in enumerate(corpus("food", n_target, "it"))]
    recent = [(f"q{i}", t, f"answer {i}" if labelled else None) for i, t in enumerate(corpus("tech", n_recent, "it"))]
    pool = [Record(id=f"p{i}", lang="es", text=t) for i, t in
            enumerate(corpus("food", pool_n // 2, "es") + corpus("tech", pool_n // 2, "es"))]
    Xt, Xr, Xp = (emb.encode(x) for x in ([r.text for r in target], [r[1] for r in recent], [r.text for r in pool]))
    centroids = np.eye(2, 8, dtype=np.float32)

    def assign(X):
        return np.argmax(X @ centroids.T, axis=1)
    clusters = SimpleNamespace(target=assign(Xt), window=assign(Xr), pool=assign(Xp), centroids=centroids,
                               summary={})
    return plan_update("it", target, Xt, assign(Xt), recent, Xr, assign(Xr), pool, Xp, assign(Xp), centroids,
                       settings=PlanSettings(budget=0.5, holdout_fraction=0.2, max_examples=max_examples, seed=3),
                       clusters=clusters, prev_anchors=[("a0", "old anchor")])


def test_the_plan_trains_d_t_whole_holds_out_the_window_and_selects_tech_from_the_pool():
    plan = _plan()
    by = {s: [e for e in plan.train if e.source == s] for s in ("target", "selected", "window")}
    assert len(by["target"]) == 10 and len(by["window"]) == 0  # D_t whole; unlabelled queries are not trained
    assert len(by["selected"]) == 5  # |S| = B * |D_t| = 0.5 * 10
    assert all("computer" in e.text or "rete" in e.text or "codice" in e.text or "server" in e.text
               or "dati" in e.text for e in by["selected"])  # the usage proxy is all tech: S comes from cluster 1
    assert len(plan.adaptation) == 2 and plan.retention == ["old anchor"]  # 2 of 10 window rows held out
    assert len(plan.data["excluded"]["unlabelled_window"]) == 8
    # eq. 3: recent counts (10 tech, cluster 1) + selected (5 tech) over buckets [food, tech, noise]
    np.testing.assert_allclose(plan.counts, [0, 15, 0])
    np.testing.assert_allclose(plan.p_ref, [0, 1, 0])
    assert plan.selection["n_selected"] == 5 and plan.selection["source_languages"] == {"es": 5}
    assert plan.kind == "compass"
    capped = _plan(max_examples=12)
    assert [e.id for e in capped.train] == [e.id for e in _plan(max_examples=12).train]  # seeded cap
    assert len(capped.train) == 12 and sum(e.source == "target" for e in capped.train) == 10  # S capped, D_t whole
    labelled = _plan(labelled=True)  # labelled window rows join the pool as candidates
    assert {e.source for e in labelled.train} >= {"target", "window"}
    assert all(e.text.startswith(("computer", "rete", "codice", "server", "dati")) or "\nanswer " in e.text
               for e in labelled.train if e.source == "window")


def test_a_first_update_trains_without_ecda_and_keeps_anchors_and_base_weights(lm):
    path, tok = lm
    plan = _plan()
    model = fresh(path)
    before = {n: p.detach().clone() for n, p in base_parameters(model).items()}
    res = train_update(model, "it", plan, tok, CFG, np.eye(2, 8, dtype=np.float32), anchor_fraction=0.2)
    assert len(res.anchor_ids) == round(0.2 * len(plan.train))
    assert all(i.startswith("p") for i in res.anchor_ids)  # the cycle's own rows: D_t is retrained every cycle
    assert set(res.fisher) == set(adapter_parameters(model, "it"))
    assert [i for i, _ in read_anchors(res.extra_files()["anchors.jsonl"])] == res.anchor_ids
    for n, p in base_parameters(model).items():
        assert torch.equal(p, before[n]), n
