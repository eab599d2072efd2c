#!/usr/bin/env bash
# Creates bench/.venv-litellm: a separate virtualenv with the LiteLLM proxy (and aiohttp, which it
# depends on and which bench/forwarder.py uses), so neither touches Seedgate's own environment.
# bench/run.py --with-litellm writes the proxy's config (pointing at the fake upstream) per run.
# Usage: bench/litellm/setup.sh [PYTHON]   (default: python3.11, else python3)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$here/.venv-litellm"
python="${1:-$(command -v python3.11 || command -v python3)}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet 'litellm[proxy]' aiohttp uvloop
"$venv/bin/litellm" --version >/dev/null 2>&1 || "$venv/bin/python" -c 'import litellm.proxy.proxy_server'
echo "LiteLLM proxy installed in $venv ($("$venv/bin/python" -m pip show litellm | sed -n 's/^Version: //p'))"
