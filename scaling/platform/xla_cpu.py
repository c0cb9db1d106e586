"""XLA:CPU compiler options per model family, applied only where they mean something.

A family may name XLA:CPU options for its steps (``ModelSpec.cpu_compiler_options``,
e.g. the ViT's oneDNN GEMMs, see ``scaling.models.vit``); they name libraries
that jaxlib bundles on x86-64 only, so elsewhere (GPUs, TPUs, ARM CPUs) a step
compiles with XLA's defaults.
"""

from __future__ import annotations

import platform

import jax


def compiler_options(spec) -> dict | None:
    """The XLA options ``spec``'s steps compile with on this machine (None: XLA's defaults)."""
    if spec.cpu_compiler_options and jax.default_backend() == "cpu" and platform.machine() in ("x86_64", "AMD64"):
        return dict(spec.cpu_compiler_options)
    return None
