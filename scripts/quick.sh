#!/usr/bin/env bash
# The quick tier, what to run while working: every test that needs no browser, no real model server, no extra venv
# and no GPU, on both cores. The full tier is scripts/test.sh (what CI runs). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m pytest -q -n "${MOE_CHAT_TEST_JOBS:-2}" \
  -m "not slow and not browser and not remote and not gptq and not gpu" "$@"
