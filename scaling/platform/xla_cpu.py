"""XLA:CPU compiler options per model family, applied only where they mean something.

The options name libraries that jaxlib bundles on x86-64 only, so elsewhere
(GPUs, TPUs, ARM CPUs) a step compiles with XLA's defaults. The models carry
no backend settings; this table is the one place they live.

ViT (measured on the 2-core CPU; docs/performance.md):
- GEMMs through oneDNN: at ViT-S/8 shapes its fp32 GEMMs ran 390-405 GFLOP/s
  against 350-385 for YNNPACK and Eigen, XLA's defaults.
- One dot per oneDNN call ("INDIVIDUAL_DOT"): with "DOT", oneDNN also takes
  elementwise producers of a dot's operand, and on jaxlib 0.10.2 such
  partitions failed to compile and killed the process (``tests/test_vit.py``
  compiles every ViT code path in a child process).
- YNNPACK keeps the reductions (LayerNorm, softmax) and the patch-embedding conv.
oneDNN executables cannot be stored in the persistent compilation cache, so
these programs compile in every process (``scaling.runtime.CacheMisses``).
"""

from __future__ import annotations

import platform

import jax

_LIB = "LIBRARY_FUSION_TYPE_"
FAMILY_OPTIONS: dict[str, dict] = {
    "vit": {
        "xla_cpu_use_onednn": True,
        "xla_cpu_experimental_onednn_fusion_type": _LIB + "INDIVIDUAL_DOT",
        "xla_cpu_experimental_ynn_fusion_type": f"{_LIB}REDUCE,{_LIB}INDIVIDUAL_CONVOLUTION",
    },
}


def compiler_options(spec) -> dict | None:
    """The XLA options ``spec``'s steps compile with on this machine (None: XLA's defaults)."""
    options = FAMILY_OPTIONS.get(spec.family)
    if options and jax.default_backend() == "cpu" and platform.machine() in ("x86_64", "AMD64"):
        return dict(options)
    return None
