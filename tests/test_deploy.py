"""The deploy files parse, name only real `compass` subcommands/options, real env vars and matching ports."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from compass.languages import load_languages
from compass.paths import REPO_ROOT
from daemon.api.app import TOKEN_ENV
from daemon.cli import app
from infra.settings import SECRET_ENV, load_service_config

DEPLOY = REPO_ROOT / "deploy"
K8S, COMPOSE, SYSTEMD = DEPLOY / "k8s", DEPLOY / "compose", DEPLOY / "systemd"
BINARY = "/opt/compass/.venv/bin/compass"
UNITS = ("compass-consume@.service", "compass-daemon.service", "compass-worker.service", "compass-serve.service")
ROLES = {"consume", "daemon", "worker", "serve"}


def _yaml_files() -> list[Path]:
    return sorted(K8S.glob("*.yaml")) + [COMPOSE / "docker-compose.yml"]


def _k8s() -> list[dict[str, Any]]:
    return [d for f in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def _kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in _k8s() if d["kind"] == kind]


def _named(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in _kind(kind) if d["metadata"]["name"] == name]
    return doc


def _container(deploy_name: str) -> dict[str, Any]:
    return _named("Deployment", deploy_name)["spec"]["template"]["spec"]["containers"][0]


def _unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # systemd keys are case-sensitive
    cp.read_string((SYSTEMD / name).read_text())
    return cp


def _entrypoint() -> list[str]:
    m = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert m, "deploy/Dockerfile needs an exec-form ENTRYPOINT"
    return yaml.safe_load(m.group(1))


def command_lines() -> list[tuple[str, list[str]]]:
    """(where, argv) of every compass invocation in k8s, compose and systemd."""
    out = []
    for d in _kind("Deployment"):
        for c in d["spec"]["template"]["spec"]["containers"]:
            out.append((f"k8s {d['metadata']['name']}", list(c.get("command", [])) + list(c.get("args", []))))
    compose = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    for name, svc in compose["services"].items():
        out.append((f"compose {name}", _entrypoint() + list(svc["command"])))
    for unit in UNITS:
        out.append((f"systemd {unit}", shlex.split(_unit(unit)["Service"]["ExecStart"])))
    return out


def test_every_yaml_parses() -> None:
    for f in _yaml_files():
        docs = [d for d in yaml.safe_load_all(f.read_text()) if d is not None]
        assert docs, f
    kinds = sorted(d["kind"] for d in _k8s())
    assert kinds == sorted(["ConfigMap", "ConfigMap", "Secret", "PersistentVolumeClaim", "PersistentVolumeClaim",
                            "Deployment", "Deployment", "Deployment", "Deployment", "Service", "Service",
                            "Kustomization"])


@pytest.mark.parametrize("where,argv", command_lines(), ids=lambda v: v if isinstance(v, str) else "")
def test_commands_exist_with_their_options(where: str, argv: list[str]) -> None:
    assert argv[0] == BINARY, f"{where}: run {BINARY}, got {argv[0]}"
    group = typer.main.get_command(app)
    assert hasattr(group, "commands"), group
    sub = argv[1]
    assert sub in group.commands, f"{where}: `compass {sub}` does not exist (have: {sorted(group.commands)})"
    cmd = group.commands[sub]
    opts = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    used = [a.split("=", 1)[0] for a in argv[2:] if a.startswith("-")]
    unknown = sorted(set(used) - opts)
    assert not unknown, f"{where}: `compass {sub}` has no option(s) {unknown} (has: {sorted(opts)})"
    assert "--config" in used and "--languages" in used


def test_all_four_roles_deployed_everywhere() -> None:
    by_kind: dict[str, set[str]] = {}
    for where, argv in command_lines():
        by_kind.setdefault(where.split()[0], set()).add(argv[1])
    assert by_kind == {"k8s": ROLES, "compose": ROLES, "systemd": ROLES}


def _configmap_configs(tmp_path: Path) -> tuple[Path, Path]:
    data = _named("ConfigMap", "compass-config")["data"]
    (tmp_path / "default.yaml").write_text(data["default.yaml"])
    (tmp_path / "languages.yaml").write_text(data["languages.yaml"])
    return tmp_path / "default.yaml", tmp_path / "languages.yaml"


def test_configmap_configs_validate(tmp_path: Path) -> None:
    default, languages = _configmap_configs(tmp_path)
    env = {k: v for k, v in _named("ConfigMap", "compass-env")["data"].items() if k.startswith("COMPASS_")}
    cfg = load_service_config(default, env=env)
    assert cfg.kafka.bootstrap_servers == ("kafka-0.kafka.kafka.svc:9092", "kafka-1.kafka.kafka.svc:9092")
    assert (cfg.redis.host, cfg.redis.port, cfg.redis.db) == ("redis.redis.svc", 6379, 0)
    assert str(cfg.state_dir) == "/var/lib/compass" and cfg.http.host == "0.0.0.0"
    assert load_service_config(default, env={}).adapters.registry == "/var/lib/compass/adapters"
    langs = load_languages(languages)
    assert "sw" in langs.enabled and langs.get("sw").theta == 0.12


def _deploy_texts() -> dict[str, str]:
    files = [*K8S.glob("*.yaml"), *COMPOSE.iterdir(), *SYSTEMD.iterdir(), DEPLOY / "Dockerfile", DEPLOY / "README.md"]
    return {str(f.relative_to(REPO_ROOT)): f.read_text() for f in files if f.is_file()}


def test_only_env_vars_compass_reads() -> None:
    source = (REPO_ROOT / "infra" / "settings" / "service.py").read_text()  # the env overlay
    read = set(re.findall(r'env\.get\("(COMPASS_[A-Z_]+)"\)', source)) | set(SECRET_ENV.values()) | {TOKEN_ENV}
    assert {"COMPASS_KAFKA_BOOTSTRAP", "COMPASS_REDIS_URL", "COMPASS_STATE_DIR"} <= read
    for name, text in _deploy_texts().items():
        unknown = sorted(set(re.findall(r"COMPASS_[A-Z_]*[A-Z]", text)) - read)
        assert not unknown, f"{name} references {unknown}, which compass does not read"
    secret_keys = set(_named("Secret", "compass-secrets")["stringData"])
    assert secret_keys == set(SECRET_ENV.values()) | {TOKEN_ENV}


def test_secret_holds_placeholders_only() -> None:
    for s in _kind("Secret"):
        assert "data" not in s, "use stringData placeholders, never base64 values"
        assert all(v == "REPLACE_ME" for v in s["stringData"].values()), s["stringData"]
    for example in (SYSTEMD / "compass.env.example", COMPOSE / "env.example"):
        for line in example.read_text().splitlines():
            key, _, value = line.partition("=")
            if key in SECRET_ENV.values() or key == TOKEN_ENV:
                assert value == "", f"{example.name}: {key} must be empty in the example"


def _port(container: dict[str, Any], ref: int | str) -> int:
    if isinstance(ref, int):
        return ref
    (p,) = [p["containerPort"] for p in container["ports"] if p["name"] == ref]
    return p


def test_ports_match_config(tmp_path: Path) -> None:
    cfg = load_service_config(_configmap_configs(tmp_path)[0], env={})
    daemon, serve = _container("compass-daemon"), _container("compass-serve")
    assert _named("Deployment", "compass-daemon")["spec"]["replicas"] == 2
    assert daemon["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert daemon["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert serve["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert serve["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe in daemon:
            assert _port(daemon, daemon[probe]["httpGet"]["port"]) == cfg.http.port == 8470
        assert _port(serve, serve[probe]["httpGet"]["port"]) == cfg.serving.port == 8471
    for svc, c, want in (("compass-daemon", daemon, cfg.http.port), ("compass-serve", serve, cfg.serving.port)):
        (port,) = _named("Service", svc)["spec"]["ports"]
        assert port["port"] == want and _port(c, port["targetPort"]) == want
    compose = (COMPOSE / "docker-compose.yml").read_text()
    default = load_service_config(REPO_ROOT / "configs" / "default.yaml", env={})  # what compose mounts
    assert f"127.0.0.1:{default.http.port}/readyz" in compose and f"127.0.0.1:{default.serving.port}/readyz" in compose


def test_worker_on_gpu_with_graceful_stop() -> None:
    worker = _named("Deployment", "compass-worker")["spec"]["template"]["spec"]
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["nodeSelector"] and worker["tolerations"]
    assert worker["terminationGracePeriodSeconds"] >= 300
    for d in _kind("Deployment"):
        assert d["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]


def test_systemd_units() -> None:
    for name in UNITS:
        unit = _unit(name)
        assert {"Unit", "Service", "Install"} <= set(unit.sections()), name
        svc = unit["Service"]
        assert svc["Restart"] == "on-failure" and svc["User"] == "compass" and svc["KillSignal"] == "SIGTERM"
        assert svc["EnvironmentFile"] == "/etc/compass/compass.env"
        assert shlex.split(svc["ExecStart"])[0] == BINARY
        assert "--config /etc/compass/default.yaml --languages /etc/compass/languages.yaml" in svc["ExecStart"]
    assert int(_unit("compass-worker.service")["Service"]["TimeoutStopSec"]) >= 300
