"""compass serve on a `compass expand` model (issue 18): model.path names a directory written by save_expanded, and
each request runs through the expert of its routed language; languages that were not expanded use the base expert,
i.e. exactly the dense model."""

from __future__ import annotations

import torch
from test_route import SENTENCES
from test_serving import config_for
from tinylm import make_tiny_lm

from compass.adapt import load_base, load_tokenizer
from compass.expand import language, save_expanded, upcycle
from daemon.cli.route import expanded_languages
from daemon.serving import AdapterServer

LANGS = ["de", "en", "es", "fr", "it"]


def test_a_served_expanded_model_routes_each_request_to_its_languages_expert(tmp_path):
    lm = make_tiny_lm(tmp_path / "lm", list(SENTENCES.values()) * 3, seed=0, hidden=16)
    dense = load_base(lm).eval()
    model = load_base(lm)
    spec = upcycle(model, ["it"])
    with torch.no_grad():  # make the "it" expert differ from the dense MLP, as CPT would
        for name, p in model.named_parameters():
            if ".experts.1." in name:
                p.add_(torch.randn_like(p, generator=torch.Generator().manual_seed(1)) * 0.5)
    out = save_expanded(model, spec, tmp_path / "expanded", {"note": "test"}, tokenizer=load_tokenizer(lm))

    cfg = config_for(tmp_path)
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"path": out})})
    server = AdapterServer(cfg, LANGS)
    assert server.experts is not None and server.experts.langs == ("it",)
    tok = load_tokenizer(lm)

    def logits(m, text: str) -> torch.Tensor:
        with torch.no_grad():
            return m(**tok([text], return_tensors="pt")).logits[0, -1].float()

    texts = [SENTENCES["it"], SENTENCES["en"], SENTENCES["de"]]
    got = server.next_token_logits(texts, lang=["it", "en", "de"])
    assert [d.language for d, _ in got] == ["it", "en", "de"]
    model.eval()
    with language(model, "it"):
        want_it = logits(model, SENTENCES["it"])
    assert torch.allclose(got[0][1], want_it, atol=1e-5)
    assert not torch.allclose(got[0][1], logits(dense, SENTENCES["it"]), atol=1e-3)  # the it expert is used
    for (_, row), text in zip(got[1:], texts[1:], strict=True):  # not expanded: the base expert = the dense model
        assert torch.allclose(row, logits(dense, text), atol=1e-5)
    gen = server.generate([SENTENCES["it"]], lang="it")[0]
    assert gen.decision.language == "it" and gen.token_ids
    # compass route reads the manifest alone to name the expert a query runs through
    assert expanded_languages(out) == ("it",) and expanded_languages(lm) is None and expanded_languages(None) is None
