"""bitsandbytes' 4-bit CPU kernels, mended where AVX512 ones are wrong or fail: rows that are not whole blocks.

bitsandbytes 0.50.2 quantizes a weight in blocks of 64 values over the flattened tensor, but its AVX512 CPU
dequantize assumes every row holds whole blocks: a 96-wide layer comes back with 2.4x the quantization error (demo nf4
logits: mean error 0.51 instead of 0.16). Such shapes take the library's portable implementation instead. Only CPU
loads in 4-bit (tests, and a CPU user who asks for it) meet it; GPU kernels are untouched.
"""

from __future__ import annotations

from typing import Any

_mended = False


def mend_cpu_dequantize() -> None:
    """Route `dequantize_4bit` on CPU through the portable code where the AVX512 kernel would be wrong (idempotent)."""
    global _mended
    if _mended:
        return
    import torch
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
    from bitsandbytes.backends.utils import _get_4bit_code

    native = torch.library.get_kernel("bitsandbytes::dequantize_4bit", "CPU")

    @torch.library.register_kernel("bitsandbytes::dequantize_4bit", "cpu")
    def _dequantize(A: torch.Tensor, absmax: torch.Tensor, blocksize: int, quant_type: str, shape: Any,
                    dtype: torch.dtype) -> torch.Tensor:
        if shape[-1] % blocksize == 0:
            return native(A, absmax, blocksize, quant_type, shape, dtype)
        packed = A.view(torch.uint8) if A.dtype != torch.uint8 else A
        return _dequantize_4bit_compute(packed.reshape(-1), absmax, _get_4bit_code(quant_type, A.device), blocksize,
                                        shape, dtype)

    _mended = True


def keep_tileable_cpu_kernels(model: Any) -> None:
    """On CPUs with AVX512-BF16, bitsandbytes repacks each 4-bit weight for a faster kernel at its first forward, and
    fails on shapes that kernel cannot tile (out features not a multiple of 32, in features not whole blocks); those
    layers keep the portable kernel."""
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is None or not getattr(module, "support_avx512bf16_for_cpu", False):
            continue
        out_features, in_features = state.shape
        if out_features % 32 or in_features % state.blocksize:
            module.support_avx512bf16_for_cpu = False
