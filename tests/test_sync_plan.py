"""The adapter sync's decision (compass/serving_sync.py) on hand-made cases, and the ``serving.targets`` settings."""

from __future__ import annotations

import pytest
import yaml

from compass.errors import ConfigError
from compass.serving_sync import Confirm, Load, Refuse, TargetView, Unload, ours, parse_served, plan, served_name
from infra.settings import load_service_config

DORA = "it/v2 cannot be exported with --format peft: use_dora is true. Fix: train it with `adapters.kind: lora`"


def up(name: str, loaded=(), confirmed=None, kind: str = "vllm") -> TargetView:
    loaded = frozenset(loaded)
    return TargetView(name, kind, True, loaded, loaded if confirmed is None else frozenset(confirmed))


def down(name: str, kind: str = "vllm") -> TargetView:
    return TargetView(name, kind, False)


# (case, desired, targets, routes, unservable, unrouted_since, now, drain_s,
#  loads, confirms, refusals, switch, unloads, waiting, in_sync)
CASES = [
    ("first sync: load", {"it": "v1"}, [up("a")], {}, {}, {}, 0, 30,
     [Load("a", "it", "v1", "it-v1")], [], [], {}, [], {"it": ("a",)}, {"a": False}),
    ("loaded, not yet confirmed", {"it": "v1"}, [up("a", ["it-v1"], [])], {}, {}, {}, 0, 30,
     [], [Confirm("a", "it-v1")], [], {}, [], {"it": ("a",)}, {"a": False}),
    ("confirmed: switch", {"it": "v1"}, [up("a", ["it-v1"])], {}, {}, {}, 0, 30,
     [], [], [], {"it": "it-v1"}, [], {}, {"a": True}),
    ("nothing to do", {"it": "v1"}, [up("a", ["it-v1"]), up("b", ["it-v1"])], {"it": "it-v1"}, {}, {}, 0, 30,
     [], [], [], {}, [], {}, {"a": True, "b": True}),
    ("promotion: new name beside the routed one", {"it": "v2"}, [up("a", ["it-v1"])], {"it": "it-v1"}, {}, {}, 0, 30,
     [Load("a", "it", "v2", "it-v2")], [], [], {}, [], {"it": ("a",)}, {"a": False}),
    ("promotion confirmed: switch, the old one drains", {"it": "v2"}, [up("a", ["it-v1", "it-v2"])],
     {"it": "it-v1"}, {}, {}, 100, 30, [], [], [], {"it": "it-v2"}, [], {}, {"a": True}),
    ("still draining", {"it": "v2"}, [up("a", ["it-v1", "it-v2"])], {"it": "it-v2"}, {}, {"it-v1": 100}, 129.9, 30,
     [], [], [], {}, [], {}, {"a": True}),
    ("drained: unload", {"it": "v2"}, [up("a", ["it-v1", "it-v2"])], {"it": "it-v2"}, {}, {"it-v1": 100}, 130, 30,
     [], [], [], {}, [Unload("a", "it-v1")], {}, {"a": True}),
    ("drain 0: switch and unload in one round", {"it": "v2"}, [up("a", ["it-v1", "it-v2"])], {"it": "it-v1"}, {},
     {}, 5, 0, [], [], [], {"it": "it-v2"}, [Unload("a", "it-v1")], {}, {"a": True}),
    ("rollback after the old one was unloaded: load it again", {"it": "v1"}, [up("a", ["it-v2"])], {"it": "it-v2"},
     {}, {}, 0, 30, [Load("a", "it", "v1", "it-v1")], [], [], {}, [], {"it": ("a",)}, {"a": False}),
    ("rollback while the old one drains: switch at once", {"it": "v1"}, [up("a", ["it-v1", "it-v2"])],
     {"it": "it-v2"}, {}, {"it-v1": 100}, 110, 30, [], [], [], {"it": "it-v1"}, [], {}, {"a": True}),
    ("a target down holds the switch; the other is ready", {"it": "v2"}, [up("a", ["it-v1", "it-v2"]), down("b")],
     {"it": "it-v1"}, {}, {}, 0, 30, [], [], [], {}, [], {"it": ("b",)}, {"a": True, "b": False}),
    ("a target down does not hold the others' unloads", {"it": "v2"}, [up("a", ["it-v2", "it-v1"]), down("b")],
     {"it": "it-v2"}, {}, {"it-v1": 0}, 60, 30, [], [], [], {}, [Unload("a", "it-v1")], {}, {"a": True, "b": False}),
    ("DoRA on a vllm target: refused with the fix, no switch", {"it": "v2"},
     [up("a", ["it-v1"], kind="vllm"), up("b", ["it-v1"], kind="compass")], {"it": "it-v1"},
     {("it-v2", "vllm"): DORA, ("it-v2", "sglang"): DORA}, {}, 0, 30,
     [Load("b", "it", "v2", "it-v2")], [], [Refuse("a", "it-v2", DORA)], {}, [], {"it": ("a", "b")},
     {"a": False, "b": False}),
    ("DoRA on compass targets only: switch", {"it": "v2"}, [up("b", ["it-v1", "it-v2"], kind="compass")],
     {"it": "it-v1"}, {("it-v2", "vllm"): DORA}, {}, 0, 0, [], [], [], {"it": "it-v2"}, [Unload("b", "it-v1")], {},
     {"b": True}),
    ("two languages: one switches, one waits", {"it": "v1", "es": "v1"}, [up("a", ["it-v1", "es-v1"], ["it-v1"])],
     {}, {}, {}, 0, 30, [], [Confirm("a", "es-v1")], [], {"it": "it-v1"}, [], {"es": ("a",)}, {"a": False}),
    ("no targets: never switch", {"it": "v1"}, [], {}, {}, {}, 0, 30,
     [], [], [], {}, [], {"it": ("(no serving.targets configured)",)}, {}),
]


@pytest.mark.parametrize(("desired", "targets", "routes", "unservable", "since", "now", "drain", "loads", "confirms",
                          "refusals", "switch", "unloads", "waiting", "in_sync"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan(desired, targets, routes, unservable, since, now, drain, loads, confirms, refusals, switch, unloads,
              waiting, in_sync):
    p = plan(desired, targets, routes, unservable, since, now, drain)
    assert list(p.loads) == loads
    assert list(p.confirms) == confirms
    assert list(p.refusals) == refusals
    assert p.switch == switch
    assert list(p.unloads) == unloads
    assert p.waiting == waiting
    assert p.in_sync == in_sync
    assert p.busy == bool(loads or confirms)


def test_drain_clock_starts_when_a_name_is_first_seen_unrouted():
    p = plan({"it": "v2"}, [up("a", ["it-v1", "it-v2"])], {"it": "it-v1"}, now=100, drain_s=30)
    assert p.unrouted_since == {"it-v1": 100}
    again = plan({"it": "v2"}, [up("a", ["it-v1", "it-v2"])], {"it": "it-v2"}, unrouted_since=p.unrouted_since,
                 now=120, drain_s=30)
    assert again.unrouted_since == {"it-v1": 100} and not again.unloads
    back = plan({"it": "v1"}, [up("a", ["it-v1", "it-v2"])], {"it": "it-v2"}, unrouted_since=p.unrouted_since,
                now=125, drain_s=30)  # rolled back while draining: v1 is routed again, v2 starts draining
    assert back.switch == {"it": "it-v1"} and back.unrouted_since == {"it-v2": 125}


def test_names():
    assert served_name("it", "v20261206T224500-abc123") == "it-v20261206T224500-abc123"
    assert served_name("es", "1.2") == "es-1_2"  # compass serve and torch refuse '.' in adapter names
    assert parse_served("it-v1-x") == ("it", "v1-x") and parse_served("sql-lora") == ("sql", "lora")
    assert parse_served("it@v1") is None and parse_served("Qwen2.5-0.5B") is None
    # only names of registry versions are the sync's: someone's sql-lora (or an unknown it-x) is never unloaded
    assert ours(["it-v1", "it-x", "sql-lora", "base", "it@v1"], {"it": ["v1", "v2"], "sql": []}) == {"it-v1"}


def _load(tmp_path, serving: dict):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"serving": serving}))
    return load_service_config(path, env={})


def test_targets_settings(tmp_path):
    cfg = _load(tmp_path, {"targets": [{"name": "vllm-a", "kind": "vllm", "url": "http://10.0.0.5:8000/v1/",
                                        "token_env": "VLLM_API_KEY"},
                                       {"name": "c", "kind": "compass", "url": "https://h:1"}],
                           "export_dir": "/shared/adapters", "drain_s": 5})
    a, c = cfg.serving.targets
    assert (a.name, a.kind, a.url, a.token_env) == ("vllm-a", "vllm", "http://10.0.0.5:8000", "VLLM_API_KEY")
    assert (c.url, c.token_env, str(cfg.serving.export_dir), cfg.serving.drain_s) == ("https://h:1", None,
                                                                                      "/shared/adapters", 5)
    assert load_service_config(env={}).serving.targets == ()  # configs/default.yaml: none by default


def test_targets_settings_errors_name_the_field_value_and_fix(tmp_path):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, {"targets": [{"name": "a", "kind": "tgi", "url": "10.0.0.5:8000", "token_env": "MY KEY"}],
                         "sync_retry_base_s": 10, "sync_retry_max_s": 1})
    text = "\n".join(e.value.problems)
    assert "serving.targets.0.kind: got 'tgi'" in text and "'vllm', 'sglang' or 'compass'" in text
    assert "serving.targets.0.url: got '10.0.0.5:8000'; must be an http(s) URL" in text
    assert "serving.targets.0.token_env: got 'MY KEY'; must name an environment variable" in text
    assert "serving: sync_retry_max_s (1.0) is below sync_retry_base_s (10.0); raise sync_retry_max_s" in text
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, {"targets": [{"name": "b", "kind": "vllm", "url": "http://x:1"},
                                     {"name": "b", "kind": "sglang", "url": "http://y:1"}]})
    assert e.value.problems == ["serving: targets[0] and targets[1] are both named 'b'; give each target its own "
                                "name (the sync state is kept per name)"]
