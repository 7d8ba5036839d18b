#!/usr/bin/env bash
# For the day a CUDA GPU is at hand: the `gpu` tests (tiny Qwen2-MoE and XVERSE in bf16 with device_map="auto",
# sdpa and flash-attention 2 when installed, cached == uncached, the demo's known answers on cuda; the same models
# in per-expert nf4) and short benchmarks: decode per experts kernel, and nf4 vs bf16 speed and expert bytes. One summary line per check; exits 0 with "skipped" where no GPU is visible.
# Run after `bash scripts/test.sh` has installed the test requirements (or `pip install -r requirements-dev.txt`).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  echo "gpu_check: FAILED: torch does not import with $PYTHON (run bash scripts/test.sh first)"
  exit 1
fi
# The doctor's lines first: on a real GPU box they are the probe's real facts (driver, CUDA, flash-attn, bitsandbytes).
"$PYTHON" -m doctor 2>&1 | sed 's/^/gpu_check: doctor: /'
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: skipped: no CUDA GPU visible to torch (nothing to check on this machine)"
  exit 0
fi
"$PYTHON" -c "import torch; print('gpu_check:', torch.cuda.device_count(), 'x', torch.cuda.get_device_name(0), '| torch', torch.__version__)"

status=0
# -rA: one line per test (PASSED / FAILED / SKIPPED with its reason) in the closing summary
timeout 420 "$PYTHON" -m pytest -m gpu -q -rA -p no:cacheprovider tests/engine > /tmp/gpu_check_tests.log 2>&1 || status=1
grep -E "^(PASSED|FAILED|ERROR|SKIPPED)|passed|failed" /tmp/gpu_check_tests.log | sed 's/^/gpu_check: /'
timeout 120 "$PYTHON" bench/bench_decode.py --tokens 200 --runs 3 2>&1 | grep -E "^decode|Error" | sed 's/^/gpu_check: /' \
  || status=1
# 4-bit: the tiny models and the demo in per-expert nf4 on cuda are in the gpu tests above; here, speed and size.
timeout 180 "$PYTHON" bench/bench_quantized.py --device cuda --tokens 200 --runs 3 2>&1 \
  | grep -E "^(200-token|nf4 /|routed)|Error" | sed 's/^/gpu_check: 4-bit: /' || status=1
[ "$status" -eq 0 ] && echo "gpu_check: all checks passed" || echo "gpu_check: FAILED (full test log: /tmp/gpu_check_tests.log)"
exit "$status"
