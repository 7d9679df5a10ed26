"""Checks at scale (issue 20): the window's inflow (pure), a round's batched reads deciding exactly as the
per-language checks do (real Redis), the status JSON's summary and pagination, the sampling rate in the status."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient

from compass.drift.inflow import Inflow, traffic_qps, update, window_span_s
from daemon.api.app import create_app
from infra.reference import set_reference
from infra.window import Assignment, WindowStore

T0 = 1_763_800_000.0


@pytest.mark.parametrize("case, prev, seen, at, half_life, expected", [
    ("first check: no slope yet", None, 500, T0, 60.0, Inflow(500, T0, None)),
    ("second check: the interval's rate as is", Inflow(500, T0, None), 520, T0 + 2, 60.0, Inflow(520, T0 + 2, 10.0)),
    # rate 20, weight 1 - 2^(-60/60) = 0.5: 10 + 0.5 * (20 - 10)
    ("one half-life later: halfway", Inflow(0, T0, 10.0), 1200, T0 + 60, 60.0, Inflow(1200, T0 + 60, 15.0)),
    # rate 0, weight 1 - 2^(-120/60) = 0.75: 8 - 0.75 * 8
    ("two half-lives idle", Inflow(100, T0, 8.0), 100, T0 + 120, 60.0, Inflow(100, T0 + 120, 2.0)),
    ("reset (seen fell): rate kept, counter restarts", Inflow(900, T0, 4.0), 3, T0 + 2, 60.0, Inflow(3, T0 + 2, 4.0)),
    ("no time elapsed: the previous estimate", Inflow(10, T0, 1.0), 30, T0, 60.0, Inflow(10, T0, 1.0)),
    ("clock stepped back: the previous estimate", Inflow(10, T0, 1.0), 30, T0 - 5, 60.0, Inflow(10, T0, 1.0)),
])
def test_inflow_update(case, prev, seen, at, half_life, expected):
    got = update(prev, seen, at, half_life)
    assert (got.seen, got.at) == (expected.seen, expected.at), case
    assert got.qps == pytest.approx(expected.qps) if expected.qps is not None else got.qps is None, case


@pytest.mark.parametrize("size, qps, sampling, span, traffic", [
    (2000, 10.0, 1.0, 200.0, 10.0),
    (2000, 10.0, 0.1, 200.0, 100.0),  # sampled at 10%: the language sees 100 q/s; the window still spans 200 s
    (2000, 0.0, 0.5, None, 0.0),  # no inflow: the window spans "forever", unknown
    (0, None, 1.0, None, None),
])
def test_window_span_and_traffic(size, qps, sampling, span, traffic):
    assert window_span_s(size, qps) == span
    assert traffic_qps(qps, sampling) == traffic


def test_inflow_rejects_a_bad_half_life_and_rate():
    with pytest.raises(ValueError, match="half_life_s must be a finite number of seconds > 0; got 0"):
        update(None, 1, T0, 0)
    with pytest.raises(ValueError, match=r"sampling_rate must be in \(0, 1\]; got 0"):
        traffic_qps(1.0, 0)


# ------------------------------------------------------------------ real Redis

N_LANGS = 50
K = 5


def languages_yaml(langs: list[str]) -> str:
    return json.dumps({"defaults": {"min_samples": 20, "window_size": 40, "theta": 0.15, "cooldown_s": 100},
                       "languages": {lang: {} for lang in langs}})


def fifty() -> list[str]:
    from compass.langcodes import LANGUAGES

    return sorted(LANGUAGES)[:N_LANGS]


def seed(redis, prefix: str, langs: list[str], rng: np.random.Generator) -> None:
    """Windows of every kind a round meets: comparable below and above theta, no reference, another lineage, too
    few queries, paused, a manual trigger, a damaged window, a damaged status."""
    store = WindowStore(redis, prefix)
    for i, lang in enumerate(langs):
        p = rng.dirichlet(np.ones(K))
        n = 10 if i % 10 == 3 else 40  # too few for min_samples 20
        ids = rng.choice(K, size=n, p=np.roll(p, 2) if i % 10 == 1 else p)  # i % 10 == 1: drifted
        store.apply_batch({lang: (40, [Assignment(f"q{j}", int(b), "t", 0, j) for j, b in enumerate(ids)])}, "v1", K)
        if i % 10 != 2:  # i % 10 == 2: no reference
            set_reference(redis, lang, probs=p.tolist(), codebook_version="v2" if i % 10 == 4 else "v1",
                          adapter_version="a1", prefix=prefix)
    if len(langs) > 8:
        redis.set(f"{prefix}:{{{langs[5]}}}:paused", "{}")
        redis.set(f"{prefix}:{{{langs[6]}}}:force", "{}")
        redis.hset(f"{prefix}:{{{langs[7]}}}:counts", "99", 1)  # a bucket outside the codebook: WindowStateError
        redis.set(f"{prefix}:{{{langs[8]}}}:status", "{")  # not JSON
    if len(langs) > 9:
        redis.set(f"{prefix}:{{{langs[9]}}}:history:js", "x")  # not a list: its readings cannot be appended


def feed(redis, prefix: str, langs: list[str], rng: np.random.Generator, start: int) -> None:
    store = WindowStore(redis, prefix)
    batch = {lang: (40, [Assignment(f"n{start + j}", int(b), "t", 0, 1000 + start + j)
                         for j, b in enumerate(rng.integers(0, K, size=7))]) for lang in langs[:30]}
    store.apply_batch(batch, "v1", K)


def outcome(daemon, results) -> list:
    out = []
    for r in results:
        st = daemon.client.get(daemon.keys.status(r.lang))
        last = None
        if st is not None and st != b"{":
            last = {k: v for k, v in (json.loads(st).get("last_check") or {}).items() if k != "at"}
        out.append((r.lang, r.state, r.fired, r.js, r.n_samples, r.detail, last))
    text = json.dumps(out).replace(f"{daemon.prefix}:{{", "PREFIX:{")  # keys name their prefix
    return json.loads(re.sub(r"-\d+-[0-9a-f]{6}\b", "-JOB", text))  # and a job id ends in a random suffix


def test_a_batched_round_decides_as_the_per_language_checks(make_daemon, services, redis):
    langs = fifty()
    prefixes = ("one", "round")
    daemons = {p: make_daemon(languages_yaml(langs), f"scale-{p}",
                              redis=services.config.redis.model_copy(update={"key_prefix": p})) for p in prefixes}
    for p in prefixes:
        seed(redis, p, langs, np.random.default_rng(7))
    one, batched = daemons["one"], daemons["round"]
    for i, now in enumerate((T0, T0 + 2, T0 + 4)):
        if i:
            for p in prefixes:
                feed(redis, p, langs, np.random.default_rng(i), 100 * i)
        singles = [one.check(lang, now) for lang in langs]
        rounds = batched.check_round(langs, now)
        assert outcome(one, singles) == outcome(batched, rounds), f"round {i}"
    states = {r.state for r in rounds}
    # every kind of check met (the drifted ones fired in round 0 and are updating now)
    assert {"below_threshold", "no_reference", "codebook_mismatch", "insufficient_samples", "paused", "error",
            "updating"} <= states, states
    assert batched.status(langs[0]).last_check["inflow_qps"] == pytest.approx(7 / 2)  # 7 queries in 2 s, then 7
    # a reading that cannot be appended is counted, the check's outcome unchanged, the same on both paths
    assert errors(one, langs[9], "history") == errors(batched, langs[9], "history") == 3.0
    assert redis.llen(f"round:{{{langs[0]}}}:history:js") == redis.llen(f"one:{{{langs[0]}}}:history:js") == 3


def errors(daemon, lang: str, kind: str) -> float:
    return daemon.metrics.registry.get_sample_value("compass_daemon_errors_total", {"lang": lang, "kind": kind}) or 0


class Overtaken:
    """A far share that lets another replica take the lease of the languages in ``steal`` and check them: mid-check,
    after this replica's hold and reads and before its fenced write (a stall past the lease's TTL)."""

    def __init__(self, thief, steal: set[str]):
        self.thief, self.steal = thief, steal

    def __call__(self, lang: str, snap) -> None:
        if lang in self.steal:
            self.thief.client.delete(self.thief.keys.lease(lang))  # our lease expired ...
            assert self.thief.check(lang, T0).state != "standby"  # ... and the other replica acted first
        return None

    def close(self) -> None:
        pass


def test_a_round_loses_an_overtaken_language_as_a_single_check_does(make_daemon, services, redis):
    langs = fifty()[:12]
    steal = {langs[0], langs[1], langs[6]}  # below theta, drifted (a job), a manual trigger (a job)
    results, kept = {}, {}
    for p in ("one", "round"):
        config = services.config.redis.model_copy(update={"key_prefix": p})
        daemon = make_daemon(languages_yaml(langs), f"overtaken-{p}", redis=config)
        thief = make_daemon(languages_yaml(langs), f"thief-{p}", redis=config)
        seed(redis, p, langs, np.random.default_rng(7))
        daemon.far_share = daemon.reader.far_share = Overtaken(thief, steal)
        got = [daemon.check(lang, T0) for lang in langs] if p == "one" else daemon.check_round(langs, T0)
        results[p] = outcome(daemon, got)
        kept[p] = [(lang, redis.exists(daemon.keys.force(lang))) for lang in sorted(steal)]
    assert results["one"] == results["round"]
    assert kept["one"] == kept["round"]  # a manual trigger taken and not acted on is handed back alike
    lost = {r[0]: r[1] for r in results["round"] if r[0] in steal}
    assert lost[langs[0]] == lost[langs[1]] == "standby", lost  # the other replica wrote first: it acts


def test_status_json_summarises_every_language_and_paginates(make_daemon, services, redis, tmp_path):
    langs = fifty()[:30]
    adapters = services.config.adapters.model_copy(update={"registry": str(tmp_path / "adapters")})
    daemon = make_daemon(languages_yaml(langs), "pages", adapters=adapters)
    seed(redis, daemon.prefix, langs, np.random.default_rng(3))
    daemon.check_round(langs)
    client = TestClient(create_app(daemon))
    body = client.get("/v1/status", params={"page": 2, "per_page": 12}).json()
    assert body["page"] == {"page": 2, "per_page": 12, "pages": 3, "total": 30}
    summary = body["summary"]
    assert len(summary) == 30 and sorted(r["language"] for r in summary) == langs
    assert [c["language"] for c in body["languages"]] == [r["language"] for r in summary[12:24]]
    # problems first: attention (the damaged status, no P_ref, another lineage), then the drifted ones that fired
    badges = [r["badge"] for r in summary]
    attention = [r["language"] for r in summary if r["badge"] == "attention"]
    assert badges[:len(attention)] == ["attention"] * len(attention) and langs[8] in attention
    assert next(r for r in summary if r["language"] == langs[8])["error"].startswith("JSONDecodeError")
    assert summary[0]["problem"] and not summary[-1]["problem"]
    assert badges.index("updating") < badges.index("ok")
    last = client.get("/v1/status", params={"page": 3, "per_page": 12}).json()
    assert len(last["languages"]) == 6

    for params, message in (
        ({"page": 4, "per_page": 12}, "page: got 4; must be an integer in [1, 3] (30 language(s) at 12 per page)"),
        ({"page": 0}, "page: got 0; must be an integer in [1, 2]"),
        ({"per_page": 0}, "per_page: got 0; must be an integer in [1, 200]"),
        ({"per_page": 201}, "per_page: got 201; must be an integer in [1, 200]"),
    ):
        r = client.get("/v1/status", params=params)
        assert r.status_code == 422 and r.json()["detail"].startswith(message), (params, r.json())
    r = client.get("/v1/status", params={"page": "two"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "page"]


def test_the_sampling_rate_of_the_window_meta_is_in_the_status(make_daemon, redis):
    daemon = make_daemon(languages_yaml(["sw", "yo"]), "sampling")
    seed(redis, daemon.prefix, ["sw", "yo"], np.random.default_rng(5))
    redis.hset("compass:{sw}:meta", "sampling_rate", "0.25")  # as the consumers write it (absent: every query)
    redis.hset("compass:{sw}:meta", "sampled_out", "21")
    daemon.check_round(["sw", "yo"], T0)
    feed(redis, daemon.prefix, ["sw", "yo"], np.random.default_rng(1), 0)
    daemon.check_round(["sw", "yo"], T0 + 10)
    sw, yo = daemon.describe("sw"), daemon.describe("yo")
    assert sw["window"]["sampling_rate"] == 0.25 and yo["window"]["sampling_rate"] == 1.0
    assert (sw["window"]["sampled_out"], yo["window"]["sampled_out"]) == (21, 0)
    assert sw["window"]["inflow_qps"] == pytest.approx(0.7)  # 7 queries in 10 s
    assert sw["window"]["traffic_qps"] == pytest.approx(2.8)  # sampled at 25%: 4x as many queries arrive
    assert sw["window"]["window_span_s"] == pytest.approx(40 / 0.7)
    assert sw["last_check"]["sampling_rate"] == 0.25
    rows = {r["language"]: r for r in TestClient(create_app(daemon)).get("/v1/status").json()["summary"]}
    assert (rows["sw"]["sampling_rate"], rows["yo"]["sampling_rate"]) == (0.25, 1.0)
    assert rows["sw"]["inflow_qps"] == pytest.approx(0.7)
