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
parameters; ``scaling.models.kernels``). q, k and v are
one fused Dense ``qkv`` (faster on CPU) whose three (width x width) blocks
are each Xavier-initialised like big_vision's separate projections.
Parameters are float32; ``dtype`` is the activation dtype (e.g. bfloat16 on
GPU); logits are returned as float32. On an x86-64 CPU the train and eval
steps compile with the ViT's XLA:CPU options (``scaling.platform.xla_cpu``).

``attention_impl`` picks the attention: a ``jax.nn.dot_product_attention``
implementation, None (XLA's einsum-softmax-einsum) or "cudnn" (fused flash
attention on NVIDIA GPUs, bf16/fp16 activations only), or "heads_major"
(the same maths, faster on XLA:CPU). The default "auto" takes "heads_major"
on a CPU and cuDNN where it applies (``scaling.models.kernels``).

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
from scaling.models.kernels import LN_EPS, Dense, LayerNorm, attention
from scaling.models.registry import ModelSpec, register

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
        y = attention(q, k, v, self.attention_impl)
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
        default_image_size=image_size, ladder_rank=ladder_rank,
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
