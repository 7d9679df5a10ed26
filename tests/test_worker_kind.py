"""A language's `adapters.kind` switched from dora to lora between versions: the worker's next update scores the
DoRA parent in its own kind for the gate, then trains a fresh plain LoRA without ECDA, which export_peft accepts.
Real Kafka and Redis (the `services` fixtures), a tiny real model; nothing of the pipeline is replaced."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load as st_load
from test_update import ALL_TEXTS, HashEmbedder
from test_worker import initial, make_env, send_job
from tinylm import make_tiny_lm

import daemon.worker.pipeline as pipeline
from compass.adapt import load_base, load_tokenizer
from compass.adapt.update import FISHER_FILE, nll, train_update
from compass.languages import LanguagesConfig
from compass.registry import AdapterRegistry
from compass.registry.export import ExportError, export_peft
from daemon.worker import Worker
from daemon.worker.model import ModelHost, adapter_state, train_config

LORA = LanguagesConfig(languages={"it": {"adapters": {"kind": "lora"}}})


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    return make_tiny_lm(tmp_path_factory.mktemp("lm"), ALL_TEXTS + ["it es numero"])


def test_switching_dora_to_lora_trains_a_fresh_lora_gated_against_the_dora_parent(
        services, redis, topic_factory, lm_dir, tmp_path, monkeypatch):
    tok = load_tokenizer(lm_dir)
    emb = HashEmbedder()
    cfg, cb, _ = make_env(tmp_path, services, redis, topic_factory, lm_dir, emb)
    model = load_base(lm_dir)
    first = initial(cfg, redis, cb, emb, model, tok)  # test_worker's LANGS: the default kind, dora
    reg = AdapterRegistry(cfg.adapters.registry)
    parent_tensors, parent_config, _ = reg.read_version("it", first["version"])
    assert first["outcome"] == "promoted" and parent_config["use_dora"] is True
    assert any("lora_magnitude_vector" in k for k in parent_tensors)

    # a pass-through recorder: what the pipeline hands train_update (the plan, the ECDA arguments); it still trains
    calls = []

    def recording_train_update(*args, **kwargs):
        calls.append((args, kwargs))
        return train_update(*args, **kwargs)

    monkeypatch.setattr(pipeline, "train_update", recording_train_update)
    job, _ = send_job(cfg, redis, cb, emb)
    w = Worker(cfg, LORA, client=redis, model=model, tokenizer=tok, embedder=emb)
    try:
        assert w.run(max_jobs=1) == 1
    finally:
        w.close()
    report = json.loads((tmp_path / "work" / "reports" / f"{job.job_id}.json").read_text())
    assert report["error"] is None and report["parent"] == first["version"]
    assert (report["train"]["ecda"], report["train"]["kind"]) == (False, "lora")
    version = report["version"]
    tensors, config, manifest = reg.read_version("it", version)
    assert manifest.parent == first["version"] and manifest.kind == "compass"
    assert config["use_dora"] is False and config["peft_type"] == "LORA"
    assert sorted({k.rsplit(".", 2)[-2] for k in tensors}) == ["lora_A", "lora_B"]  # no DoRA magnitude
    fisher = st_load(reg.read_file("it", version, FISHER_FILE))  # the new anchors' Fisher: LoRA factors only
    assert fisher and not any("magnitude" in k for k in fisher)

    # no ECDA: the report says so (above); the call itself is checked too, then its outcome
    assert len(calls) == 1
    (_, _, plan, _, tcfg, centroids), kw = calls[0]
    assert tcfg == train_config(cfg.worker.train, "lora")
    assert (kw["ecda"], tuple(kw["prev_anchor_texts"]), kw["fisher"]) == (None, (), None)
    # the stored weights are exactly a fresh LoRA trained on the same plan without ECDA (not warm from the parent)
    ref = ModelHost(cfg, load_base(lm_dir), tok).install("it", tcfg, None)
    train_update(ref, "it", plan, tok, tcfg, centroids, anchor_fraction=kw["anchor_fraction"])
    want, _ = adapter_state(ref, "it")
    assert sorted(want) == sorted(tensors) and all(torch.equal(want[k], tensors[k]) for k in want)

    # the gate's "current" side is the DoRA parent scored in its own kind on this job's sets
    g = report["gate"]
    cur_a, cur_r = g["adaptation_current"], g["retention_current"]
    assert isinstance(cur_a, float) and math.isfinite(cur_a)
    # the parent was target-only, so its anchors are D_t rows, which this cycle trains again: no retention rows
    # by default (plan.py), reported as not measured
    assert plan.retention == [] and cur_r is None and any("retention not measured" in r for r in g["reasons"])
    dora = ModelHost(cfg, load_base(lm_dir), tok).install("it", replace(tcfg, use_dora=True), parent_tensors)
    assert cur_a == nll(dora, plan.adaptation or plan.retention, tok, tcfg)
    assert cur_r == nll(dora, plan.retention, tok, tcfg)
    assert g["adaptation_candidate"] == nll(ref, plan.adaptation or plan.retention, tok, tcfg)
    # promotion hangs on a small NLL gain (a fresh adapter vs a trained parent): checked for consistency only
    assert reg.current("it") == (version if g["passed"] else first["version"])

    # the LoRA version exports in peft's layout; the DoRA parent is refused
    with pytest.raises(ExportError, match="use_dora is true"):
        export_peft(reg, "it", tmp_path / "parent", version=first["version"])
    out = export_peft(reg, "it", tmp_path / "export", version=version)
    exported = json.loads((out / "adapter_config.json").read_text())
    assert (exported["use_dora"], exported["peft_type"], exported["r"]) == (False, "LORA", 2)
