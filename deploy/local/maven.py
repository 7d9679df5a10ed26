"""Resolve a dependency-holder pom into a Java classpath of jars in the local Maven repository.

``mvn dependency:build-classpath`` uses the jars where Maven stored them, so nothing is copied. Maven
itself takes several seconds even when everything is cached, so the classpath is remembered next to
the repository, keyed by the pom's content, and reused while every jar on it still exists.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from deploy.local import process
from infra.errors import StackError


def cached_classpath(pom: Path, repo: Path) -> str | None:
    """The remembered classpath for ``pom`` in ``repo`` if all its jars are still there."""
    cache = _cache_file(pom, repo)
    try:
        classpath = cache.read_text().strip()
    except FileNotFoundError:
        return None
    jars = classpath.split(os.pathsep)
    return classpath if jars and all(Path(j).is_file() for j in jars) else None


def resolve_classpath(pom: Path, repo: Path, log: Path) -> str:
    """Run Maven to download (first time) and list the jars of ``pom``; output goes to ``log``."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            "maven resolution",
            "`mvn` is not on PATH; install Maven (apt-get install -y maven, or run scripts/setup.sh)",
        )
    repo.mkdir(parents=True, exist_ok=True)
    cache = _cache_file(pom, repo)
    tmp = cache.with_suffix(".tmp")
    argv = [
        mvn, "-B", "-q", "-Dstyle.color=never", f"-Dmaven.repo.local={repo}", "-f", str(pom),
        "dependency:build-classpath", f"-Dmdep.outputFile={tmp}",
    ]  # fmt: skip
    code = process.run_logged(argv, log)
    if code != 0 or not tmp.is_file():
        raise StackError(
            "maven resolution",
            f"mvn exited with code {code} while resolving {pom} into {repo}; check access to Maven "
            f"Central (or a mirror in ~/.m2/settings.xml) or set stack.maven_repo. Full log: {log}",
            process.log_tail(log),
        )
    tmp.replace(cache)
    return cache.read_text().strip()


def _cache_file(pom: Path, repo: Path) -> Path:
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    return repo / f".compass-classpath-{pom.parent.name}-{digest}.txt"
