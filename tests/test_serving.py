"""The multi-adapter model server: generation on the routed adapter (matching a single-adapter reference exactly),
hot promotion from a real Kafka events topic, in-flight requests finishing on their version, the HTTP API."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch
from fastapi.testclient import TestClient
from peft import PeftConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from test_langid import UNCONFIGURED
from test_route import LANGS, SENTENCES
from tinylm import make_tiny_lm

from compass.adapt import TrainConfig, add_language_adapter, load_base, load_tokenizer
from compass.registry import AdapterManifest, AdapterRegistry
from daemon.api.serving import create_serving_app
from daemon.serving import AdapterServer
from infra.messages import Event
from infra.settings import ServiceConfig

PASS = {"outcome": "pass", "reasons": ["test"]}
N_NEW = 6


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return make_tiny_lm(tmp_path_factory.mktemp("lm"), list(SENTENCES.values()) * 3, seed=0, hidden=16)


def adapter(lm, lang: str, seed: int, rank: int = 4):
    """A DoRA adapter whose low-rank factors are seeded noise (a fresh one is the identity)."""
    model = add_language_adapter(load_base(lm), lang, TrainConfig(rank=rank, alpha=2 * rank, dropout=0.0,
                                                                  target_modules=("q_proj", "v_proj")))
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if "lora_A" in name or "lora_B" in name:
            p.data = torch.randn(p.shape, generator=g)
    config = json.loads(json.dumps(model.peft_config[lang].to_dict(), default=sorted))
    return get_peft_model_state_dict(model, adapter_name=lang), config


def register(reg: AdapterRegistry, lm, lang: str, version: str, seed: int, kind: str = "compass", rank: int = 4):
    tensors, config = adapter(lm, lang, seed, rank)
    m = AdapterManifest(language=lang, version=version, base_model_id="tiny", codebook_version="c1", kind=kind)
    reg.write_version(lang, tensors, config, m)
    reg.promote(lang, version, PASS)
    return tensors, config


def reference(lm, texts, tensors=None, config=None) -> list[tuple[int, ...]]:
    """Greedy new tokens of a model holding one adapter (or none), cut after the first EOS."""
    model, tok = load_base(lm), load_tokenizer(lm)
    tok.padding_side = "left"
    if tensors is not None:
        model = get_peft_model(model, PeftConfig.from_peft_type(**config), adapter_name="only")
        set_peft_model_state_dict(model, tensors, adapter_name="only")
    model.eval()
    enc = tok(texts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=N_NEW, do_sample=False, pad_token_id=tok.pad_token_id)
    rows = out[:, enc["input_ids"].shape[1]:].tolist()
    return [tuple(r[:r.index(tok.eos_token_id) + 1] if tok.eos_token_id in r else r) for r in rows]


def ref_logits(lm, text, tensors=None, config=None) -> torch.Tensor:
    model, tok = load_base(lm), load_tokenizer(lm)
    if tensors is not None:
        model = get_peft_model(model, PeftConfig.from_peft_type(**config), adapter_name="only")
        set_peft_model_state_dict(model, tensors, adapter_name="only")
    with torch.inference_mode():
        return model.eval()(**tok([text], return_tensors="pt")).logits[0, -1].float()


def config_for(tmp_path, kafka=None) -> ServiceConfig:
    base = ServiceConfig()
    upd = {"adapters": base.adapters.model_copy(update={"registry": str(tmp_path / "adapters")}),
           "model": base.model.model_copy(update={"device": "cpu"}),
           "serving": base.serving.model_copy(update={"max_new_tokens": N_NEW, "max_batch": 2})}
    if kafka is not None:
        upd["kafka"] = kafka
    return base.model_copy(update=upd)


def make_server(cfg, lm) -> AdapterServer:
    return AdapterServer(cfg, LANGS, model=load_base(lm), tokenizer=load_tokenizer(lm))


@pytest.fixture
def setup(tmp_path, lm):
    reg = AdapterRegistry(tmp_path / "adapters")
    ads = {"it": register(reg, lm, "it", "it-v1", seed=1), "es": register(reg, lm, "es", "es-v1", seed=2),
           "fr": register(reg, lm, "fr", "fr-v1", seed=3, kind="target_only")}
    return config_for(tmp_path), reg, ads


def test_generate_uses_the_routed_adapter(setup, lm):
    cfg, reg, ads = setup
    server = make_server(cfg, lm)
    assert sorted(server.loaded) == ["es@es-v1", "fr@fr-v1", "it@it-v1"]
    texts = [SENTENCES[k] for k in ("it", "es", "fr", "de", "it")]
    gens = server.generate(texts)
    assert [(g.language, g.adapter_version, g.kind) for g in gens] == [
        ("it", "it-v1", "compass"), ("es", "es-v1", "compass"), ("fr", "fr-v1", "target_only"),
        ("de", None, "base"), ("it", "it-v1", "compass")]
    # each group equals a model holding only that adapter (the two Italian texts ran as one batch of 2)
    it_ref = reference(lm, [texts[0], texts[4]], *ads["it"])
    assert [gens[0].token_ids, gens[4].token_ids] == it_ref
    assert gens[1].token_ids == reference(lm, [texts[1]], *ads["es"])[0]
    assert gens[2].token_ids == reference(lm, [texts[2]], *ads["fr"])[0]
    assert gens[3].token_ids == reference(lm, [texts[3]])[0]
    assert gens[0].text == server.tokenizer.decode(list(gens[0].token_ids), skip_special_tokens=True)
    # the adapters really differ: next-token logits of one text on each adapter and the base model, each equal
    # to the single-adapter reference's
    scored = server.next_token_logits([texts[0]] * 4, lang=["it", "es", "fr", "de"])
    assert [(d.language, d.version) for d, _ in scored] == [("it", "it-v1"), ("es", "es-v1"), ("fr", "fr-v1"),
                                                           ("de", None)]
    refs = [ref_logits(lm, texts[0], *ads[k]) for k in ("it", "es", "fr")] + [ref_logits(lm, texts[0])]
    for (_, got), want in zip(scored, refs, strict=True):
        assert torch.equal(got, want)
    for a in range(4):
        for b in range(a + 1, 4):
            assert not torch.allclose(refs[a], refs[b], atol=1e-3)


def test_request_in_flight_finishes_on_its_version(setup, lm):
    cfg, reg, ads = setup
    server = make_server(cfg, lm)
    routed, release = threading.Event(), threading.Event()

    def hold(decisions):
        if decisions[0].version == "it-v1":
            routed.set()
            assert release.wait(30)

    server.on_routed = hold
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("gen", server.generate([SENTENCES["it"]])))
    t.start()
    assert routed.wait(30)
    v2 = register(reg, lm, "it", "it-v2", seed=11)
    assert server.sync("it") == {"it": server.router.table["it"]}
    assert server.route(SENTENCES["it"]).version == "it-v2"  # new requests already go to v2 ...
    assert sorted(server.loaded) == ["es@es-v1", "fr@fr-v1", "it@it-v1", "it@it-v2"]  # ... v1 still loaded
    release.set()
    t.join(30)
    (gen,) = result["gen"]
    assert gen.adapter_version == "it-v1"
    assert gen.token_ids == reference(lm, [SENTENCES["it"]], *ads["it"])[0]
    assert sorted(server.loaded) == ["es@es-v1", "fr@fr-v1", "it@it-v2"]  # v1 unloaded once idle
    (gen2,) = server.generate([SENTENCES["it"]])
    assert (gen2.adapter_version, gen2.token_ids) == ("it-v2", reference(lm, [SENTENCES["it"]], *v2)[0])


def test_a_version_that_does_not_fit_keeps_the_old_one(setup, lm):
    cfg, reg, ads = setup
    server = make_server(cfg, lm)
    tensors, _ = adapter(lm, "it", seed=5, rank=8)
    _, config4 = adapter(lm, "it", seed=5, rank=4)
    m = AdapterManifest(language="it", version="it-bad", base_model_id="tiny", codebook_version="c1")
    reg.write_version("it", tensors, config4, m)  # rank-8 weights under a rank-4 config
    reg.promote("it", "it-bad", PASS)
    assert server.sync() == {}
    assert server.load_errors == 1
    (gen,) = server.generate([SENTENCES["it"]])
    assert (gen.adapter_version, gen.token_ids) == ("it-v1", reference(lm, [SENTENCES["it"]], *ads["it"])[0])


def test_promotion_on_kafka_is_picked_up_without_restart(services, topic_factory, tmp_path, lm):
    from daemon.scheduler.dispatch import Dispatcher

    topic = topic_factory()
    kafka = services.config.kafka.model_copy(update={"events_topic": topic})
    cfg = config_for(tmp_path, kafka)
    reg = AdapterRegistry(tmp_path / "adapters")
    register(reg, lm, "it", "it-v1", seed=1)
    server = make_server(cfg, lm)
    listener = server.start_listener(poll_s=3600)  # no registry poll: only the event can bring v2 in
    try:
        assert listener.wait_ready(60)
        disp = Dispatcher(kafka)
        disp.producer.send(topic, b"{not json").get(timeout=10)  # logged and skipped
        disp.emit(Event("adapter_promoted", "it", time.time(), job_id="j1", data={"adapter_version": 7}))  # bad
        v2 = register(reg, lm, "it", "it-v2", seed=11)
        disp.emit(Event("adapter_promoted", "it", time.time(), job_id="j2",
                        data={"adapter_version": "it-v2", "parent": "it-v1", "gate": PASS}))
        disp.close()
        deadline = time.monotonic() + 60
        while server.route(SENTENCES["it"]).version != "it-v2" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.route(SENTENCES["it"]).version == "it-v2"
        assert listener.bad == 2 and listener.state == "ok"
        (gen,) = server.generate([SENTENCES["it"]])
        assert gen.token_ids == reference(lm, [SENTENCES["it"]], *v2)[0]
    finally:
        server.close()


def test_registry_poll_when_kafka_is_unreachable(tmp_path, lm):
    from deploy.local.process import free_ports

    (port,) = free_ports(1)
    kafka = ServiceConfig().kafka.model_copy(update={"bootstrap_servers": (f"127.0.0.1:{port}",)})
    cfg = config_for(tmp_path, kafka)
    reg = AdapterRegistry(tmp_path / "adapters")
    register(reg, lm, "it", "it-v1", seed=1)
    server = make_server(cfg, lm)
    listener = server.start_listener(poll_s=0.2)
    try:
        register(reg, lm, "it", "it-v2", seed=11)
        deadline = time.monotonic() + 60
        while server.route(SENTENCES["it"]).version != "it-v2" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.route(SENTENCES["it"]).version == "it-v2"
        assert listener.state == "unreachable"
        assert server.ready()["events"] == "unreachable"
    finally:
        server.close()


def test_http_endpoints(setup, lm):
    cfg, reg, ads = setup
    client = TestClient(create_serving_app(make_server(cfg, lm)))
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json() == {"ready": True, "model": "ok", "events": "off", "adapters": "3"}
    r = client.post("/v1/route", json={"text": SENTENCES["fr"]})
    assert r.status_code == 200
    body = r.json()
    assert {k: body[k] for k in ("language", "adapter", "version", "kind")} == {
        "language": "fr", "adapter": "fr", "version": "fr-v1", "kind": "target_only"}
    r = client.post("/v1/generate", json={"text": SENTENCES["en"], "lang": "it", "max_new_tokens": 3})
    assert r.status_code == 200
    body = r.json()
    assert sorted(body) == ["adapter_version", "kind", "language", "reason", "text"]
    assert (body["language"], body["adapter_version"], body["kind"]) == ("it", "it-v1", "compass")
    r = client.post("/v1/generate", json={"text": SENTENCES["de"]})
    assert (r.json()["language"], r.json()["adapter_version"], r.json()["kind"]) == ("de", None, "base")
    r = client.post("/v1/generate", json={"text": UNCONFIGURED["ca"][0], "max_new_tokens": 3})
    assert {k: r.json()[k] for k in ("language", "adapter_version", "kind", "reason")} == {
        "language": "ca", "adapter_version": None, "kind": "base",
        "reason": "ca detected with confidence 0.96; language not configured; base model"}


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/route", {}, "text"),
    ("/v1/route", {"text": ""}, "text"),
    ("/v1/route", {"text": "   "}, "text"),
    ("/v1/route", {"text": "hi", "lang": "not a language"}, "lang"),
    ("/v1/route", {"text": "hi", "language": "it"}, "language"),
    ("/v1/generate", {"text": "hi", "max_new_tokens": 0}, "max_new_tokens"),
    ("/v1/generate", {"text": 5}, "text"),
])
def test_bad_input_answers_422_naming_the_field(setup, lm, path, body, field):
    cfg, _, _ = setup
    client = TestClient(create_serving_app(make_server(cfg, lm)))
    r = client.post(path, json=body)
    assert r.status_code == 422
    assert [d["loc"] for d in r.json()["detail"]] == [["body", field]]


def test_http_limits_on_the_serving_app():
    # a stub server: the limits act before any endpoint, so no model is needed
    from types import SimpleNamespace

    from infra.settings import HttpConfig, ServiceConfig

    server = SimpleNamespace(cfg=ServiceConfig(http=HttpConfig(max_body_bytes=4096)),
                             ready=lambda: {"model": "ok"})
    client = TestClient(create_serving_app(server))
    r = client.get("/metrics")  # a server without metrics: an empty exposition
    assert r.status_code == 200 and r.text == ""
    for path in ("/v1/route", "/v1/generate"):
        r = client.post(path, json={"text": "x" * 5000})  # {"text":"x...x"}: 5011 bytes
        assert r.status_code == 413
        assert r.json() == {"detail": "request body of 5011 bytes is over the limit of 4096 bytes; send a smaller "
                                      "body (config http.max_body_bytes)"}
        r = client.post(path, json={"text": "hi", "lang": "q" * 3000})
        assert r.status_code == 422 and len(r.content) < 1000
        [row] = r.json()["detail"]
        assert row["loc"] == ["body", "lang"] and row["input"] == "q" * 100 + "... (3000 chars)"
