"""The live status page (GET /) and its JSON (GET /v1/status) over a real Daemon on the real Kafka and Redis:
the JSON's exact content, then the page rendered by headless chromium against uvicorn on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import pytest
import torch
from fastapi.testclient import TestClient
from httpserve import serve

from compass.drift.emerging import EmergingState, how_to_serve, states_to_json
from compass.registry import AdapterManifest, AdapterRegistry
from daemon.api.app import create_app
from infra.history import queue_event, record_check
from infra.messages import Event
from infra.reference import set_reference
from infra.unserved import Traffic, UnservedStore
from infra.window import Assignment, WindowStore

LANGS = """
defaults: {min_samples: 4, window_size: 8, theta: 0.15, rearm_ratio: 0.5, cooldown_s: 100}
languages:
  it: {}
  es: {}
"""
T0 = 1_763_800_000.0
N_POINTS = 37
FIRED_AT = (12, 30)  # readings whose check fired (state "drift"): the chart's trigger markers
CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def daemon(make_daemon, services, tmp_path):
    adapters = services.config.adapters.model_copy(update={"registry": str(tmp_path / "adapters")})
    consumer = services.config.consumer.model_copy(update={"codebook_dir": tmp_path / "codebooks"})
    return make_daemon(LANGS, "page", adapters=adapters, consumer=consumer)


def js_of(i: int) -> float:
    return round(0.02 + (i % 10) * 0.02, 4)  # 0.02 .. 0.2: crosses theta 0.15


@pytest.fixture
def recorded(daemon, redis):
    """``it``: a JS history, a window over 3 buckets vs P_ref, two adapter versions (one promoted), events."""
    for i in range(N_POINTS):
        state = "drift" if i in FIRED_AT else "below_threshold"
        record_check(redis, "it", {"at": T0 + 60 * i, "js": js_of(i), "theta": 0.15, "n_samples": 8, "state": state},
                     daemon.prefix)
    set_reference(redis, "it", probs=[0.5, 0.25, 0.25], codebook_version="v1", adapter_version="va")
    labels = daemon.config.consumer.codebook_dir / "v1" / "labels.json"  # the codebook's cluster labels
    labels.parent.mkdir(parents=True)
    labels.write_text(json.dumps({"store_examples": True, "clusters": [
        {"cluster": 0, "label": "pizza · pasta", "examples": ["ricetta della pizza"]},
        {"cluster": 1, "label": "treno · orario", "examples": []}]}))
    items = [Assignment(f"q{i}", b, "compass.queries", 0, i, f"testo {i}") for i, b in enumerate([0, 0, 0, 0, 0, 0, 1, 2])]
    WindowStore(redis).apply_batch({"it": (8, items)}, "v1", 3)
    reg = AdapterRegistry(daemon.config.adapters.registry)
    for v, parent in (("va", None), ("vb", "va")):
        reg.write_version("it", {"w": torch.zeros(2)}, {"r": 4},
                          AdapterManifest(language="it", version=v, base_model_id="tiny", codebook_version="v1",
                                          parent=parent))
    reg.promote("it", "va", {"outcome": "pass"})
    with redis.pipeline(transaction=True) as pipe:
        queue_event(pipe, Event("drift_detected", "it", T0 + 720, "it-job-1", {"js": 0.2, "theta": 0.15}), daemon.prefix)
        queue_event(pipe, Event("adapter_rejected", "it", T0 + 900, "it-job-1",
                                {"adapter_version": "vb", "reasons": ["retention +7% > margin 5%"]}), daemon.prefix)
        pipe.execute()
    return reg


def test_status_json_has_every_card_exactly(daemon, recorded):
    client = TestClient(create_app(daemon))
    body = client.get("/v1/status").json()
    assert [c["language"] for c in body["languages"]] == ["es", "it"]
    es, it = body["languages"]
    assert (es["error"], es["js_history"], es["timeline"]) == (None, [], [])
    assert es["adapters"] == {"current": None, "n_versions": 0, "versions": [], "promotions": [], "error": None}
    assert es["proportions"]["reference"] is None and es["badge"] == "unknown"
    assert len(it["js_history"]) == N_POINTS
    assert it["js_history"][12] == {"at": T0 + 720, "js": 0.06, "theta": 0.15, "n_samples": 8, "state": "drift"}
    assert it["proportions"]["window"] == [0.75, 0.125, 0.125]
    assert it["proportions"]["reference"] == [0.5, 0.25, 0.25]
    assert it["proportions"]["counts"] == [6, 1, 1]
    assert it["window"]["fill"] == 1.0
    a = it["adapters"]
    assert (a["current"], a["n_versions"], a["versions"]) == ("va", 2, ["vb", "va"])
    assert [(p["action"], p["version"], p["gate"]) for p in a["promotions"]] == [("promote", "va", {"outcome": "pass"})]
    assert [e["type"] for e in it["timeline"]] == ["adapter_rejected", "drift_detected"]
    # P_ref [.5, .25, .25] vs window [.75, .125, .125]: JS terms .01816, .01532, .01532 (ties by bucket id)
    assert [(c["cluster"], c["label"], c["example"]) for c in it["explanation"]["clusters"]] == [
        (0, "pizza · pasta", "ricetta della pizza"), (1, "treno · orario", None), (2, "noise", None)]
    assert len(client.get("/v1/status", params={"points": 5}).json()["languages"][1]["js_history"]) == 5


@pytest.fixture
def unserved(daemon, redis):
    """10 served queries, ca 4 (in an episode, as the daemon writes it) and und 1, asked now."""
    now_ms, items = int(time.time() * 1000), []
    for lang, served, n in (("it", True, 10), ("ca", False, 4), ("und", False, 1)):
        for i in range(n):
            items.append(Traffic(f"{lang}-{i}", lang, served, "compass.queries", 0, len(items), now_ms))
    UnservedStore(redis).apply(items)
    redis.set("compass:{unserved}:emerging", states_to_json({"ca": EmergingState(True, T0, 4 / 15, 4, 1)}))


def test_status_json_has_the_unserved_panel(daemon, unserved):
    u = TestClient(create_app(daemon)).get("/v1/status").json()["unserved"]
    assert (u["error"], u["served"], u["total"], u["horizon_s"]) == (None, 10, 15, 86400)
    assert [(r["language"], r["count"], r["share"], r["status"], r["since"], r["sample_ids"]) for r in u["languages"]] == [
        ("ca", 4, 4 / 15, "emerging", T0, ["ca-0", "ca-1", "ca-2", "ca-3"]),
        ("und", 1, 1 / 15, "undetermined", None, ["und-0"])]
    assert u["languages"][0]["how"] == how_to_serve("ca")


def test_a_broken_unserved_state_is_reported_in_the_panel(daemon, redis):
    redis.set("compass:{unserved}:emerging", "{")
    u = TestClient(create_app(daemon)).get("/v1/status").json()["unserved"]
    assert u["languages"] == [] and u["error"].startswith("EmergingError: compass:{unserved}:emerging: not JSON")


def test_page_is_self_contained(daemon):
    html = TestClient(create_app(daemon)).get("/")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    text = html.text
    for outside in ("<link", "src=", "@import", "url(", "https://"):
        assert outside not in text
    assert text.count("http://") == 1 and "http://www.w3.org/2000/svg" in text  # the SVG namespace, not a fetch
    assert 'data-poll-ms="5000"' in text


def test_a_broken_language_gets_an_error_card_not_a_500(daemon, redis):
    redis.hset("compass:{it}:counts", "7", 1)  # bucket outside the window's (absent) codebook: corrupt state
    redis.hset("compass:{it}:meta", mapping={"codebook_version": "v1", "n_buckets": 3})
    body = TestClient(create_app(daemon)).get("/v1/status").json()
    it = next(c for c in body["languages"] if c["language"] == "it")
    assert it["badge"] == "attention" and it["error"].startswith("WindowStateError: compass:{it}:counts: bucket 7")


@pytest.fixture
def server(daemon):
    with serve(create_app(daemon)) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def browser():
    if not shutil.which(CHROMIUM) or not shutil.which(CHROMEDRIVER):
        pytest.skip(f"needs Debian's chromium and chromedriver ({CHROMIUM}, {CHROMEDRIVER}): apt-get install chromium "
                    "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="compass-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", "--window-size=1400,2000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def test_page_renders_the_cards_in_headless_chromium(server, browser, recorded):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    line = WebDriverWait(browser, 60).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, "#card-it svg.js-chart polyline.js-line"))[0]
    card = browser.find_element(By.ID, "card-it")
    assert line.get_attribute("data-points") == str(N_POINTS)
    assert len(line.get_attribute("points").split()) == N_POINTS
    chart = card.find_element(By.CSS_SELECTOR, "svg.js-chart")
    assert (chart.get_attribute("data-readings"), chart.get_attribute("data-triggers")) == (str(N_POINTS), "2")
    markers = card.find_elements(By.CSS_SELECTOR, "svg.js-chart circle.trigger-marker")
    assert sorted(float(m.get_attribute("data-at")) for m in markers) == [T0 + 60 * i for i in FIRED_AT]
    theta = card.find_element(By.CSS_SELECTOR, "svg.js-chart line.theta-line")
    assert theta.get_attribute("data-theta") == "0.15"
    assert theta.get_attribute("y1") == theta.get_attribute("y2")
    assert float(theta.get_attribute("x2")) > float(theta.get_attribute("x1"))
    # JS points above theta sit above the theta line (SVG y grows downwards)
    ys = [float(p.split(",")[1]) for p in line.get_attribute("points").split()]
    above = [i for i in range(N_POINTS) if js_of(i) > 0.15]
    assert above and all(ys[i] < float(theta.get_attribute("y1")) for i in above)

    bars = card.find_elements(By.CSS_SELECTOR, "svg.cluster-bars rect.bar-window")
    refs = card.find_elements(By.CSS_SELECTOR, "svg.cluster-bars rect.bar-ref")
    assert [float(b.get_attribute("data-p")) for b in bars] == [0.75, 0.125, 0.125]
    assert [float(b.get_attribute("data-p")) for b in refs] == [0.5, 0.25, 0.25]

    rows = card.find_elements(By.CSS_SELECTOR, "table.explain tr[data-cluster]")
    assert [(r.get_attribute("data-cluster"), r.get_attribute("data-label")) for r in rows] == [
        ("0", "pizza · pasta"), ("1", "treno · orario"), ("2", "noise")]
    assert "ricetta della pizza" in rows[0].text and "0.750" in rows[0].text
    assert "nothing to explain: no P_ref" in browser.find_element(By.ID, "card-es").text

    assert card.find_element(By.CSS_SELECTOR, ".adapters .current-version").text == "va"
    events = card.find_elements(By.CSS_SELECTOR, "ol.timeline li")
    assert [e.get_attribute("data-type") for e in events] == ["adapter_rejected", "drift_detected"]
    assert "it-job-1" in events[1].text and "drift_detected" in events[1].text
    assert "retention +7% > margin 5%" in events[0].text

    es = browser.find_element(By.ID, "card-es")
    assert es.find_element(By.CSS_SELECTOR, "polyline.js-line").get_attribute("data-points") == "0"
    assert es.find_element(By.CSS_SELECTOR, ".adapters .current-version").text == "none"
    assert browser.find_element(By.ID, "error").is_displayed() is False
    if os.environ.get("COMPASS_STATUS_SCREENSHOT"):  # a PNG of the rendered page, for a human look
        browser.save_screenshot(os.environ["COMPASS_STATUS_SCREENSHOT"])


def test_badges_of_states_and_phases():
    from daemon.api.status_page import badge

    assert [badge(s, p) for s, p in [("settling", "settling"), ("drift", "updating"), ("below_threshold", "idle"),
                                     ("paused", "updating"), ("insufficient_samples", "idle"), ("new", "idle")]] == [
        "drift", "updating", "ok", "paused", "warming", "unknown"]
    assert [badge(s, p) for s, p in [("stuck", "stuck"), ("below_threshold", "stuck"), ("calibrating", "idle"),
                                     ("backoff", "idle")]] == ["stuck", "stuck", "warming", "cooldown"]


def test_page_shows_a_stuck_language_and_a_calibrated_threshold(server, browser, daemon, redis):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from compass.drift.lifecycle import DriftState
    from daemon.scheduler.state import LanguageStatus

    reason = "3 updates in a row did not promote (last: rejected); resume with POST /v1/languages/<lang>/resume"
    drift = DriftState(phase="stuck", failures=3, stuck={"at": T0, "reason": reason, "outcome": "rejected"})
    redis.set("compass:{es}:status", LanguageStatus(drift, {"at": T0, "state": "stuck", "threshold": 0.15}).to_json())
    for i, thr in enumerate((0.21, 0.22, 0.23)):  # a calibrated detector's effective threshold, per check
        record_check(redis, "es", {"at": T0 + 60 * i, "js": 0.05, "theta": 0.15, "n_samples": 8,
                                   "state": "below_threshold", "detector": "calibrated", "threshold": thr,
                                   "statistic": 0.05}, daemon.prefix)
    browser.get(server + "/")
    card = WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#card-es .stuck-reason"))
    es = browser.find_element(By.ID, "card-es")
    assert es.get_attribute("data-badge") == "stuck" and es.find_element(By.CSS_SELECTOR, ".badge.stuck").text
    assert reason in card[0].text
    assert es.find_element(By.CSS_SELECTOR, "svg.js-chart polyline.threshold-line").get_attribute("data-points") == "3"
    assert "fixed · 0.150" in es.text  # the detector fact: mode and effective threshold
    assert browser.find_element(By.ID, "error").is_displayed() is False


def test_page_shows_the_unserved_languages_and_how_to_serve_one(server, browser, unserved):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    rows = WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#unserved table tr[data-lang]"))
    assert [(r.get_attribute("data-lang"), r.get_attribute("data-status"), r.get_attribute("data-count"))
            for r in rows] == [("ca", "emerging", "4"), ("und", "undetermined", "1")]
    assert "26.67%" in rows[0].text and "ca-3" in rows[0].text and "emerging since" in rows[0].text
    how = browser.find_elements(By.CSS_SELECTOR, "#unserved .how[data-lang]")
    assert [h.get_attribute("data-lang") for h in how] == ["ca"] and how_to_serve("ca").replace("`", "") in how[0].text
    assert "compass adapt --target LANG" in browser.find_element(By.ID, "unserved").text
    assert browser.find_element(By.ID, "error").is_displayed() is False
