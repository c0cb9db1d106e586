"""Kernels for the transformer families: the same maths as Flax/JAX, arranged per backend.

The models call these with an ``impl`` argument instead of testing the backend
themselves. ``Dense`` and ``LayerNorm`` equal ``nn.Dense`` / ``nn.LayerNorm``
(parameters, initialisation, values, gradients); ``Dense(impl="auto")`` takes
the 2-D weight-gradient GEMM on a CPU and autodiff's backward elsewhere.
``attention(q, k, v, impl)`` dispatches to ``jax.nn.dot_product_attention``
(XLA or cuDNN) or to the heads-major form that XLA:CPU runs faster.
Measurements behind each choice: docs/performance.md.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

LN_EPS = 1e-6
DENSE_IMPLS = ("auto", "xla", "cpu_gemm")


@jax.custom_vjp
def _matmul(x, kernel):
    """``x @ kernel`` whose weight gradient is one 2-D GEMM (see ``Dense``)."""
    return jnp.dot(x, kernel)


def _matmul_fwd(x, kernel):
    return jnp.dot(x, kernel), (x, kernel)


def _matmul_bwd(res, dy):
    x, kernel = res
    d_in, d_out = kernel.shape
    dx = jnp.dot(dy, kernel.T)
    # Tokens of every image on one axis: a single contracting dimension.
    dk = jnp.dot(x.reshape(-1, d_in).T, dy.reshape(-1, d_out))
    return dx, dk


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


class Dense(nn.Module):
    """``nn.Dense``'s maths, parameters and initialisation, with a backward pass
    arranged for XLA:CPU.

    Autodiff of ``nn.Dense`` on (batch, tokens, width) activations writes the
    weight gradient as a contraction over two axes, and XLA:CPU answers with a
    transposed copy of the output gradient before the GEMM (25.6 MB for each
    ViT-S/8 fc1 at batch 64). Here it is one 2-D GEMM over flattened tokens,
    which oneDNN (``scaling.platform.xla_cpu``) takes transposed as it is
    (ViT-S/8 train step 2371 -> 2175 ms on the 2-core CPU).
    """

    features: int
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros
    dtype: Any = jnp.float32
    impl: str = "auto"  # "cpu_gemm" (the custom backward), "xla" (autodiff's), "auto": by backend

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        bias = self.param("bias", self.bias_init, (self.features,))
        # Other backends keep autodiff's backward (GPU GEMMs take any layout at full speed).
        if self.impl not in DENSE_IMPLS:
            raise ValueError(f"unknown Dense impl {self.impl!r}; choose from {DENSE_IMPLS}")
        cpu = self.impl == "cpu_gemm" or (self.impl == "auto" and jax.default_backend() == "cpu")
        matmul = _matmul if cpu else jnp.dot
        y = matmul(x.astype(self.dtype), kernel.astype(self.dtype))
        return y + bias.astype(self.dtype)


ATTENTION_IMPLS = (None, "auto", "xla", "cudnn", "heads_major")


def resolve_attention_impl(impl: str | None, dtype, head_dim: int, backend: str | None = None) -> str | None:
    """The attention implementation that ``impl`` means here: a
    ``jax.nn.dot_product_attention`` implementation, or "heads_major".

    "auto": cuDNN's fused attention on an NVIDIA GPU when the activations are
    bf16/fp16 and the head dimension is one cuDNN takes (a multiple of 8, at
    most 128); "heads_major" on a CPU; otherwise None (XLA), which runs everywhere.
    """
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"unknown attention_impl {impl!r}; choose from {ATTENTION_IMPLS}")
    if impl != "auto":
        return impl
    backend = backend or jax.default_backend()
    half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    if backend in ("gpu", "cuda") and half and head_dim % 8 == 0 and head_dim <= 128:
        return "cudnn"
    if backend == "cpu":
        return "heads_major"
    return None


def heads_major_attention(q, k, v):
    """softmax(q k^T / sqrt(head_dim)) v on (batch, tokens, heads, head_dim)
    arrays, computed with heads before tokens.

    ``jax.nn.dot_product_attention``'s maths. Its XLA form keeps tokens before
    heads, and XLA:CPU then transposes around every batched matmul of the
    backward pass; here q, k and v are transposed once (one ViT-S/8 attention
    layer, forward and backward, 22.0 -> 14.4 ms on the 2-core CPU).
    """
    q, k, v = (a.transpose(0, 2, 1, 3) for a in (q, k, v))
    logits = jnp.einsum("bnth,bnsh->bnts", q * (q.shape[-1] ** -0.5), k)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    return jnp.einsum("bnts,bnsh->bnth", weights, v).transpose(0, 2, 1, 3)


class LayerNorm(nn.Module):
    """``nn.LayerNorm``'s maths and parameters (``scale`` 1, ``bias`` 0, fp32
    statistics), written so that XLA fuses it.

    Flax first forms ``rsqrt(var + eps) * scale`` as a full (..., width) array,
    which XLA:CPU materialises (~0.18 s of a 4.9 s ViT-S/8 step). Here the
    per-token factor and the per-channel scale are applied one after the other and fuse.
    """

    epsilon: float = LN_EPS
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (d,))
        bias = self.param("bias", nn.initializers.zeros, (d,))
        x = x.astype(jnp.float32)
        centred = x - jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
        y = centred * jax.lax.rsqrt(var + self.epsilon)
        return (y * scale + bias).astype(self.dtype)


def attention(q, k, v, impl: str | None = "auto"):
    """Multi-head attention on (batch, tokens, heads, head_dim) arrays by ``impl``
    (see ``resolve_attention_impl``)."""
    impl = resolve_attention_impl(impl, q.dtype, q.shape[-1])
    if impl == "heads_major":
        return heads_major_attention(q, k, v)
    return jax.nn.dot_product_attention(q, k, v, implementation=impl)
