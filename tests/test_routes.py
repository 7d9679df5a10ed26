"""infra/routes.py on a real Redis: the gateway's routing table, switched atomically by the adapter sync."""

from __future__ import annotations

import pytest

from infra.routes import Routes, RouteTableError, RoutingTable


def test_switches_bump_the_version_and_readers_see_whole_tables(redis):
    table = RoutingTable(redis, "t")
    assert table.read() == Routes(0, {})
    assert table.switch("it", "it@v1") == 1
    assert table.switch_many({"sw": "sw@v2", "it": "it@v2"}) == 2
    assert table.read() == Routes(2, {"it": "it@v2", "sw": "sw@v2"})
    assert table.switch("it", None) == 3  # back to the base model
    routes = table.read()
    assert routes == Routes(3, {"sw": "sw@v2"})
    assert (routes.model_for("sw", "base"), routes.model_for("it", "base"), routes.model_for(None, "base")) == (
        "sw@v2", "base", "base")


@pytest.mark.parametrize("lang,name,match", [
    ("IT", "it@v1", "language must be a compass code"),
    ("_version", "x", "language must be a compass code"),
    ("it", "", "model name for 'it' must be"),
    ("it", "bad name", "model name for 'it' must be"),
])
def test_bad_entries_are_refused_before_anything_is_written(redis, lang, name, match):
    table = RoutingTable(redis, "t")
    with pytest.raises(RouteTableError, match=match):
        table.switch_many({"sw": "sw@v1", lang: name})
    assert table.read() == Routes(0, {})
