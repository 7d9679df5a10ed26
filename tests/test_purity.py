"""compass/ is the method only: every module of it imports with the I/O layer and the services blocked.

Each check runs in a fresh interpreter (a subprocess) so that modules the test session already imported do not
hide an import; a ``sys.meta_path`` finder there refuses the blocked top-level packages. A negative control
proves the blocker bites. Imports that run later (inside a function) or only for type checkers are found by
reading the source instead.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BLOCKED = ("httpx", "fastapi", "starlette", "uvicorn", "kafka", "redis", "consumers", "daemon", "infra", "deploy")

# Installs the blocker, then imports the modules named in argv[1] (a JSON list, or "compass" for every module
# under compass/) and prints {"ok": [...], "failed": {module: error}} as JSON.
_PROBE = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys

    BLOCKED = set(sys.argv[2].split(","))

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked by test_purity: {name}")
            return None

    sys.meta_path.insert(0, Blocker())
    wanted = sys.argv[1]
    if wanted == "compass":
        import compass
        names = ["compass"] + [m.name for m in pkgutil.walk_packages(compass.__path__, "compass.",
                                                                      onerror=lambda name: None)]
    else:
        names = json.loads(wanted)
    ok, failed = [], {}
    for name in names:
        try:
            importlib.import_module(name)
            ok.append(name)
        except BaseException as e:  # noqa: BLE001 - report every failure, not the first
            failed[name] = f"{type(e).__name__}: {e}"
    print(json.dumps({"ok": ok, "failed": failed}))
    """
)


def _probe(modules: str | list[str], blocked: tuple[str, ...] = BLOCKED) -> dict:
    arg = modules if isinstance(modules, str) else json.dumps(modules)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, arg, ",".join(blocked)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(900)
def test_every_compass_module_imports_without_the_io_layer():
    result = _probe("compass")
    assert result["failed"] == {}, "compass modules that need the I/O layer or a service:\n" + "\n".join(
        f"  {name}: {err}" for name, err in sorted(result["failed"].items())
    )
    # the walk really found the package's modules, not only its root
    assert {"compass.validation", "compass.languages", "compass.langid", "compass.embed.config"} <= set(
        result["ok"]
    )
    assert len(result["ok"]) > 50


@pytest.mark.parametrize(
    "module, blocked_by",
    [
        ("infra.clients", "infra"),
        ("infra.settings", "infra"),
        ("httpx", "httpx"),
        ("redis", "redis"),
        ("daemon.cli", "daemon"),
    ],
)
def test_the_blocker_refuses_the_io_layer(module, blocked_by):
    # negative control: were the finder not installed, these would import (they do in this test session)
    result = _probe([module])
    assert result["ok"] == []
    assert f"blocked by test_purity: {blocked_by}" in result["failed"][module]


def test_without_the_blocker_the_same_modules_import():
    result = _probe(["infra.settings", "httpx"], blocked=("nothing-blocked",))
    assert result == {"ok": ["infra.settings", "httpx"], "failed": {}}


def _blocked_imports(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.split(".")[0] in BLOCKED]
    return found


@pytest.mark.parametrize(
    "source, expected",
    [
        ("import numpy\nfrom compass import langcodes\n", []),
        ("def f():\n    import httpx\n", [(2, "httpx")]),
        ("if TYPE_CHECKING:\n    from infra.settings import ServiceConfig\n", [(2, "infra.settings")]),
        ("import redis.cluster, json\nfrom . import daemon\n", [(1, "redis.cluster")]),  # relative: compass's own
    ],
)
def test_blocked_imports_reader(source, expected):
    assert _blocked_imports(ast.parse(source)) == expected


def test_no_compass_source_names_the_io_layer_even_lazily_or_for_types():
    found = [
        f"{path.relative_to(REPO)}:{line}: {name}"
        for path in sorted((REPO / "compass").rglob("*.py"))
        for line, name in _blocked_imports(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert found == []
