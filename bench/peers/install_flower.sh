#!/usr/bin/env bash
# Flower for the side-by-side benchmark only (bench/peers): its own virtualenv under the
# ignored build directory, so nothing of Flower or its Ray enters the product's venv or
# its dependencies. flwr 1.42 does not install here; 1.41 with its simulation extra does.
set -euo pipefail
py=${1:-python3.11}
venv=${2:-build/peers-venv}
command -v "$py" >/dev/null || py=python3
"$py" -m venv "$venv"
pip="$venv/bin/pip"
"$pip" install -q --upgrade pip
# the CPU wheel of the product's torch, first, as scripts/install.sh does (keeps pip from
# resolving a CUDA build); Flower's clients run the zoo's PyTorch module with it
"$pip" install -q "torch==2.13.0"
"$pip" install -q "flwr[simulation]==1.41.0"
