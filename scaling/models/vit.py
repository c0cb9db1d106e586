"""Vision Transformers: big_vision's "simple ViT" by default, the original ViT as an option.

Default configuration (big_vision ``models/vit.py`` + ``configs/vit_s16_i1k.py``,
Beyer et al. 2022, "Better plain ViT baselines"):

- patch embedding = a conv with kernel = stride = patch, module ``embedding``;
- fixed 2-D sin-cos position embedding (MoCo v3: width split into sin/cos of
  x and y, temperature 1e4; needs width % 4 == 0);
- pre-LN blocks (LayerNorm eps 1e-6, Flax's default), multi-head self-attention
  (``jax.nn.dot_product_attention``'s maths; see ``attention_impl``) and a
  GELU MLP (Flax's tanh approximation, as big_vision), final LayerNorm
  ``encoder_norm``;
- global average pooling of the tokens, no pre-logits layer (``rep_size``
  adds big_vision's tanh pre-logits Dense), classifier ``head`` with a
  zero-initialised kernel;
- Dense kernels Xavier-uniform, MLP biases ~ N(0, 1e-6), attention biases 0.

The original ViT (Dosovitskiy et al. 2021) is ``pool="cls", posemb="learn"``:
a zero-initialised class token is prepended and a learned embedding of N+1
positions (N patches + class token) is added after it, as in ViT20 eq. 1 and
timm (big_vision instead adds N posembs before the token; with
``pool="cls", posemb="sincos2d"`` the token gets a zero posemb, as there).
The learned posemb is initialised N(0, 1/width) as big_vision (timm: trunc-normal 0.02).
With these options the parameter count equals timm's ``vit_*_patch16_224``.

Only weight matrices and conv kernels are named ``kernel`` (the shared
weight-decay mask); ``pos_embedding``, ``cls``, LayerNorm ``scale``/``bias``
are not. Dense layers in the blocks are ``Dense`` (``nn.Dense``'s maths and
parameters, a backward pass arranged for XLA:CPU's GEMMs). q, k and v are
one fused Dense ``qkv`` (faster on CPU) whose three (width x width) blocks
are each Xavier-initialised like big_vision's separate projections.
Parameters are float32; ``dtype`` is the activation dtype (e.g. bfloat16 on
GPU); logits are returned as float32. On a CPU the train and eval steps
compile with ``CPU_COMPILER_OPTIONS`` (GEMMs through oneDNN).

``attention_impl`` picks the attention: a ``jax.nn.dot_product_attention``
implementation, None (XLA's einsum-softmax-einsum) or "cudnn" (fused flash
attention on NVIDIA GPUs, bf16/fp16 activations only), or "heads_major"
(the same maths written here, faster on XLA:CPU: ``heads_major_attention``).
The default "auto" takes "heads_major" on a CPU and cuDNN where it applies
(``resolve_attention_impl``): on an H100, ViT-B/16 at 224 px, batch 256,
bf16, the train step went from 96.5 ms (XLA, 28.1% MFU) to 75.6 ms (cuDNN,
35.9% MFU); ``experiments/bench_gpu.py``.

``scan=True`` runs the blocks under ``nn.scan`` (parameters stacked on a
leading ``depth`` axis; same maths, faster compiles for deep models).
XLA's cost analysis counts a loop body once, so an XLA FLOP count of a scanned
model undercounts by (depth - 1) blocks: use ``cost_analysis_twin(model)``
(the same model unrolled; cost analysis only needs shapes, so no parameter
conversion is required) or ``forward_flops``, which is analytic.

Small-budget ladder (``vit-c0/4`` ... ``vit-c5/4``): CIFAR-10 32x32, patch 4
(64 tokens), simple-ViT config. See ``LADDER`` for how the shapes were derived.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scaling.errors import UserError
from scaling.models.registry import ModelSpec, register

LN_EPS = 1e-6
_xavier = nn.initializers.xavier_uniform()
_tiny_normal = nn.initializers.normal(stddev=1e-6)


def posemb_sincos_2d(h: int, w: int, width: int, temperature: float = 10_000.0, dtype=jnp.float32):
    """Fixed 2-D sin-cos position embedding, MoCo v3 style, shape (1, h*w, width).

    Rows are the row-major grid positions; channels are [sin(x w), cos(x w),
    sin(y w), cos(y w)] with frequencies w_i = temperature^(-i/(width/4 - 1)).
    """
    if width % 4:
        raise ValueError(f"sincos2d position embedding needs width % 4 == 0, got {width}")
    y, x = np.mgrid[:h, :w]
    quarter = width // 4
    omega = 1.0 / temperature ** (np.arange(quarter) / max(quarter - 1, 1))
    x = np.outer(x.reshape(-1), omega)
    y = np.outer(y.reshape(-1), omega)
    pe = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
    return jnp.asarray(pe, dtype)[None]


def _qkv_init(key, shape, dtype=jnp.float32):
    """Xavier-uniform on each (width, width) block of the fused (width, 3*width) kernel."""
    d_in, d_out = shape[0], shape[1] // 3
    blocks = [_xavier(k, (d_in, d_out), dtype) for k in jax.random.split(key, 3)]
    return jnp.concatenate(blocks, axis=1)


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
    which oneDNN (``CPU_COMPILER_OPTIONS``) takes transposed as it is: the
    ViT-S/8 train step ran 2371 ms with ``nn.Dense`` against 2175 ms with
    this. CPU only.
    """

    features: int
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        bias = self.param("bias", self.bias_init, (self.features,))
        # Other backends keep autodiff's backward (GPU GEMMs take any layout at
        # full speed; the GPU numbers in the README were measured so).
        matmul = _matmul if jax.default_backend() == "cpu" else jnp.dot
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
    backward pass; here q, k and v are transposed once. One ViT-S/8 attention
    layer (batch 64, 65 tokens, 6 heads), forward and backward on the 2-core
    CPU: 22.0 ms against 14.4 ms.
    """
    q, k, v = (a.transpose(0, 2, 1, 3) for a in (q, k, v))
    logits = jnp.einsum("bnth,bnsh->bnts", q * (q.shape[-1] ** -0.5), k)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    return jnp.einsum("bnts,bnsh->bnth", weights, v).transpose(0, 2, 1, 3)


class LayerNorm(nn.Module):
    """``nn.LayerNorm``'s maths and parameters (``scale`` 1, ``bias`` 0, fp32
    statistics), written so that XLA fuses it.

    Flax first forms ``rsqrt(var + eps) * scale`` as a full (..., width) array,
    which XLA:CPU materialises: 25 such broadcasts cost ~0.18 s of a 4.9 s
    ViT-S/8 step (batch 64, 64 px). Here the per-token factor and the
    per-channel scale are applied one after the other and fuse.
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


class SelfAttention(nn.Module):
    num_heads: int
    dtype: Any = jnp.float32
    attention_impl: str | None = "auto"  # see resolve_attention_impl

    @nn.compact
    def __call__(self, x):
        b, t, d = x.shape
        hd = d // self.num_heads
        qkv = Dense(3 * d, kernel_init=_qkv_init, dtype=self.dtype, name="qkv")(x)
        q, k, v = jnp.split(qkv.reshape(b, t, 3 * self.num_heads, hd), 3, axis=2)
        impl = resolve_attention_impl(self.attention_impl, self.dtype, hd)
        if impl == "heads_major":
            y = heads_major_attention(q, k, v)
        else:
            y = jax.nn.dot_product_attention(q, k, v, implementation=impl)
        return Dense(d, kernel_init=_xavier, dtype=self.dtype, name="out")(y.reshape(b, t, d))


class MlpBlock(nn.Module):
    mlp_dim: int
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic: bool):
        inits = dict(kernel_init=_xavier, bias_init=_tiny_normal, dtype=self.dtype)
        y = nn.gelu(Dense(self.mlp_dim, **inits, name="fc1")(x))
        y = nn.Dropout(self.dropout)(y, deterministic)
        return Dense(x.shape[-1], **inits, name="fc2")(y)


class EncoderBlock(nn.Module):
    """Pre-LN transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    mlp_dim: int
    num_heads: int
    dropout: float = 0.0
    dtype: Any = jnp.float32
    attention_impl: str | None = "auto"

    @nn.compact
    def __call__(self, x, deterministic: bool):
        y = LayerNorm(LN_EPS, self.dtype, name="norm1")(x)
        y = SelfAttention(self.num_heads, self.dtype, self.attention_impl, name="attn")(y)
        x = x + nn.Dropout(self.dropout)(y, deterministic)
        y = LayerNorm(LN_EPS, self.dtype, name="norm2")(x)
        y = MlpBlock(self.mlp_dim, self.dropout, self.dtype, name="mlp")(y, deterministic)
        return x + nn.Dropout(self.dropout)(y, deterministic)


class _ScanBlock(EncoderBlock):
    """``EncoderBlock`` with the (carry, _) -> (carry, None) signature ``nn.scan`` needs."""

    @nn.compact
    def __call__(self, x, deterministic: bool):  # type: ignore[override]
        return super().__call__(x, deterministic), None


class VisionTransformer(nn.Module):
    num_classes: int
    patch: int = 16
    width: int = 768
    depth: int = 12
    mlp_dim: int = 3072
    num_heads: int = 12
    posemb: str = "sincos2d"  # "sincos2d" (fixed) | "learn"
    pool: str = "gap"  # "gap" (mean of patch tokens) | "cls" (class token)
    rep_size: int | None = None  # width of big_vision's tanh pre-logits layer; None: none
    head_zeroinit: bool = True
    dropout: float = 0.0
    scan: bool = False
    dtype: Any = jnp.float32
    attention_impl: str | None = "auto"

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.pool not in ("gap", "cls"):
            raise ValueError(f"pool must be 'gap' or 'cls', got {self.pool!r}")
        if self.posemb not in ("sincos2d", "learn"):
            raise ValueError(f"posemb must be 'sincos2d' or 'learn', got {self.posemb!r}")
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not divisible by {self.num_heads} heads")
        deterministic = not train
        x = x.astype(self.dtype)
        x = nn.Conv(
            self.width, (self.patch, self.patch), strides=self.patch, padding="VALID",
            dtype=self.dtype, name="embedding",
        )(x)
        b, h, w, d = x.shape
        x = x.reshape(b, h * w, d)
        n_pos = h * w + (self.pool == "cls")
        if self.posemb == "sincos2d":
            pe = posemb_sincos_2d(h, w, d)
            if self.pool == "cls":  # the class token gets no fixed position
                pe = jnp.concatenate([jnp.zeros((1, 1, d)), pe], axis=1)
        else:
            pe = self.param("pos_embedding", nn.initializers.normal(1 / math.sqrt(d)), (1, n_pos, d))
        if self.pool == "cls":
            cls = self.param("cls", nn.initializers.zeros, (1, 1, d))
            x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, d)), x], axis=1)
        x = x + pe.astype(x.dtype)
        x = nn.Dropout(self.dropout)(x, deterministic)

        block_kw = dict(
            mlp_dim=self.mlp_dim, num_heads=self.num_heads, dropout=self.dropout,
            dtype=self.dtype, attention_impl=self.attention_impl,
        )
        if self.scan:
            blocks = nn.scan(
                _ScanBlock,
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=nn.broadcast,
                length=self.depth,
            )
            x, _ = blocks(**block_kw, name="blocks")(x, deterministic)
        else:
            for i in range(self.depth):
                x = EncoderBlock(**block_kw, name=f"block_{i}")(x, deterministic)
        x = LayerNorm(LN_EPS, self.dtype, name="encoder_norm")(x)

        x = x[:, 0] if self.pool == "cls" else x.mean(axis=1)
        if self.rep_size:
            x = jnp.tanh(nn.Dense(self.rep_size, dtype=self.dtype, name="pre_logits")(x))
        head_init = nn.initializers.zeros if self.head_zeroinit else nn.initializers.lecun_normal()
        x = nn.Dense(self.num_classes, kernel_init=head_init, dtype=self.dtype, name="head")(x)
        return x.astype(jnp.float32)


def cost_analysis_twin(model: VisionTransformer) -> VisionTransformer:
    """The same model without ``nn.scan``, for XLA cost analysis.

    XLA counts a loop body once, so lower this twin (with shapes from
    ``jax.eval_shape``; no parameter values needed) to count a scanned model.
    """
    return model.clone(scan=False, parent=None)


def scan_params_from_unrolled(params: dict, depth: int) -> dict:
    """Map unrolled parameters (``block_0`` ... ) to the scanned layout (``blocks``)."""
    out = {k: v for k, v in params.items() if not k.startswith("block_")}
    per_layer = [params[f"block_{i}"] for i in range(depth)]
    out["blocks"] = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *per_layer)
    return out


def vit_forward_flops(
    image_size: int, num_classes: int, *, patch: int, width: int, depth: int, mlp_dim: int,
    pool: str = "gap", rep_size: int | None = None, in_ch: int = 3,
) -> int:
    """Analytic forward FLOPs of one image: 2 x multiply-accumulates.

    Counted: patch-embedding conv, q/k/v and output projections, both attention
    matmuls (Q K^T and A V), the two MLP matmuls, pre-logits and head.
    Excluded (elementwise or reductions, O(tokens x width) each): softmax,
    LayerNorm, GELU, residual adds, biases, position embedding, pooling.
    """
    grid = image_size // patch
    n = grid * grid
    t = n + (pool == "cls")
    embed = n * patch * patch * in_ch * width
    per_block = t * (3 * width * width + width * width + 2 * width * mlp_dim) + 2 * t * t * width
    top = (rep_size or 0) * width + (rep_size or width) * num_classes
    return 2 * (embed + depth * per_block + top)


# name: (width, depth, mlp_dim, heads); big_vision decode_variant / SViT Table 2.
VARIANTS: dict[str, tuple[int, int, int, int]] = {
    "ti": (192, 12, 768, 3),
    "s": (384, 12, 1536, 6),
    "m": (512, 12, 2048, 8),
    "b": (768, 12, 3072, 12),
    "l": (1024, 24, 4096, 16),
    "h": (1280, 32, 5120, 16),
    "g": (1408, 40, 6144, 16),
    "G": (1664, 48, 8192, 16),
    "so400m": (1152, 27, 4304, 16),
}

# Registered patch sizes per variant: /32, /16, /8, /4 for the small ones
# (/8 and /4 for small images), /16 and /14 for the big ones.
_PATCHES = {"ti": (32, 16, 8, 4), "s": (32, 16, 8, 4), "m": (32, 16, 8, 4), "b": (32, 16, 8, 4),
            "l": (32, 16, 14), "h": (16, 14), "g": (16, 14), "G": (16, 14), "so400m": (16, 14)}

# Small-budget ladder for CIFAR-10 (32x32, patch 4 -> 64 tokens), smallest first:
# name: (width, depth, mlp_dim, heads).
#
# Derivation. SoViT (Alabdulmohsin et al. 2023, sec. 3-4) finds the compute-
# optimal size of each shape dimension grows as x_k ~ t^s_k with s_MLP ~ 0.60,
# s_depth ~ 0.45, s_width ~ 0.22: MLP fastest, then depth, then width. We put
# rung r at a relative budget u_r = 1.8^r (r = 0..5) and scale a base shape
# (width 64, depth 4, MLP 128) by u_r^s_k:
#     width = 64 u^0.22  -> 64, 73, 83, 95, 107, 122  -> rounded to a multiple of 32
#     depth = 4 u^0.45   -> 4, 5.2, 6.8, 8.8, 11.5, 15 -> rounded
#     MLP   = 128 u^0.60 -> 128, 182, 259, 369, 525, 746 -> rounded to a multiple of 64
# Heads = width / 32 (head dim 32). The base shape is the smallest sensible
# transformer (head dim 32, 2 heads; MLP ratio 2, near SoViT's small-compute
# optimum of MLP ~ 1.5 x width) and trains one 45k-image epoch in about a
# minute on a 2-core CPU. Per-image forward cost then grows ~u^1.15 (the
# per-dimension exponents compose, since cost ~ depth x (width^2 + width x MLP)),
# so six rungs span ~25x in FLOPs. SoViT's exponents were fitted at ImageNet/JFT
# scale; only the relative growth rates are borrowed here, not absolute shapes.
LADDER: dict[str, tuple[int, int, int, int]] = {
    "c0": (64, 4, 128, 2),
    "c1": (64, 5, 192, 2),
    "c2": (96, 7, 256, 3),
    "c3": (96, 9, 384, 3),
    "c4": (96, 12, 512, 3),
    "c5": (128, 15, 768, 4),
}
LADDER_PATCH = 4
LADDER_BASE_U = 1.8


def vit_recipe(batch_size: int, *, base_lr: float, base_batch: int, warmup_fraction: float,
               mixup_alpha: float) -> dict:
    """AdamW recipe of big_vision's plain ViT, in Optax conventions.

    b1 0.9, b2 0.999, global-norm clipping 1.0, linear warmup + cosine decay.
    Weight decay 0.1 "decoupled" = Optax adamw (update -= lr * wd * param on
    kernels only), which equals big_vision's 1e-4 x schedule at lr 1e-3.
    The peak LR scales with the square root of the batch size (the usual rule
    for Adam; linear scaling overshoots at small batches): base_lr at base_batch.
    """
    return dict(
        optimizer="adamw",
        lr=base_lr * math.sqrt(batch_size / base_batch),
        b1=0.9,
        b2=0.999,
        weight_decay=0.1,
        weight_decay_mode="decoupled",
        grad_clip_norm=1.0,
        agc_clip=0.0,
        warmup_fraction=warmup_fraction,
        label_smoothing=0.0,
        mixup_alpha=mixup_alpha,
    )


# XLA:CPU options for the ViT's train and eval steps (``ModelSpec.cpu_compiler_options``).
# - GEMMs through oneDNN, which jaxlib bundles for x86-64: at ViT-S/8 shapes
#   (4160 tokens x 384-1536) its fp32 GEMMs ran 390-405 GFLOP/s (320 for
#   the weight gradients, which contract over tokens) on the 2-core CPU,
#   against 350-385 (285) for YNNPACK and Eigen, XLA's defaults.
# - One dot per oneDNN call ("INDIVIDUAL_DOT"): with "DOT", oneDNN also takes
#   elementwise producers of a dot's operand (e.g. ``(x * c) @ w``), and on
#   jaxlib 0.10.2 such partitions failed to compile and killed the process
#   (``tests/test_vit.py`` compiles every ViT code path in a child process).
# - YNNPACK keeps the reductions (LayerNorm, softmax) and the patch-embedding
#   convolution; without it XLA's own loops ran them slower.
# ViT-S/8 64 px batch 64 step, interleaved A/B: 2324 ms (defaults) -> 2202 ms.
# oneDNN executables cannot be stored in the persistent compilation cache, so
# these programs compile in every process (``scaling.runtime.CacheMisses``).
_LIB = "LIBRARY_FUSION_TYPE_"
CPU_COMPILER_OPTIONS = {
    "xla_cpu_use_onednn": True,
    "xla_cpu_experimental_onednn_fusion_type": _LIB + "INDIVIDUAL_DOT",
    "xla_cpu_experimental_ynn_fusion_type": f"{_LIB}REDUCE,{_LIB}INDIVIDUAL_CONVOLUTION",
}


def _register(name: str, shape: tuple[int, int, int, int], patch: int, image_size: int,
              ladder_rank: int | None, recipe) -> None:
    width, depth, mlp, heads = shape

    def build(num_classes: int, image_size: int, **kw) -> VisionTransformer:
        if image_size % patch:
            raise UserError(f"{name}: image size {image_size} is not a multiple of patch {patch}")
        return VisionTransformer(num_classes=num_classes, patch=patch, width=width, depth=depth,
                                 mlp_dim=mlp, num_heads=heads, **kw)

    def flops(image_size: int, num_classes: int) -> int:
        return vit_forward_flops(image_size, num_classes, patch=patch, width=width, depth=depth,
                                 mlp_dim=mlp)

    register(ModelSpec(
        name=name, family="vit", build=build, forward_flops=flops, recipe=recipe,
        default_image_size=image_size, ladder_rank=ladder_rank, cpu_compiler_options=CPU_COMPILER_OPTIONS,
        description=f"ViT width {width}, depth {depth}, MLP {mlp}, {heads} heads, patch {patch}",
    ))


# ImageNet-style: big_vision's 1e-3 at batch 1024, 10k of 112.6k steps warmup
# (90 epochs), MixUp 0.2 (the trainer implements it).
_imagenet_recipe = lambda batch_size: vit_recipe(  # noqa: E731
    batch_size, base_lr=1e-3, base_batch=1024, warmup_fraction=10_000 / 112_603, mixup_alpha=0.2)
# CIFAR ladder: 1e-3 at batch 256, 5% warmup, no MixUp (short runs underfit).
_ladder_recipe = lambda batch_size: vit_recipe(  # noqa: E731
    batch_size, base_lr=1e-3, base_batch=256, warmup_fraction=0.05, mixup_alpha=0.0)

for _v, _shape in VARIANTS.items():
    for _p in _PATCHES[_v]:
        _register(f"vit-{_v}/{_p}", _shape, _p, 224, None, _imagenet_recipe)
for _rank, (_v, _shape) in enumerate(LADDER.items()):
    _register(f"vit-{_v}/{LADDER_PATCH}", _shape, LADDER_PATCH, 32, _rank, _ladder_recipe)
