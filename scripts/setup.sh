#!/usr/bin/env bash
# Set up lipcore on a fresh machine: a virtual environment in .venv with lipcore, every plugin
# distribution of this repository and (with --dev) the test tools, plus Debian's Chromium for
# the browser tests. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
dev=0
[[ "${1:-}" == "--dev" ]] && dev=1

if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
extras=""
[[ $dev == 1 ]] && extras="[dev]"
args=(-e ".${extras}")
for p in plugins/*/; do
  [[ -f "$p/pyproject.toml" ]] && args+=(-e "$p")
done
.venv/bin/python -m pip install -q "${args[@]}"

# MediaPipe's face landmarker, into lipcore's cache: from a local copy when there is one (an
# offline machine; checked against the pinned SHA-256 like a download), else downloaded.
model_src=${LIPCORE_FACE_MODEL_SOURCE:-../shared/models/face_landmarker.task}
if [[ -f "$model_src" ]]; then
  .venv/bin/lipcore models fetch --from "$model_src" >/dev/null
else
  .venv/bin/lipcore models fetch >/dev/null \
    || echo "warning: the face model could not be fetched now; lipcore retries on first use" >&2
fi

# Debian's chromium (the browser tests), node (the web client's logic tests), haproxy and
# redis-server (the cluster tests run real ones on loopback, tests/cluster) and flite.
missing=()
if [[ $dev == 1 ]]; then
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  # flite: a second synthesizer (other acoustics, segment times) for bench_audio_visemes.py
  command -v flite >/dev/null 2>&1 || missing+=(flite)
  [[ -x /usr/sbin/haproxy ]] || command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
fi
if (( ${#missing[@]} )); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} from Debian for the tests and benchmarks" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "warning: ${missing[*]} missing and cannot be installed here; their tests will fail" >&2
  fi
fi
