"""After `from_pretrained`: refuse a load whose weights did not all arrive, instead of chatting with random ones.

transformers only warns when a checkpoint's tensors do not match the model's (a per-expert GPTQ checkpoint in the
fused layout, a shard with an expert missing): the model's missing weights keep their random initialisation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from common.errors import ModelLoadError

# Tensors older checkpoints carry that v5 models compute instead (rotary tables): harmless when unexpected.
IGNORED_UNEXPECTED = (re.compile(r"(^|\.)rotary_emb\.inv_freq$"), re.compile(r"(^|\.)attn\.(masked_)?bias$"))
SHOWN = 6  # names listed in the error; the count says how many more
_EXPERT_INDEX = re.compile(r"\.experts\.\d+\.")


def _short(names: list[str]) -> str:
    head = ", ".join(names[:SHOWN])
    return head + (f" and {len(names) - SHOWN:,} more" if len(names) > SHOWN else "")


def check_loaded_keys(info: Mapping[str, Iterable[Any]], folder: Path, name: str, tied: Iterable[str] = (),
                      harmless: Iterable[str] = ()) -> None:
    """Raise `ModelLoadError` naming the weights that stayed random (missing), were left unused (unexpected) or
    had the wrong shape (mismatched); `info` is from_pretrained's loading info, `tied` the model's tied names,
    `harmless` checkpoint tensors known to be safe to leave unused."""
    tied_names, skipped = set(tied), set(harmless)
    missing = sorted(k for k in info.get("missing_keys", ()) if k not in tied_names)
    unexpected = sorted(k for k in info.get("unexpected_keys", ())
                        if k not in skipped and not any(p.search(k) for p in IGNORED_UNEXPECTED))
    mismatched = sorted(str(m[0] if isinstance(m, tuple) else m) for m in info.get("mismatched_keys", ()))
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing):,} weight(s) of the model are not in the checkpoint ({_short(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected):,} tensor(s) of the checkpoint fit no weight of the model "
                     f"({_short(unexpected)})")
    if mismatched:
        parts.append(f"{len(mismatched):,} weight(s) have another shape in the checkpoint ({_short(mismatched)})")
    quantized = [k for k in unexpected if k.endswith((".qweight", ".qzeros", ".scales", ".g_idx"))]
    if quantized:
        advice = ("The checkpoint holds GPTQ-quantized tensors that this load does not read: load the original "
                  "(unquantized) checkpoint, with 4-bit in the load options if memory is short.")
    elif any(_EXPERT_INDEX.search(k) for k in unexpected):
        advice = ("The checkpoint stores one tensor per expert and this model's experts are fused: its architecture "
                  "needs a conversion the installed transformers does not register for it.")
    else:
        advice = ("The files are incomplete or belong to another model or revision: delete the folder and press "
                  "Load to fetch it again, or point the row at the right checkpoint.")
    harm = "come from random weights" if missing or mismatched else "ignore part of the checkpoint"
    raise ModelLoadError(f"{name} did not load from {folder}: {'; '.join(parts)}. Answers would {harm}, so the load "
                         f"was stopped. {advice}")
