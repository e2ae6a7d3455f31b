"""Inference precisions of the recogniser, and whether the hardware runs bfloat16 natively (torch is imported
on first use, so command-line parsers can take :data:`PRECISIONS` cheaply)."""

#: ``FaceEmbedder(precision=...)`` / ``--precision`` values.
PRECISIONS = ("float32", "bfloat16")


def native_bf16(device) -> bool:
    """Whether bfloat16 convolutions run natively on ``device``: CUDA with bf16 support, or a CPU with
    AVX512_BF16 or AMX. Elsewhere oneDNN falls back to a reference convolution about 20 times slower
    than float32 (measured, docs/benchmarks.md). ``device``: a ``torch.device``."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return True  # other accelerators: their own business
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)
