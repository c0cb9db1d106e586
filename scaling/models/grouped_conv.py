"""2D convolution with TF-style SAME padding and channel groups, fast on every backend.

XLA:CPU lowers ``feature_group_count > 1`` convolutions to a slow generic loop
(5-50x below its dense-conv speed), and even dense 3x3 convolutions run at a
few GFLOP/s when the feature map is tiny (2x2). So on CPU we rewrite the same
arithmetic into operations XLA:CPU runs well:

- ``"split"``: one dense convolution per group (slice the input channels and
  the kernel's output channels, concatenate the results);
- ``"im2col"``: per group, gather the kh*kw shifted (padded, strided) windows
  into a patch matrix and do one matmul with the flattened kernel.

Both lower a dense 1x1 conv to a matmul over pixels. In ``"split"``, each
dense 3x3 conv takes its weight gradient as one im2col matmul (patches^T @ dy)
instead of XLA:CPU's own weight-gradient convolution, which runs at 7-70
GFLOP/s against ~95 as a matmul where channels are not too few (measured per
shape, see ``_MATMUL_WGRAD_MIN_CIN``); forward and input gradient stay XLA's
convs.

Both compute exactly the grouped convolution (tested against the native
one, values and gradients), and XLA's cost analysis counts their forward pass
like it: ``"split"`` is counted per group
over non-padded taps, like the native conv; ``"im2col"`` also counts the
multiplies by padding zeros, i.e. exactly the analytic k*k*C_in/g*C_out MACs
per output pixel. ``"native"`` is ``lax.conv_general_dilated`` with
``feature_group_count`` (what GPUs/TPUs run best). ``"auto"`` picks native off
CPU; on CPU it picks im2col for small feature maps and split otherwise
(measured crossover, see ``_IM2COL_MAX_PIXELS``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ("auto", "native", "split", "im2col")
_DIMS = ("NHWC", "HWIO", "NHWC")
# On XLA:CPU, output maps of at most this many pixels (per example) go through
# im2col: XLA's conv kernels degrade sharply there (at 2x2, even a dense 3x3 conv
# runs at ~3 GFLOP/s vs ~65 GFLOP/s as im2col), while above it split wins.
_IM2COL_MAX_PIXELS = 4
# Dense 3x3 convs take their weight gradient as an im2col matmul from
# _MATMUL_WGRAD_MIN_CIN input and _MATMUL_WGRAD_MIN_COUT output channels (per
# group) up. Measured on a 2-core AVX2 CPU, ms, XLA's conv vs the matmul:
# batch 32: 32x32 px 32->64 ch 67.5 vs 17.4; 16x16 128->128 35.8 vs 26.0;
# 4x4 128->128 3.9 vs 1.8. Below, the matmul (e.g. a 144x16 result over
# K = 32768 rows) gains nothing: batch 128, forward + backward, 16x16 16->16
# 10.7 vs 11.1, 4x4 16->16 3.8 vs 4.0; the CIFAR ladder's whole training step
# ran 4% faster with its 16-channel groups left to XLA (216.6 vs 226.6 ms).
_MATMUL_WGRAD_MIN_CIN = 16
_MATMUL_WGRAD_MIN_COUT = 32
# ... unless the patch matrix (kh*kw copies of the input) would exceed this.
_MATMUL_WGRAD_MAX_PATCH_BYTES = 1 << 30


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding (extra pixel at the end), as ``lax`` 'SAME' does."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def resolve_impl(impl: str, out_pixels: int, kernel_pixels: int) -> str:
    """The concrete implementation that ``impl`` means for this conv on this backend."""
    if impl not in IMPLS:
        raise ValueError(f"unknown conv impl {impl!r}; choose from {IMPLS}")
    if impl != "auto":
        return impl
    if jax.default_backend() != "cpu":
        return "native"
    if kernel_pixels > 1 and out_pixels <= _IM2COL_MAX_PIXELS:
        return "im2col"
    return "split"


def conv2d(x: jax.Array, w: jax.Array, stride: int = 1, groups: int = 1, impl: str = "auto") -> jax.Array:
    """NHWC x HWIO (I = C_in / groups) -> NHWC convolution, SAME padding."""
    kh, kw, cin_g, cout = w.shape
    if x.shape[-1] != cin_g * groups or cout % groups:
        raise ValueError(f"input {x.shape} / kernel {w.shape} do not fit {groups} groups")
    out_pixels = (-(-x.shape[1] // stride)) * (-(-x.shape[2] // stride))
    impl = resolve_impl(impl, out_pixels, kh * kw)
    if impl != "native" and kh == kw == 1 and groups == 1:
        # A 1x1 conv is a matmul over pixels; as a dot, XLA:CPU runs its
        # backward pass as matmuls too.
        x = x[:, ::stride, ::stride, :] if stride > 1 else x
        return jnp.einsum("nhwc,co->nhwo", x, w[0, 0])
    if impl == "native":
        return _xla_conv(x, w, stride, groups)
    if impl == "split":
        if groups == 1:
            return _dense_conv(x, w, stride)
        xs = jnp.split(x, groups, axis=-1)
        ws = jnp.split(w, groups, axis=-1)
        return jnp.concatenate([_dense_conv(a, b, stride) for a, b in zip(xs, ws)], axis=-1)
    return _im2col(x, w, stride, groups)


def _xla_conv(x, w, stride, groups=1):
    return lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=_DIMS, feature_group_count=groups)


def _patches(x, kh, kw, stride):
    """[n, ho, wo, kh*kw*c]: the SAME-padded input window of every output pixel,
    tap-major and channel-minor (the order of an HWIO kernel's ``reshape(-1, O)``)."""
    n, h, wd, _ = x.shape
    ho, wo = -(-h // stride), -(-wd // stride)
    xp = jnp.pad(x, ((0, 0), same_padding(h, kh, stride), same_padding(wd, kw, stride), (0, 0)))
    return jnp.concatenate(
        [
            xp[:, i : i + (ho - 1) * stride + 1 : stride, j : j + (wo - 1) * stride + 1 : stride, :]
            for i in range(kh)
            for j in range(kw)
        ],
        axis=-1,
    )


def _im2col(x, w, stride, groups):
    kh, kw, cin_g, cout = w.shape
    cout_g = cout // groups
    outs = []
    for g in range(groups):
        patches = _patches(x[..., g * cin_g : (g + 1) * cin_g], kh, kw, stride)
        wg = w[..., g * cout_g : (g + 1) * cout_g].reshape(kh * kw * cin_g, cout_g)
        outs.append(patches @ wg)
    return jnp.concatenate(outs, axis=-1)


def matmul_wgrad_pays(cin: int, cout: int) -> bool:
    """Whether a dense 3x3 conv's weight gradient runs faster as an im2col matmul on XLA:CPU."""
    return cin >= _MATMUL_WGRAD_MIN_CIN and cout >= _MATMUL_WGRAD_MIN_COUT


def _dense_conv(x, w, stride):
    """A dense SAME conv whose weight gradient is a matmul where that is faster on XLA:CPU."""
    kh, kw, cin, _ = w.shape
    ho, wo = -(-x.shape[1] // stride), -(-x.shape[2] // stride)
    patch_bytes = x.shape[0] * ho * wo * kh * kw * cin * x.dtype.itemsize
    if kh * kw == 1 or not matmul_wgrad_pays(cin, w.shape[3]) or patch_bytes > _MATMUL_WGRAD_MAX_PATCH_BYTES:
        return _xla_conv(x, w, stride)
    return _conv_matmul_wgrad(x, w, stride)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_matmul_wgrad(x, w, stride):
    return _xla_conv(x, w, stride)


def _conv_matmul_wgrad_fwd(x, w, stride):
    return _xla_conv(x, w, stride), (x, w)


def _conv_matmul_wgrad_bwd(stride, residuals, dy):
    x, w = residuals
    (dx,) = jax.linear_transpose(lambda x_: _xla_conv(x_, w, stride), x)(dy)  # XLA's input-gradient conv
    kh, kw, cin, cout = w.shape
    patches = _patches(x, kh, kw, stride).reshape(-1, kh * kw * cin)
    dw = jnp.einsum("pk,po->ko", patches, dy.reshape(-1, cout)).reshape(w.shape)
    return dx, dw


_conv_matmul_wgrad.defvjp(_conv_matmul_wgrad_fwd, _conv_matmul_wgrad_bwd)
