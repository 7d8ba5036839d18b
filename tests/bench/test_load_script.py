"""The load test script stays runnable: a small run against a real server completes and reports its numbers."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow


def test_a_small_load_run_completes_every_answer_and_reports_its_numbers():
    run = subprocess.run([sys.executable, "bench/load_test.py", "--users", "3", "--messages", "2", "--timeout", "60"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "6/6 answers complete and correct, 0 failed" in run.stdout
    assert re.search(r"latency \(send to full answer\): p50 [\d.]+ s", run.stdout)
    assert re.search(r"queue: \d+/6 requests waited in line", run.stdout)
    assert re.search(r"server memory: \d+ MiB before, \d+ MiB after", run.stdout)
