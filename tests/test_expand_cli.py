"""``compass expand`` (issue 18) end to end on a tiny random llama: every method, the refusals before training,
checkpoint/resume, and what PARAM-Delta's CPT may and may not touch."""

from __future__ import annotations

import json
import math
import random
import re
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from compass.adapt import load_base, load_tokenizer
from compass.data import Record, write_records
from compass.expand import ExpandError, expand_delta, get_spec, load_expanded, param_delta, post_state_from_peft
from compass.expand.cpt import continue_pretraining
from compass.expand.data import load_texts, nll_by_lang, split_heldout
from daemon.cli.main import app
from tests.tinylm import make_tiny_lm

runner = CliRunner()
LANGS = ("sw", "tl", "en", "es")


def _texts(lang: str, n: int, rng: random.Random) -> list[str]:
    # each synthetic "language" has its own word list, so a language expert has something of its own to learn
    words = [f"{lang}{i}" for i in range(12)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 9))) for _ in range(n)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("expand")
    rng = random.Random(0)
    texts = {lang: _texts(lang, 20, rng) for lang in LANGS}
    data = root / "data"
    data.mkdir()
    for lang, ts in texts.items():
        write_records([Record(id=f"{lang}-{i}", lang=lang, text=t) for i, t in enumerate(ts)], data / f"{lang}.jsonl")
    all_texts = [t for ts in texts.values() for t in ts]
    base = make_tiny_lm(root / "base", all_texts, seed=0, hidden=16, layers=2)
    # θ_post: θ_base plus a seeded perturbation of every weight (a stand-in for a post-training run)
    post = root / "post"
    shutil.copytree(base, post)
    model = load_base(post)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    model.save_pretrained(post)
    # a PEFT (LoRA) adapter of θ_base with non-zero B, so its merge changes the weights
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(2)
    peft_model = get_peft_model(load_base(base), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "up_proj"],
                                                            init_lora_weights=False))
    peft_model.save_pretrained(root / "adapter")
    other = make_tiny_lm(root / "other", all_texts, seed=0, hidden=32, layers=2)  # another shape
    return {"root": root, "data": data, "base": base, "post": post, "adapter": root / "adapter", "other": other}


def _run(world: dict[str, Path], out: Path, method: str, *extra: str, steps: int = 4, post: str | None = None):
    args = ["expand", "--base", str(world["base"]), "--post", post or str(world["post"]), "--langs", "sw,tl",
            "--data", str(world["data"]), "--method", method, "--steps", str(steps), "--out", str(out),
            "--eval-langs", "en,es", "--batch-size", "4", "--max-length", "16", "--lr", "0.01", *extra]
    return runner.invoke(app, args)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method", ["paramdelta", "dense-cpt", "task-arithmetic", "ties"])
def test_each_method_runs_end_to_end_and_reports(world: dict[str, Path], tmp_path: Path, method: str) -> None:
    res = _run(world, tmp_path, method)
    assert res.exit_code == 0, res.output + repr(res.exception)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["method"] == method and report["steps"] == 4
    assert set(report["nll"]) == {"sw", "tl", "en", "es"}
    assert all(math.isfinite(v) and v > 0 for v in report["nll"].values())
    assert report["n_eval_texts"] == {"sw": 2, "tl": 2, "en": 20, "es": 20}  # 10% of 20 held out; eval-only: all
    params = report["parameters"]
    assert report["flops_per_token"] == 2 * params["active_per_token"]
    dense_total = sum(p.numel() for p in load_base(world["base"]).parameters())
    tok = load_tokenizer(tmp_path / "model")
    evalsets = {"en": load_texts([world["data"]], keys=["en"])["en"]}
    if method == "paramdelta":
        # two new experts per layer on top of the dense model; one expert per token, so active == dense
        assert params["active_per_token"] == dense_total
        assert params["total"] > dense_total
        model, spec, manifest = load_expanded(tmp_path / "model")
        assert list(spec.langs) == ["sw", "tl"] and manifest["method"] == "paramdelta"
        moe = True
    else:
        assert params["total"] == params["active_per_token"] == dense_total
        model, moe = load_base(tmp_path / "model"), False
    # the saved model is the evaluated one: reloading it reproduces the reported NLL
    again = nll_by_lang(model, evalsets, tok, moe=moe, batch_size=4, max_length=16)
    assert again["en"] == pytest.approx(report["nll"]["en"], rel=1e-5)


def test_cpt_lowers_the_new_languages_nll(world: dict[str, Path], tmp_path: Path) -> None:
    res = _run(world, tmp_path, "dense-cpt", steps=12)
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "report.json").read_text())
    base = load_base(world["base"])
    texts = load_texts([world["data"]], keys=["sw", "tl"])
    _, held = split_heldout(texts, share=0.1, seed=0)
    before = nll_by_lang(base, held, load_tokenizer(world["base"]), moe=False, batch_size=4, max_length=16)
    assert report["nll"]["sw"] < before["sw"] and report["nll"]["tl"] < before["tl"]


def test_paramdelta_cpt_trains_only_new_experts(world: dict[str, Path]) -> None:
    from compass.expand import upcycle

    model = load_base(world["base"])
    spec = upcycle(model, ["sw", "tl"])
    before = _state(model)
    texts = load_texts([world["data"]], keys=["sw", "tl"])
    res = continue_pretraining(model, texts, load_tokenizer(world["base"]), steps=4, lr=0.01, batch_size=4,
                               max_length=16, moe=True)
    assert res.steps == 4 and len(res.losses["sw"]) == len(res.losses["tl"]) == 2
    after = _state(model)
    new = [f".experts.{j}." for j, name in enumerate(spec.expert_names) if name in ("sw", "tl")]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "CPT changed nothing"
    assert all(any(m in k for m in new) for k in changed), sorted(changed - {k for k in changed
                                                                             if any(m in k for m in new)})
    # both new experts of every layer learned something
    for m in new:
        assert any(m in k for k in changed)


def test_paramdelta_grafts_delta_on_base_expert_and_shared_weights(world: dict[str, Path], tmp_path: Path) -> None:
    res = _run(world, tmp_path, "paramdelta")
    assert res.exit_code == 0, res.output
    base, post = load_base(world["base"]), load_base(world["post"])
    base_state = _state(base)
    delta = param_delta(base_state, _state(post))
    model, spec, _ = load_expanded(tmp_path / "model")
    got = model.state_dict()
    expanded = expand_delta(delta, spec)
    base_idx = spec.expert_names.index("base")
    dense_of = {k: re.sub(r"\.mlp\.experts\.\d+\.", ".mlp.", k) for k in expanded}  # the dense key of each
    n_checked = 0
    for k, d in expanded.items():
        want = base_state[dense_of[k]] + d
        if ".mlp.experts." in k and f".mlp.experts.{base_idx}." not in k:
            # a new language's expert = its CPT weights + Δ: not the base's
            assert not torch.allclose(got[k], want), k
        else:
            # CPT never touched the base expert nor shared weights: exactly θ_base + Δ_post
            assert torch.allclose(got[k], want, atol=1e-6), k
            n_checked += 1
    assert n_checked > 0


def test_task_arithmetic_with_a_peft_post_adds_the_merged_adapter_delta(world: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    assert _run(world, tmp_path / "dense", "dense-cpt").exit_code == 0
    res = _run(world, tmp_path / "ta", "task-arithmetic", post=str(world["adapter"]))
    assert res.exit_code == 0, res.output + repr(res.exception)
    base = load_base(world["base"])
    delta = param_delta(_state(base), post_state_from_peft(base, world["adapter"]))
    assert any(float(d.abs().max()) > 0 for d in delta.values())
    cpt, ta = _state(load_base(tmp_path / "dense" / "model")), _state(load_base(tmp_path / "ta" / "model"))
    for k in cpt:
        assert torch.allclose(ta[k], cpt[k] + delta[k], atol=1e-6), k


@pytest.mark.parametrize("case", ["shapes", "no-data", "method", "no-post"])
def test_refused_before_any_training(world: dict[str, Path], tmp_path: Path, case: str) -> None:
    out = tmp_path / "out"
    if case == "shapes":
        res, needle = _run(world, out, "paramdelta", post=str(world["other"])), "hidden_size"
    elif case == "no-data":
        res = runner.invoke(app, ["expand", "--base", str(world["base"]), "--post", str(world["post"]), "--langs",
                                  "sw,yo", "--data", str(world["data"]), "--steps", "2", "--out", str(out)])
        needle = "yo"
    elif case == "method":
        res, needle = _run(world, out, "lora-magic"), "lora-magic"
    else:
        res = runner.invoke(app, ["expand", "--base", str(world["base"]), "--langs", "sw", "--data",
                                  str(world["data"]), "--method", "ties", "--steps", "2", "--out", str(out)])
        needle = "--post"
    assert res.exit_code != 0
    assert isinstance(res.exception, ExpandError), repr(res.exception)
    msg = str(res.exception)
    assert needle in msg
    # the message names the fix: "fix: ...", or for the shapes the post model to use instead
    assert "fix" in msg.lower() or ("--post" in msg and "use the post-trained model" in msg)
    assert not (out / "checkpoints").exists() and not (out / "report.json").exists()


@pytest.mark.parametrize("moe", [True, False])
def test_stopped_cpt_resumes_to_identical_weights(world: dict[str, Path], tmp_path: Path, moe: bool) -> None:
    from compass.expand import upcycle

    texts = load_texts([world["data"]], keys=["sw", "tl"])
    tok = load_tokenizer(world["base"])
    kw = {"steps": 6, "lr": 0.01, "batch_size": 4, "max_length": 16, "moe": moe, "seed": 3}

    def fresh() -> torch.nn.Module:
        m = load_base(world["base"])
        if moe:
            upcycle(m, ["sw", "tl"])
        return m

    straight = fresh()
    full = continue_pretraining(straight, texts, tok, **kw)
    ck = tmp_path / "ck"
    first = fresh()
    stopped = continue_pretraining(first, texts, tok, checkpoint_dir=ck, checkpoint_every=2,
                                   should_stop=lambda step: step == 3, **kw)
    assert stopped.stopped and stopped.steps == 3
    assert [d.name for d in ck.iterdir()] == ["ckpt-00000003"]  # older checkpoint replaced, no temp dir left
    resumed_model = fresh()  # a new process: weights from the initial model, the rest from the checkpoint
    resumed = continue_pretraining(resumed_model, texts, tok, checkpoint_dir=ck, checkpoint_every=2, **kw)
    assert resumed.resumed_from == 3 and resumed.steps == 6 and not resumed.stopped
    assert resumed.losses == full.losses
    a, b = _state(straight), _state(resumed_model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a checkpoint of other settings is refused rather than silently mixed in
    with pytest.raises(ExpandError, match="other settings"):
        continue_pretraining(fresh(), texts, tok, checkpoint_dir=ck, checkpoint_every=2, **{**kw, "lr": 0.02})


def test_rerunning_the_command_continues_from_its_checkpoint(world: dict[str, Path], tmp_path: Path) -> None:
    # the first run stands for a killed one: its checkpoint at step 4; the rerun (budget 6) continues from it
    assert _run(world, tmp_path / "a", "paramdelta", "--checkpoint-every", "2", steps=4).exit_code == 0
    res = _run(world, tmp_path / "a", "paramdelta", "--checkpoint-every", "2", steps=6)
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["cpt"]["resumed_from"] == 4 and report["steps"] == 6
    assert _run(world, tmp_path / "b", "paramdelta", "--checkpoint-every", "2", steps=6).exit_code == 0
    a, _, _ = load_expanded(tmp_path / "a" / "model")
    b, _, _ = load_expanded(tmp_path / "b" / "model")
    sa, sb = _state(a), _state(b)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert get_spec(a) is not None


def test_data_pairs_and_seeded_split(world: dict[str, Path]) -> None:
    pairs = load_texts([f"chat={world['data'] / 'en.jsonl'}", f"sw={world['data'] / 'sw.jsonl'}"])
    assert set(pairs) == {"chat", "sw"} and len(pairs["chat"]) == 20
    train, held = split_heldout(pairs, share=0.25, seed=5)
    train2, held2 = split_heldout(pairs, share=0.25, seed=5)
    assert held == held2 and train == train2
    assert len(held["sw"]) == 5 and len(train["sw"]) == 15
    assert sorted(held["sw"] + train["sw"]) == sorted(pairs["sw"])
    with pytest.raises(ExpandError, match="lang=path"):
        load_texts(["not-a-dir-nor-pair"])


def test_a_killed_process_resumes_to_the_weights_of_an_uninterrupted_run(world: dict[str, Path], tmp_path: Path
                                                                         ) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    steps, every = 1200, 100
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "daemon.cli", "expand", "--base", str(world["base"]), "--post", str(world["post"]),
            "--langs", "sw,tl", "--data", str(world["data"]), "--method", "paramdelta", "--steps", str(steps),
            "--out", str(out), "--batch-size", "4", "--max-length", "16", "--lr", "0.01",
            "--checkpoint-every", str(every)]
    proc = subprocess.Popen(args, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            if any((out / "checkpoints").glob("ckpt-*")):
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up, as a lost machine
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before its first checkpoint; raise steps"
    assert not (out / "report.json").exists()
    killed_at = int(sorted((out / "checkpoints").glob("ckpt-*"))[-1].name.split("-")[1])
    assert 0 < killed_at < steps

    res = _run(world, out, "paramdelta", "--checkpoint-every", str(every), steps=steps)
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert json.loads((out / "report.json").read_text())["cpt"]["resumed_from"] >= killed_at
    assert _run(world, tmp_path / "straight", "paramdelta", "--checkpoint-every", str(every), steps=steps).exit_code == 0
    a, _, _ = load_expanded(out / "model")
    b, _, _ = load_expanded(tmp_path / "straight" / "model")
    sa, sb = _state(a), _state(b)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
