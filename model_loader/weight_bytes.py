"""What a loaded model's weights occupy, bitsandbytes' quantization states included (measured, not planned)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def _tensors(module: Any) -> Iterator[Any]:
    """Every tensor `module` keeps resident: parameters, buffers, and bitsandbytes' per-weight states."""
    for m in module.modules():
        for p in m.parameters(recurse=False):
            yield p
            state = getattr(p, "quant_state", None)  # 4-bit: block scales, the nf4 code, the nested scales' state
            if state is not None:
                yield from (state.absmax, state.code)
                if state.nested:
                    yield from (state.offset, state.state2.absmax, state.state2.code)
        # 8-bit: one float32 scale per row, on the weight until the first forward moves it to the layer's state
        for holder in (getattr(m, "weight", None), getattr(m, "state", None)):
            scales = getattr(holder, "SCB", None)
            if scales is not None:
                yield scales
        yield from m.buffers(recurse=False)


def resident_bytes(module: Any) -> int:
    """Bytes of every tensor under `module`, each storage counted once."""
    seen: set[tuple[str, int]] = set()
    total = 0
    for t in _tensors(module):
        key = (str(t.device), t.data_ptr())
        if t.device.type != "meta" and key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def expert_bytes(model: Any) -> int:
    """Bytes of the routed experts of every MoE layer (fused tensors or per-expert Linears alike)."""
    return sum(resident_bytes(m) for name, m in model.named_modules() if name.endswith(".experts"))
