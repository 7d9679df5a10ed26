"""`compass serve`'s OpenAI-compatible API and vLLM's runtime LoRA protocol, driven by the official ``openai`` client
against a real uvicorn server: answers equal a single-adapter reference model's, streams really stream, errors
have OpenAI's shape."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest
import torch
from fastapi.testclient import TestClient
from httpserve import serve
from test_route import SENTENCES
from test_serving import config_for, make_server, reference, register
from test_serving import lm as lm  # noqa: F401 - the module-scoped tiny model fixture

from compass.adapt import TrainConfig, add_language_adapter, load_base, load_tokenizer
from compass.registry import AdapterRegistry
from daemon.api.serving import create_serving_app

N = 12  # tokens per answer: long enough for several stream chunks


@pytest.fixture(scope="module")
def served(tmp_path_factory, lm):  # noqa: F811
    root = tmp_path_factory.mktemp("oa")
    reg = AdapterRegistry(root / "adapters")
    ads = {"it": register(reg, lm, "it", "it-v1", seed=1), "es": register(reg, lm, "es", "es-v1", seed=2),
           "fr": register(reg, lm, "fr", "fr-v1", seed=3, kind="target_only")}
    server = make_server(config_for(root), lm)
    with serve(create_serving_app(server, lora_updates=True)) as port:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60)
        yield server, client, port, ads


def ref_text(lm, prompt: str, ads=None, n: int = N) -> tuple[str, tuple[int, ...]]:  # noqa: F811
    """Greedy answer of a model holding one adapter (or none), as text and token ids."""
    import test_serving

    old, test_serving.N_NEW = test_serving.N_NEW, n
    try:
        ids = reference(lm, [prompt], *(ads or ()))[0]
    finally:
        test_serving.N_NEW = old
    return load_tokenizer(lm).decode(list(ids), skip_special_tokens=True), ids


def finish(ids: tuple[int, ...], n: int = N) -> str:
    return "stop" if ids and ids[-1] == 3 else "length"  # 3: the tiny tokenizer's </s>


class Gate:
    """Holds generation at its ``at``-th forward pass (a real forward hook on lm_head) until ``release``."""

    def __init__(self, server, at: int = 4):
        self.at, self.calls, self.reached, self.release = at, 0, threading.Event(), threading.Event()
        head = next(m for n, m in server.model.named_modules() if n.endswith("lm_head"))
        self.handle = head.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.calls += 1
        if self.calls == self.at:
            self.reached.set()
            assert self.release.wait(30)

    def close(self):
        self.release.set()
        self.handle.remove()


def test_models_lists_base_adapters_and_auto(served, lm):  # noqa: F811
    server, client, _, _ = served
    models = client.models.list().data
    assert [m.id for m in models] == ["auto", lm.name, "es@es-v1", "fr@fr-v1", "it@it-v1"]
    assert {m.object for m in models} == {"model"} and {m.owned_by for m in models} == {"compass"}
    assert [m.model_extra["compass"]["kind"] for m in models] == ["router", "base", "compass", "target_only",
                                                                 "compass"]
    assert models[4].model_extra["compass"] == {"language": "it", "version": "it-v1", "kind": "compass"}
    assert client.models.retrieve("it@it-v1").parent == lm.name


def test_chat_auto_routes_to_the_languages_adapter(served, lm):  # noqa: F811
    server, client, _, ads = served
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": SENTENCES["it"]}]
    resp = client.chat.completions.create(model="auto", messages=msgs, temperature=0, max_tokens=N)
    # no chat template on the tiny tokenizer: the documented plain format, routed by the last user message
    prompt = f"System: Be brief.\nUser: {SENTENCES['it']}\nAssistant:"
    text, ids = ref_text(lm, prompt, ads["it"])
    assert resp.model == "it@it-v1"
    assert resp.object == "chat.completion" and resp.id.startswith("chatcmpl-")
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == text
    assert resp.choices[0].finish_reason == finish(ids)
    n_prompt = len(load_tokenizer(lm)(prompt)["input_ids"])
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (
        n_prompt, len(ids), n_prompt + len(ids))
    ext = resp.model_extra["compass"]
    assert (ext["language"], ext["adapter"], ext["version"], ext["kind"], ext["routed"]) == (
        "it", "it@it-v1", "it-v1", "compass", True)
    # French routes to its target-only adapter; German (no adapter) to the base model
    fr = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": SENTENCES["fr"]}],
                                        temperature=0, max_tokens=2)
    de = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": SENTENCES["de"]}],
                                        temperature=0, max_tokens=2)
    assert (fr.model, fr.model_extra["compass"]["kind"]) == ("fr@fr-v1", "target_only")
    assert (de.model, de.model_extra["compass"]["kind"], de.model_extra["compass"]["adapter"]) == (lm.name, "base",
                                                                                                  None)


def test_completion_pins_an_adapter_or_the_base_model(served, lm):  # noqa: F811
    server, client, _, ads = served
    text = SENTENCES["it"]
    es = client.completions.create(model="es@es-v1", prompt=text, temperature=0, max_tokens=N)
    want, ids = ref_text(lm, text, ads["es"])
    assert (es.model, es.object, es.choices[0].text, es.choices[0].finish_reason) == (
        "es@es-v1", "text_completion", want, finish(ids))
    assert es.model_extra["compass"]["routed"] is False and es.model_extra["compass"]["language"] == "es"
    base = client.completions.create(model=lm.name, prompt=text, temperature=0, max_tokens=N)
    assert base.choices[0].text == ref_text(lm, text)[0]
    assert base.model_extra["compass"]["kind"] == "base"
    # the same answer as /v1/generate gives for the same adapter (greedy)
    (gen,) = server.generate([text], max_new_tokens=N, lang="es")
    assert gen.text == want


def test_sampling_seed_stop_and_usage(served, lm):  # noqa: F811
    server, client, _, ads = served
    text = SENTENCES["es"]
    a, b = (client.completions.create(model="auto", prompt=text, temperature=1.5, seed=7, max_tokens=N)
            for _ in range(2))
    assert a.choices[0].text == b.choices[0].text  # a seed makes sampling reproducible
    full, _ = ref_text(lm, text, ads["es"])
    word = full.split()[2]
    cut = full[:full.index(word)]
    got = client.completions.create(model="auto", prompt=text, temperature=0, max_tokens=N, stop=[word, "zzz"])
    assert (got.choices[0].text, got.choices[0].finish_reason) == (cut, "stop")
    assert got.usage.completion_tokens < N  # generation stopped at the stop string


def test_chat_stream_sends_chunks_while_generating(served, lm):  # noqa: F811
    server, client, _, ads = served
    msgs = [{"role": "user", "content": SENTENCES["it"]}]
    want = client.chat.completions.create(model="auto", messages=msgs, temperature=0, max_tokens=N)
    gate = Gate(server)
    try:
        stream = client.chat.completions.create(model="auto", messages=msgs, temperature=0, max_tokens=N,
                                                stream=True, stream_options={"include_usage": True})
        chunks = []
        for chunk in stream:
            chunks.append(chunk)
            if chunk.choices and chunk.choices[0].delta.content and not gate.release.is_set():
                # text arrived while generation cannot have passed its 4th step: it really streams
                gate.release.set()
                assert gate.calls <= gate.at
    finally:
        gate.close()
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert gate.release.is_set() and want.usage.completion_tokens > gate.at  # the gate was inside the generation
    assert len(pieces) >= 2
    assert "".join(pieces) == want.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == want.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == want.usage.completion_tokens
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    assert {c.model_extra["compass"]["adapter"] for c in chunks} == {"it@it-v1"}


def test_completion_stream_is_server_sent_events_ending_with_done(served, lm):  # noqa: F811
    server, client, port, ads = served
    body = {"model": "es@es-v1", "prompt": SENTENCES["it"], "temperature": 0, "max_tokens": N, "stream": True}
    with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert all(ln.startswith("data: ") for ln in lines) and lines[-1] == "data: [DONE]"
    events = [json.loads(ln[6:]) for ln in lines[:-1]]
    assert {e["object"] for e in events} == {"text_completion"}
    want, ids = ref_text(lm, SENTENCES["it"], ads["es"])
    assert "".join(e["choices"][0]["text"] for e in events) == want
    assert [e["choices"][0]["finish_reason"] for e in events][-1] == finish(ids)


@pytest.mark.parametrize("kwargs, status, param, code", [
    ({"temperature": 5}, 400, "temperature", None),
    ({"n": 2}, 400, "n", None),
    ({"extra_body": {"foo": 1}}, 400, "foo", None),
    ({"model": "xx@v9"}, 404, "model", "model_not_found"),
    ({"messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0].role", None),
    ({"messages": []}, 400, "messages", None),
])
def test_errors_have_openais_shape(served, kwargs, status, param, code):
    server, client, _, _ = served
    req = {"model": "auto", "messages": [{"role": "user", "content": "hola"}], "max_tokens": 2, **kwargs}
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(**req)
    assert e.value.status_code == status
    err = e.value.response.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert (err["type"], err["param"], err["code"]) == ("invalid_request_error", param, code)
    assert param.split("[")[0] in err["message"]


def save_peft_dir(lm, root, seed: int):  # noqa: F811
    """A PEFT adapter directory as peft's save_pretrained writes it; returns (dir, tensors, config)."""
    model = add_language_adapter(load_base(lm), "it", TrainConfig(rank=4, alpha=8, dropout=0.0,
                                                                   target_modules=("q_proj", "v_proj")))
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if "lora_A" in name or "lora_B" in name:
            p.data = torch.randn(p.shape, generator=g)
    model.save_pretrained(root)
    from peft import get_peft_model_state_dict

    config = json.loads(json.dumps(model.peft_config["it"].to_dict(), default=sorted))
    return root / "it", get_peft_model_state_dict(model, adapter_name="it"), config


def test_load_use_unload_through_vllms_protocol(served, lm, tmp_path):  # noqa: F811
    server, client, port, _ = served
    path, tensors, config = save_peft_dir(lm, tmp_path, seed=11)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", timeout=60)
    r = http.post("/load_lora_adapter", json={"lora_name": "sql-lora", "lora_path": str(path)})
    assert (r.status_code, r.text) == (200, "Success: LoRA adapter 'sql-lora' added successfully.")
    assert "sql-lora" in [m.id for m in client.models.list().data]
    got = client.completions.create(model="sql-lora", prompt=SENTENCES["en"], temperature=0, max_tokens=N)
    assert got.choices[0].text == ref_text(lm, SENTENCES["en"], (tensors, config))[0]
    assert got.model_extra["compass"]["kind"] == "external"
    again = http.post("/load_lora_adapter", json={"lora_name": "sql-lora", "lora_path": str(path)})
    assert again.status_code == 400 and again.json()["error"]["param"] == "lora_name"
    assert "already been loaded" in again.json()["error"]["message"]
    bad = http.post("/load_lora_adapter", json={"lora_name": "other", "lora_path": str(tmp_path / "nope")})
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "lora_path")
    assert "is not a directory" in bad.json()["error"]["message"]

    # unloading an adapter in use waits for its request: hold a pinned stream mid-generation
    gate = Gate(server)
    unloaded = threading.Event()
    try:
        stream = client.completions.create(model="sql-lora", prompt=SENTENCES["en"], temperature=0, max_tokens=N,
                                           stream=True)
        it = iter(stream)
        assert gate.reached.wait(30)

        def unload():
            resp = http.post("/unload_lora_adapter", json={"lora_name": "sql-lora"})
            assert (resp.status_code, resp.text) == (200, "Success: LoRA adapter 'sql-lora' removed successfully.")
            unloaded.set()

        t = threading.Thread(target=unload)
        t.start()
        deadline = time.monotonic() + 5
        while "sql-lora" in [m.id for m in client.models.list().data] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "sql-lora" not in [m.id for m in client.models.list().data]  # retired at once: nothing new pins it
        assert not unloaded.wait(0.3)  # but still loaded: its request holds it
        gate.release.set()
        text = "".join(c.choices[0].text for c in it)
        t.join(30)
    finally:
        gate.close()
    assert unloaded.is_set() and text == got.choices[0].text
    assert "sql-lora" not in server._external
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="sql-lora", prompt="x", max_tokens=1)
    assert e.value.response.json()["error"]["code"] == "model_not_found"
    gone = http.post("/unload_lora_adapter", json={"lora_name": "sql-lora"})
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "model_not_found")


def test_lora_updates_are_off_by_default(tmp_path, lm):  # noqa: F811
    app = create_serving_app(make_server(config_for(tmp_path), lm))
    r = TestClient(app).post("/v1/load_lora_adapter", json={"lora_name": "a", "lora_path": str(tmp_path)})
    assert (r.status_code, r.json()["error"]["code"]) == (403, "lora_updates_disabled")
    assert "--allow-lora-updates" in r.json()["error"]["message"]



def test_stop_buffer_never_sends_part_of_a_stop_string():
    from daemon.serving.chat import StopBuffer

    buf = StopBuffer(["END", "x"])
    assert [buf.push(p) for p in ("ab", "cE", "N", "Dzz")] == ["", "ab", "c", ""]  # 2 characters held back
    assert (buf.stopped, buf.flush()) == (True, "")
    plain = StopBuffer(["END"])
    assert [plain.push(p) for p in ("abc", "EN")] == ["a", "bc"]
    assert (plain.stopped, plain.flush()) == (False, "EN")


def test_chat_prompt_uses_the_chat_template_when_there_is_one(lm):  # noqa: F811
    from daemon.serving.chat import chat_prompt

    tok = load_tokenizer(lm)
    msgs = [{"role": "user", "content": "ciao"}]
    assert chat_prompt(tok, msgs) == ("User: ciao\nAssistant:", False)
    tok.chat_template = ("{% for m in messages %}<s>{{ m.role }}|{{ m.content }}</s>{% endfor %}"
                         "{% if add_generation_prompt %}<s>assistant|{% endif %}")
    assert chat_prompt(tok, msgs) == ("<s>user|ciao</s><s>assistant|", True)
