"""Compute accounting: FLOPs (analytic and XLA), peak FLOP/s per device kind, MFU.

Convention everywhere: FLOP = 2 x multiply-accumulate; training FLOPs are
forward + backward, counted analytically as 3 x forward.
"""

from __future__ import annotations

import jax

TRAIN_FLOPS_PER_FORWARD = 3  # backward ~= 2 x forward

# Dense bf16 peak FLOP/s per device as JAX enumerates devices (a GPU, or a TPU
# chip). Vendor data sheets; (substring of device_kind, peak), first match wins.
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100", 989.4e12),  # SXM / HBM3
    ("H200", 989.4e12),
    ("GH200", 989.4e12),
    ("A100", 312e12),
    ("L4", 121e12),
    ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12),  # v5e
    ("TPU v5e", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),
    ("TPU v6", 918e12),  # Trillium / v6e
)


def train_flops_per_example(spec, image_size: int, num_classes: int) -> int:
    """Analytic training FLOPs of one example: the family's exact count, else 3 x forward."""
    if spec.train_flops is not None:
        return spec.train_flops(image_size, num_classes)
    return TRAIN_FLOPS_PER_FORWARD * spec.forward_flops(image_size, num_classes)


def device_info() -> dict:
    devices = jax.devices()
    return dict(
        device_kind=devices[0].device_kind,
        device_count=len(devices),
        platform=devices[0].platform,
    )


def peak_flops(device_kind: str) -> float | None:
    """Per-device dense bf16 peak, or None when unknown (e.g. a CPU)."""
    for key, value in PEAK_FLOPS:
        if key.lower() in device_kind.lower():
            return value
    return None


def xla_flops(compiled) -> float | None:
    """FLOPs of one call of a compiled function by XLA's cost analysis (best effort).

    XLA counts a loop body (e.g. ``lax.scan``) once, whatever its trip count;
    callers that scan over layers must correct for it. On GPUs it does not
    count library calls (cuBLAS matmuls, cuDNN convs and attention): on an
    H100 it gave 0.3% to 100% of the analytic count depending on how much of a
    model went to libraries, so there the answer is None.
    """
    if jax.default_backend() in ("gpu", "cuda", "rocm"):
        return None
    try:
        cost = compiled.cost_analysis()
    except Exception:  # not every backend implements it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost or cost["flops"] < 0:
        return None
    return float(cost["flops"])


def mfu(flops_per_second: float, device_kind: str, device_count: int) -> float | None:
    peak = peak_flops(device_kind)
    if peak is None or flops_per_second <= 0:
        return None
    return flops_per_second / (peak * device_count)
