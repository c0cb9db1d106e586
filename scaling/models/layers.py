"""Layers shared by the timm-style families (CCT, DeiT, Swin, MobileViT) and their FLOP counts.

Pre-LN transformer pieces with timm's parameter layout: ``Attention`` (one
fused ``qkv`` Dense, optional bias, optional additive attention bias for
Swin's relative positions and masks, attention dropout), ``Mlp`` (fc1, act,
fc2), ``Block`` (x + DropPath(attn(norm1(x))), x + DropPath(mlp(norm2(x)))),
per-example ``DropPath`` (stochastic depth, rescaled by 1/keep as timm) from
the ``'dropout'`` RNG, and ``conv_macs``/``block_macs`` for analytic counts.
Registers no model (the registry imports it like any module and finds nothing).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

# timm's trunc_normal_(std=.02) truncates at +-2 in absolute terms (100 std): a plain normal.
dense_init = nn.initializers.normal(stddev=0.02)
# torch's default Conv2d/Linear init: U(+-1/sqrt(fan_in)).
torch_default_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def gelu(x):
    """Exact (erf) GELU, as torch's ``nn.GELU`` in timm and the CCT repo."""
    return jax.nn.gelu(x, approximate=False)


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch per example with probability ``rate``,
    scale the kept ones by 1/(1 - rate) (timm ``drop_path``)."""

    rate: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool):
        if not train or self.rate <= 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        return x * (mask.astype(x.dtype) / keep)


def attention(q, k, v, bias=None, dropout: Callable | None = None):
    """softmax(q k^T / sqrt(d) + bias) v on (..., tokens, heads, head_dim) arrays.

    Any leading batch axes (Swin: batch and window); heads before tokens for
    the two matmuls (as ``kernels.heads_major_attention``); softmax in float32;
    ``bias`` broadcasts against (..., heads, tokens, tokens); ``dropout`` is
    applied to the attention weights (timm ``attn_drop``).
    """
    q, k, v = (jnp.swapaxes(a, -2, -3) for a in (q, k, v))
    logits = jnp.einsum("...nth,...nsh->...nts", q * (q.shape[-1] ** -0.5), k).astype(jnp.float32)
    if bias is not None:
        logits = logits + bias
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    if dropout is not None:
        weights = dropout(weights)
    return jnp.swapaxes(jnp.einsum("...nts,...nsh->...nth", weights, v), -2, -3)


class Attention(nn.Module):
    """Multi-head self-attention, timm layout: ``qkv`` (dim -> 3 dim) and ``proj``."""

    num_heads: int
    qkv_bias: bool = True
    attn_drop: float = 0.0
    proj_drop: float = 0.0
    kernel_init: Any = dense_init
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool, bias=None):
        b, t, d = x.shape
        if d % self.num_heads:
            raise ValueError(f"width {d} is not divisible by {self.num_heads} heads")
        hd = d // self.num_heads
        qkv = nn.Dense(3 * d, use_bias=self.qkv_bias, kernel_init=self.kernel_init, dtype=self.dtype,
                       name="qkv")(x)
        # timm splits the fused output as (3, heads, head_dim).
        q, k, v = (a[:, :, 0] for a in jnp.split(qkv.reshape(b, t, 3, self.num_heads, hd), 3, axis=2))
        drop = nn.Dropout(self.attn_drop, deterministic=not train) if self.attn_drop else None
        y = attention(q, k, v, bias, drop).reshape(b, t, d)
        y = nn.Dense(d, kernel_init=self.kernel_init, dtype=self.dtype, name="proj")(y)
        return nn.Dropout(self.proj_drop, deterministic=not train)(y)


class Mlp(nn.Module):
    hidden: int
    act: Callable = gelu
    drop: float = 0.0
    kernel_init: Any = dense_init
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        y = self.act(nn.Dense(self.hidden, kernel_init=self.kernel_init, dtype=self.dtype, name="fc1")(x))
        y = nn.Dropout(self.drop, deterministic=not train)(y)
        y = nn.Dense(x.shape[-1], kernel_init=self.kernel_init, dtype=self.dtype, name="fc2")(y)
        return nn.Dropout(self.drop, deterministic=not train)(y)


class Block(nn.Module):
    """Pre-LN transformer block (timm ``vision_transformer.Block``)."""

    num_heads: int
    mlp_hidden: int
    qkv_bias: bool = True
    drop: float = 0.0
    attn_drop: float = 0.0
    drop_path: float = 0.0
    norm_eps: float = 1e-6
    act: Callable = gelu
    kernel_init: Any = dense_init
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        norm = lambda name: nn.LayerNorm(self.norm_eps, dtype=self.dtype, name=name)  # noqa: E731
        y = Attention(self.num_heads, self.qkv_bias, self.attn_drop, self.drop, self.kernel_init, dtype=self.dtype,
                      name="attn")(norm("norm1")(x), train)
        x = x + DropPath(self.drop_path)(y, train)
        y = Mlp(self.mlp_hidden, self.act, self.drop, self.kernel_init, dtype=self.dtype,
                name="mlp")(norm("norm2")(x), train)
        return x + DropPath(self.drop_path)(y, train)


def gn_groups(channels: int, groups: int = 32) -> int:
    """GroupNorm groups standing in for BatchNorm (as ``resnet.gn_groups``): the largest
    divisor of ``channels`` up to ``groups`` that leaves at least 2 channels per group."""
    return max(g for g in range(1, groups + 1) if channels % g == 0 and (channels // g >= 2 or g == 1))


def drop_path_rates(rate: float, n: int) -> list[float]:
    """Linearly rising stochastic-depth rates, 0 for the first block (timm ``linspace(0, rate, n)``)."""
    return [rate * i / (n - 1) if n > 1 else 0.0 for i in range(n)]


def conv_macs(cin: int, cout: int, k: int, h_out: int, w_out: int, groups: int = 1) -> int:
    """Multiply-accumulates of a k x k conv, padding taps included (the fvcore/ptflops convention)."""
    return k * k * (cin // groups) * cout * h_out * w_out


def block_macs(tokens: int, dim: int, mlp_hidden: int, attn_tokens: int | None = None) -> int:
    """Multiply-accumulates of one transformer block on ``tokens`` tokens: q/k/v and
    output projections, the MLP, and both attention matmuls over ``attn_tokens``
    keys per query (default: all tokens; Swin: the window)."""
    s = tokens if attn_tokens is None else attn_tokens
    return tokens * (4 * dim * dim + 2 * dim * mlp_hidden) + 2 * tokens * s * dim
