"""Prometheus metrics of every service (consumer, daemon, worker, model server) against deploy/'s alert rules and
Grafana dashboard: every metric those use is exported, the language label is ``lang`` everywhere, durations are in
``*_seconds``, counters end in ``_total``; the rules pass ``promtool check rules``."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families
from test_route import SENTENCES
from test_serving import config_for, lm, make_server, register  # noqa: F401 (lm: a fixture)

from compass.registry import AdapterRegistry
from consumers.metrics import ConsumerMetrics
from daemon.api.app import create_app
from daemon.api.serving import create_serving_app
from daemon.scheduler.metrics import DaemonMetrics
from daemon.serving.metrics import ServingMetrics
from daemon.worker.metrics import WorkerMetrics
from infra.reference import set_reference
from infra.window import Assignment, WindowStore

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "compass-alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "compass-dashboard.json"
LANGS = """
defaults: {min_samples: 4, window_size: 4, theta: 0.2, cooldown_s: 100}
languages:
  sw: {}
"""
# Suffixes of the series a family exposes, by type (prometheus_client's exposition).
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}
LANGUAGE_LABELS = {"language", "lng", "locale", "language_code"}  # spellings that must be `lang`
PROMQL_WORDS = {  # functions, aggregations and keywords: identifiers in an expression that are not metrics
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group",
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
    "rate", "irate", "increase", "delta", "idelta", "deriv", "predict_linear", "histogram_quantile", "abs",
    "absent", "absent_over_time", "clamp_min", "clamp_max", "changes", "resets", "label_replace", "label_values",
    "avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "count_over_time", "time", "vector",
    "scalar", "round", "sort", "sort_desc", "timestamp", "e", "inf", "nan",
}


def series(families: Iterable) -> set[str]:
    """The series names ``families`` (prometheus_client Metric objects) expose, samples or not."""
    return {f.name + s for f in families for s in SUFFIXES[f.type]}


def scraped(text: str) -> set[str]:
    return series(text_string_to_metric_families(text))


def wrappers(*metric_sets: object) -> list[MetricWrapperBase]:
    return [v for m in metric_sets for v in vars(m).values() if isinstance(v, MetricWrapperBase)]


def every_metric_set() -> list[object]:
    return [DaemonMetrics(), ConsumerMetrics(), WorkerMetrics(), ServingMetrics()]


def exported() -> set[str]:
    """Every series name any service exports (each metric set on its own registry)."""
    return set().union(*(series(m.registry.collect()) for m in every_metric_set()))  # type: ignore[attr-defined]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads: label matchers, grouping lists, ranges and strings removed, then
    every identifier that is not a PromQL word."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$\w+", "", expr)
    expr = re.sub(r"label_values\(([^,)]*),\s*\w+\s*\)", r"(\1)", expr)  # Grafana's: (metric, label name)
    return {w for w in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr) if w.lower() not in PROMQL_WORDS}


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    return exprs + [v["query"]["query"] for v in dash["templating"]["list"] if v["type"] == "query"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the services' /metrics


def test_daemon_metrics_endpoint_exports_lang_labels_and_readiness(make_daemon, redis):
    daemon = make_daemon(LANGS, "metrics")
    client = TestClient(create_app(daemon))
    set_reference(redis, "sw", probs=[0.5, 0.5, 0.0], codebook_version="v1", adapter_version="a1")
    items = [Assignment(f"q{i}", 0, "compass.queries", 0, i, f"t{i}") for i in range(4)]
    WindowStore(redis).apply_batch({"sw": (4, items)}, "v1", 3)
    result = daemon.check("sw", 1_000_000.0)
    assert (result.state, result.fired) == ("drift", True)
    assert client.get("/readyz").json() == {"ready": True, "redis": "ok", "kafka": "ok"}
    text = client.get("/metrics").text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}
    assert values[("compass_daemon_js_bits", (("lang", "sw"),))] == result.js
    assert values[("compass_daemon_window_fill_ratio", (("lang", "sw"),))] == 1.0
    assert values[("compass_daemon_checks_total", (("lang", "sw"), ("state", "drift")))] == 1.0
    assert values[("compass_daemon_jobs_total", (("kind", "adapter_update"), ("lang", "sw")))] == 1.0
    assert values[("compass_daemon_ready", (("service", "kafka"),))] == 1.0
    assert values[("compass_daemon_ready", (("service", "redis"),))] == 1.0
    assert values[("compass_daemon_check_seconds_count", ())] == 1.0
    labels = {k for f in fams.values() for s in f.samples for k in s.labels}
    assert "lang" in labels and not labels & LANGUAGE_LABELS
    assert scraped(text) == series(daemon.metrics.registry.collect())


def test_consumer_metrics_endpoint_serves_its_registry():
    m = ConsumerMetrics()
    m.window_fill.labels("sw").set(0.25)
    m.dead_letters.labels("bad_json").inc(3)
    port = free_port()
    m.serve(port)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'compass_consumer_window_fill_ratio{lang="sw"} 0.25' in text
    assert 'compass_consumer_dead_letters_total{reason="bad_json"} 3.0' in text
    assert scraped(text) == series(m.registry.collect())


def test_serving_metrics_endpoint_counts_routed_requests(tmp_path, lm):  # noqa: F811 (lm: the fixture)
    reg = AdapterRegistry(tmp_path / "adapters")
    register(reg, lm, "it", "it-v1", seed=1)
    server = make_server(config_for(tmp_path), lm)
    client = TestClient(create_serving_app(server))
    assert client.post("/v1/generate", json={"text": SENTENCES["it"]}).json()["adapter_version"] == "it-v1"
    text = client.get("/metrics").text
    assert 'compass_serving_requests_total{kind="compass",lang="it"} 1.0' in text
    assert 'compass_serving_batch_seconds_count{lang="it"} 1.0' in text
    assert "compass_serving_adapters_loaded 1.0" in text
    assert scraped(text) == series(server.metrics.registry.collect())


# ---------------------------------------------------------------- names and labels


def test_the_language_label_is_lang_everywhere():
    by_metric = {w._name: set(w._labelnames) for w in wrappers(*every_metric_set())}  # noqa: SLF001
    assert not {n for n, labels in by_metric.items() if labels & LANGUAGE_LABELS}
    per_lang = {n for n, labels in by_metric.items() if "lang" in labels}
    assert {"compass_daemon_js_bits", "compass_consumer_window_fill_ratio", "compass_worker_jobs",
            "compass_serving_requests"} <= per_lang


def test_durations_are_seconds_and_counters_total():
    for m in every_metric_set():
        for fam in m.registry.collect():  # type: ignore[attr-defined]
            timed = fam.type in ("histogram", "summary") or re.search(r"\b(duration|latency)\b", fam.documentation)
            if timed:
                assert fam.name.endswith("_seconds"), fam.name
            assert not re.search(r"_(ms|millis|milliseconds|secs|s|minutes|hours)$", fam.name), fam.name
            assert fam.name.startswith("compass_"), fam.name
    names = exported()
    counters = {f.name for m in every_metric_set() for f in m.registry.collect() if f.type == "counter"}  # type: ignore[attr-defined]
    assert counters and all(f"{c}_total" in names for c in counters)


# ---------------------------------------------------------------- alert rules and dashboard


def test_alert_rules_pass_promtool():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus; scripts/setup.sh installs it)")
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules())} rules found" in out.stdout


def test_every_alert_pages_with_context_on_exported_metrics():
    names, alerts = exported(), rules()
    assert {r["alert"] for r in alerts} >= {
        "CompassConsumerLagGrowing", "CompassDeadLettersRising", "CompassLanguageStuck", "CompassClustersStale",
        "CompassWorkerJobsFailing", "CompassRedisUnreachable", "CompassKafkaUnreachable", "CompassUpdateTimedOut"}
    for r in alerts:
        assert r.get("for"), r["alert"]
        assert r["labels"]["severity"] in ("page", "ticket"), r["alert"]
        assert {"summary", "description", "runbook"} <= set(r["annotations"]), r["alert"]
        used = metric_names(r["expr"])
        assert used and used <= names, (r["alert"], used - names)


def test_dashboard_queries_read_only_exported_metrics():
    names, exprs = exported(), dashboard_exprs()
    assert len(exprs) >= 20
    used = set().union(*(metric_names(e) for e in exprs))
    assert used <= names, used - names
    # what on-call looks for first: JS vs threshold, window fill, consumer flow, worker jobs, stuck/updating
    assert {"compass_daemon_js_bits", "compass_daemon_threshold", "compass_consumer_window_fill_ratio",
            "compass_consumer_messages_total", "compass_consumer_lag", "compass_consumer_dead_letters_total",
            "compass_worker_jobs_total", "compass_daemon_stuck", "compass_daemon_updating"} <= used


def test_metric_names_of_an_expression():
    assert metric_names('sum by (lang) (rate(compass_x_total{lang=~"$lang", a="b c"}[$__rate_interval])) > 0.3'
                        ) == {"compass_x_total"}
    assert metric_names("label_values(compass_daemon_js_bits, lang)") == {"compass_daemon_js_bits"}
    assert metric_names("histogram_quantile(0.95, sum by (le) (rate(y_bucket[5m]))) and on(a) z") == {"y_bucket", "z"}
