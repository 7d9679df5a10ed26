"""compass/adapt/update.py and the checkpoints of train_adapter: the data plan of one update, bit-exact resume,
registry round trip and frozen base weights. Tiny random llama (tests/tinylm.py), CPU, seeded."""

from __future__ import annotations

import hashlib

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
from compass.adapt.update import plan_update, read_anchors, train_update
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


def _plan(n_target=10, n_recent=10, pool_n=20, max_examples=None):
    emb = HashEmbedder()
    target = [Record(id=f"t{i}", lang="it", text=t) for i, t in enumerate(corpus("food", n_target, "it"))]
    recent = [(f"q{i}", t) for i, t in enumerate(corpus("tech", n_recent, "it"))]
    pool = [Record(id=f"p{i}", lang="es", text=t) for i, t in
            enumerate(corpus("food", pool_n // 2, "es") + corpus("tech", pool_n // 2, "es"))]
    Xt, Xr, Xp = (emb.encode(x) for x in ([r.text for r in target], [t for _, t in recent], [r.text for r in pool]))
    centroids = np.eye(2, 8, dtype=np.float32)

    def assign(X):
        return np.argmax(X @ centroids.T, axis=1)
    return plan_update("it", target, Xt, assign(Xt), recent, Xr, assign(Xr), pool, Xp, assign(Xp), centroids,
                       budget=0.5, holdout_fraction=0.2, retention_fraction=0.2, max_examples=max_examples, seed=3,
                       prev_anchor_texts=["old anchor"])


def test_the_plan_holds_out_recent_and_target_rows_and_selects_tech_from_the_pool():
    plan = _plan()
    by = {s: [e for e in plan.train if e.source == s] for s in ("target", "selected", "recent")}
    assert len(by["target"]) == 8 and len(by["recent"]) == 8  # 2 of 10 held out each
    assert len(by["selected"]) == 4  # |S| = B * |D_t training part| = 0.5 * 8
    assert all("computer" in e.text or "rete" in e.text or "codice" in e.text or "server" in e.text
               or "dati" in e.text for e in by["selected"])  # the usage proxy is all tech: S comes from cluster 1
    assert len(plan.adaptation) == 2 and len(plan.retention) == 3 and plan.retention[-1] == "old anchor"
    train_ids = {e.id for e in plan.train}
    assert not train_ids & {f"q{i}" for i in range(10) if corpus("tech", 10, "it")[i] in plan.adaptation}
    # eq. 3: recent counts (10 tech, cluster 1) + selected (4 tech) over buckets [food, tech, noise]
    np.testing.assert_allclose(plan.counts, [0, 14, 0])
    np.testing.assert_allclose(plan.p_ref, [0, 1, 0])
    assert plan.selection["n_selected"] == 4 and plan.selection["source_languages"] == {"es": 4}
    assert plan.kind == "compass"
    assert [e.id for e in _plan(max_examples=7).train] == [e.id for e in _plan(max_examples=7).train]  # seeded cap
    assert len(_plan(max_examples=7).train) == 7


def test_a_first_update_trains_without_ecda_and_keeps_anchors_and_base_weights(lm):
    path, tok = lm
    plan = _plan()
    model = fresh(path)
    before = {n: p.detach().clone() for n, p in base_parameters(model).items()}
    res = train_update(model, "it", plan, tok, CFG, np.eye(2, 8, dtype=np.float32), anchor_fraction=0.2)
    assert len(res.anchor_ids) == round(0.2 * len(plan.train))
    assert set(res.fisher) == set(adapter_parameters(model, "it"))
    assert [i for i, _ in read_anchors(res.extra_files()["anchors.jsonl"])] == res.anchor_ids
    for n, p in base_parameters(model).items():
        assert torch.equal(p, before[n]), n
