"""Real model servers on loopback for the remote tier: `transformers serve` and vLLM's CPU build, on the demo model.

`transformers serve` runs from this environment (the `serving` extra). vLLM runs from its own venv (it pins an
older transformers): `.venv-vllm` at the repository root, or the folder in MOE_CHAT_VLLM_VENV; `scripts/test.sh`
makes it. vLLM's CPU attention has no head_dim 24, so it serves a widened copy of the demo that computes the
same function (tests/support/widen_demo.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.helpers import DEMO_DIR, ROOT
from tests.support.server import free_port

VLLM_VENV = Path(os.environ.get("MOE_CHAT_VLLM_VENV", ROOT / ".venv-vllm"))
VLLM_PYTHON = VLLM_VENV / "bin" / "python"
VLLM_REQUIRED = os.environ.get("MOE_CHAT_REQUIRE_VLLM") == "1"  # read at import: the tests' environment drops it
VLLM_KEY = "test-key-for-vllm"
SERVED_NAME = "demo-moe"


class ModelServer:
    """One server process: started, killed (as a crash would) and started again on the same port."""

    name = "server"
    ready_path = "/v1/models"
    ready_timeout_s = 120.0

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_path = log_dir / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model(self) -> str:
        return SERVED_NAME

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")

    def headers(self) -> dict[str, str]:
        return {}

    def start(self) -> ModelServer:
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(self.command(), env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            try:
                request = urllib.request.Request(self.base_url.removesuffix("/v1") + self.ready_path,
                                                 headers=self.headers())
                if urllib.request.urlopen(request, timeout=2).status == 200:
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start:\n{self.log_path.read_text()[-4000:]}")
            time.sleep(0.5)

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crash or an OOM kill would end it."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def row(self, row_id: str, **fields: object) -> str:
        """A registry row (TOML) for the model this server serves."""
        lines = [f'[[models]]\nid = "{row_id}"\nname = "{self.name} {row_id}"\nsource = "openai"',
                 f'base_url = "{self.base_url}"\nmodel = "{self.model}"']
        generation = fields.pop("generation", None)
        lines += [f"{key} = {json.dumps(value)}" for key, value in fields.items()]  # JSON scalars are TOML ones
        if generation:
            lines.append("[models.generation]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in generation.items()]
        return "\n".join(lines) + "\n"


class TransformersServe(ModelServer):
    name = "transformers-serve"

    @property
    def model(self) -> str:
        return str(DEMO_DIR)  # `transformers serve` names a local model by its absolute path

    def command(self) -> list[str]:
        cli = Path(sys.executable).with_name("transformers")
        return [str(cli), "serve", str(DEMO_DIR), "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu"]


class VllmServer(ModelServer):
    name = "vllm"
    ready_path = "/health"
    ready_timeout_s = 300.0

    def __init__(self, log_dir: Path, model_dir: Path, cores: str | None = None) -> None:
        super().__init__(log_dir)
        self.model_dir = model_dir
        self.cores = cores  # CPU cores its compute threads are bound to, e.g. "0" (default: vLLM's choice, all)

    def command(self) -> list[str]:
        return [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_dir),
                "--served-model-name", SERVED_NAME, "--dtype", "float32", "--max-model-len", "2048",
                "--enforce-eager", "--host", "127.0.0.1", "--port", str(self.port), "--api-key", VLLM_KEY]

    def env(self) -> dict[str, str]:
        env = dict(super().env(), VLLM_CPU_KVCACHE_SPACE="1")
        if self.cores is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = self.cores
        return env

    def running_requests(self) -> float:
        """vLLM's own count of requests it is generating for (its /metrics gauge)."""
        text = urllib.request.urlopen(self.base_url.removesuffix("/v1") + "/metrics", timeout=5).read().decode()
        match = re.search(r'^vllm:num_requests_running\{[^}]*model_name="demo-moe"[^}]*\} (\S+)$', text, re.M)
        assert match, "vLLM's /metrics has no vllm:num_requests_running line"
        return float(match.group(1))


def vllm_available() -> bool:
    return VLLM_PYTHON.is_file()
