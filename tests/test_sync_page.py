"""The serving targets panel of the status page: out-of-sync targets first, with their error, in headless chromium
against uvicorn (a real Daemon on the real Kafka and Redis; the sync state written as `compass sync` writes it)."""

from __future__ import annotations

import pytest
from httpserve import serve
from test_status_page import LANGS
from test_status_page import browser as browser  # noqa: F401 - the headless chromium fixture

from daemon.api.app import create_app
from daemon.sync.state import TargetState, write_states
from infra.routes import RoutingTable
from infra.settings.serving import ServingTarget


@pytest.fixture
def daemon(make_daemon, services, tmp_path):
    targets = (ServingTarget(name="a", kind="compass", url="http://127.0.0.1:1"),
               ServingTarget(name="b", kind="vllm", url="http://127.0.0.1:2"),
               ServingTarget(name="c", kind="sglang", url="http://127.0.0.1:3"))
    adapters = services.config.adapters.model_copy(update={"registry": str(tmp_path / "adapters")})
    return make_daemon(LANGS, "targets", adapters=adapters,
                       serving=services.config.serving.model_copy(update={"targets": targets}))


def test_page_shows_targets_out_of_sync_first(daemon, redis, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    write_states(redis, daemon.prefix, [
        TargetState("a", "compass", "http://127.0.0.1:1", in_sync=True, loaded=["it-v2"], desired={"it": "it-v2"}),
        TargetState("b", "vllm", "http://127.0.0.1:2", loaded=["it-v1"], desired={"it": "it-v2"},
                    waiting={"it": "it-v2"}, error="target 'b' is unreachable", failures=3, next_retry=1e9)])
    RoutingTable(redis, daemon.prefix).switch("it", "it-v1")  # c never wrote a state: `compass sync` never ran it
    with serve(create_app(daemon)) as port:
        browser.get(f"http://127.0.0.1:{port}/")
        rows = WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#targets tr[data-target]"))
        assert [(r.get_attribute("data-target"), r.get_attribute("data-in-sync")) for r in rows] == [
            ("b", "0"), ("c", "0"), ("a", "1")]
        assert "target 'b' is unreachable" in rows[0].text and "OUT OF SYNC" in rows[0].text  # CSS upper-cases badges
        assert "never synced" in rows[1].text and "IN SYNC" in rows[2].text
        panel = browser.find_element(By.ID, "targets")
        assert panel.is_displayed() and "2 out of sync" in panel.text and "it → it-v1" in panel.text
