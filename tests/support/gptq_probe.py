"""Load a GPTQ checkpoint with the app's loader and report, for tests that run it in the GPTQ venv (.venv-gptq).

    python -m tests.support.gptq_probe FOLDER OUT.pt     # prints one JSON line: {"kernels": ...} or {"refused": ...}

OUT.pt receives the logits of PROMPT ([1, tokens, vocab], float32).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PROMPT = [[5, 17, 42, 99, 123, 7, 250, 31, 64, 88, 140, 9, 200, 77, 13, 56]]


def main() -> None:
    import torch

    from common.errors import ModelLoadError
    from model_loader.loader import load_checkpoint
    from model_loader.placement import Placement
    from model_loader.registry import ModelSpec

    folder, out = Path(sys.argv[1]), Path(sys.argv[2])
    spec = ModelSpec(id="tiny-gptq", name="tiny GPTQ", source="local", path=folder, kind="chat")
    try:
        loaded = load_checkpoint(spec, folder, Placement(device="cpu", dtype="float16"), tokenizer=None)
    except ModelLoadError as exc:
        print(json.dumps({"refused": str(exc)}))
        return
    with torch.no_grad():
        torch.save(loaded.model(torch.tensor(PROMPT)).logits.float(), out)
    print(json.dumps({"kernels": loaded.kernels, "per_expert": loaded.per_expert}))


if __name__ == "__main__":
    main()
