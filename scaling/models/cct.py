"""Compact Convolutional Transformers (Hassani et al. 2021), as ``SHI-Labs/Compact-Transformers``.

- Convolutional tokenizer: ``n_conv`` x [k x k conv (stride max(1, k//2 - 1),
  padding max(1, k//2), no bias, Kaiming-normal) -> ReLU -> 3x3/2 max-pool
  (padding 1)], 64 channels between convs, the embedding width at the last;
  the feature map, flattened row-major, is the token sequence.
- Learned position embedding (N(0, 0.2)), or ``posemb="sine"`` (the repo's
  fixed sinusoid) or ``"none"``; dropout after it (0 by default).
- Pre-LN encoder: x + DropPath(attn(pre_norm(x))) with a bias-free ``qkv``
  and attention dropout 0.1, then, as the repo's code does, the residual
  stream is re-normalised (x = norm1(x)) before x + DropPath(MLP(x)); exact
  GELU, LayerNorm eps 1e-5, Dense init N(0, 0.02), biases 0; stochastic
  depth rising linearly from 0 to 0.1 over the layers.
- Sequence pooling: final LayerNorm, softmax over tokens of a Dense(width
  -> 1) weights the tokens, their weighted sum goes to the ``head``.

CCT-L/KxC: L layers, tokenizer kernel K with C convs. Widths: CCT-2/4 128
(2 heads, MLP ratio 1), CCT-6/7 256 (4 heads, ratio 2), CCT-14 384 (6
heads, ratio 3). The 32 px variants (3x1, 3x2) are the CIFAR ladder as
published; the repo's CIFAR recipe is AdamW with its ImageNet-free
augmentation replaced by this toolkit's crop + flip (see ``cct_recipe``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from scaling.models.layers import DropPath, attention, block_macs, conv_macs, dense_init, drop_path_rates, gelu
from scaling.models.registry import ModelSpec, register

LN_EPS = 1e-5  # torch's LayerNorm default, as the repo
TOKENIZER_CHANNELS = 64
_kaiming_fan_in = nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # torch kaiming_normal_

# L -> (width, heads, MLP ratio); src/cct.py.
ENCODERS: dict[int, tuple[int, int, float]] = {
    2: (128, 2, 1.0), 4: (128, 2, 1.0), 6: (256, 4, 2.0), 7: (256, 4, 2.0), 14: (384, 6, 3.0),
}


def tokenizer_geometry(kernel: int) -> tuple[int, int]:
    """(stride, padding) of a tokenizer conv of kernel ``kernel`` (src/cct.py ``_cct``)."""
    return max(1, kernel // 2 - 1), max(1, kernel // 2)


def token_grid(image_size: int, kernel: int, n_conv: int) -> int:
    """Side of the token grid: each conv, then a 3x3/2 max-pool with padding 1."""
    stride, pad = tokenizer_geometry(kernel)
    size = image_size
    for _ in range(n_conv):
        size = (size + 2 * pad - kernel) // stride + 1
        size = (size + 2 - 3) // 2 + 1
    return size


def sinusoidal_posemb(n: int, dim: int) -> np.ndarray:
    """The repo's fixed embedding: angle p / 10000^(2 (i // 2) / dim), sin on even channels, cos on odd."""
    p = np.arange(n)[:, None]
    i = np.arange(dim)[None, :]
    angle = p / 10000 ** (2 * (i // 2) / dim)
    return np.where(i % 2 == 0, np.sin(angle), np.cos(angle))[None].astype(np.float32)


class EncoderLayer(nn.Module):
    """The repo's ``TransformerEncoderLayer`` (note the re-normalised residual stream)."""

    num_heads: int
    mlp_hidden: int
    dropout: float = 0.0
    attention_dropout: float = 0.1
    drop_path: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        b, t, d = x.shape
        hd = d // self.num_heads
        dense = lambda n, name, bias=True: nn.Dense(n, use_bias=bias, kernel_init=dense_init,  # noqa: E731
                                                    dtype=self.dtype, name=name)
        y = nn.LayerNorm(LN_EPS, dtype=self.dtype, name="pre_norm")(x)
        qkv = dense(3 * d, "qkv", bias=False)(y).reshape(b, t, 3, self.num_heads, hd)
        drop = nn.Dropout(self.attention_dropout, deterministic=not train) if self.attention_dropout else None
        y = attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], dropout=drop).reshape(b, t, d)
        y = nn.Dropout(self.dropout, deterministic=not train)(dense(d, "proj")(y))
        x = x + DropPath(self.drop_path)(y, train)
        x = nn.LayerNorm(LN_EPS, dtype=self.dtype, name="norm1")(x)
        y = nn.Dropout(self.dropout, deterministic=not train)(gelu(dense(self.mlp_hidden, "linear1")(x)))
        y = nn.Dropout(self.dropout, deterministic=not train)(dense(d, "linear2")(y))
        return x + DropPath(self.drop_path)(y, train)


class CCT(nn.Module):
    num_classes: int
    num_layers: int = 7
    width: int = 256
    num_heads: int = 4
    mlp_ratio: float = 2.0
    kernel: int = 3
    n_conv: int = 1
    posemb: str = "learn"  # "learn" | "sine" | "none"
    dropout: float = 0.0
    attention_dropout: float = 0.1
    stochastic_depth: float = 0.1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.posemb not in ("learn", "sine", "none"):
            raise ValueError(f"posemb must be 'learn', 'sine' or 'none', got {self.posemb!r}")
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not divisible by {self.num_heads} heads")
        stride, pad = tokenizer_geometry(self.kernel)
        x = x.astype(self.dtype)
        for i in range(self.n_conv):
            ch = self.width if i == self.n_conv - 1 else TOKENIZER_CHANNELS
            x = nn.Conv(ch, (self.kernel, self.kernel), strides=stride, padding=((pad, pad), (pad, pad)),
                        use_bias=False, kernel_init=_kaiming_fan_in, dtype=self.dtype, name=f"tokenizer_conv{i}")(x)
            x = nn.max_pool(nn.relu(x), (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        b, h, w, d = x.shape
        x = x.reshape(b, h * w, d)
        if self.posemb == "learn":
            x = x + self.param("pos_embedding", nn.initializers.normal(0.2), (1, h * w, d)).astype(x.dtype)
        elif self.posemb == "sine":
            x = x + jnp.asarray(sinusoidal_posemb(h * w, d), x.dtype)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        rates = drop_path_rates(self.stochastic_depth, self.num_layers)
        for i in range(self.num_layers):
            x = EncoderLayer(self.num_heads, int(self.width * self.mlp_ratio), self.dropout, self.attention_dropout,
                             rates[i], self.dtype, name=f"block{i}")(x, train)
        x = nn.LayerNorm(LN_EPS, dtype=self.dtype, name="norm")(x)
        weights = nn.Dense(1, kernel_init=dense_init, dtype=self.dtype, name="attention_pool")(x)
        weights = nn.softmax(weights.astype(jnp.float32), axis=1).astype(x.dtype)  # over tokens
        x = jnp.einsum("btk,btd->bd", weights, x)
        return nn.Dense(self.num_classes, kernel_init=dense_init, dtype=self.dtype, name="head")(x).astype(jnp.float32)


def cct_forward_macs(image_size: int, num_classes: int, num_layers: int, kernel: int, n_conv: int,
                     attention_matmuls: bool = True) -> int:
    """Multiply-accumulates of one forward pass: tokenizer convs (padding taps
    included), every block (q/k/v, projection, MLP and, unless
    ``attention_matmuls=False``, Q K^T and A V), sequence pooling and the head.
    The repo's published MACs leave out the two attention matmuls."""
    width, _, ratio = ENCODERS[num_layers]
    stride, pad = tokenizer_geometry(kernel)
    macs, size, cin = 0, image_size, 3
    for i in range(n_conv):
        cout = width if i == n_conv - 1 else TOKENIZER_CHANNELS
        size = (size + 2 * pad - kernel) // stride + 1
        macs += conv_macs(cin, cout, kernel, size, size)
        size = (size + 2 - 3) // 2 + 1
        cin = cout
    n = size * size
    per_block = block_macs(n, width, int(width * ratio))
    if not attention_matmuls:
        per_block -= 2 * n * n * width
    return macs + num_layers * per_block + 2 * n * width + width * num_classes


def cct_recipe(batch_size: int, *, lr: float, base_batch: int, weight_decay: float, warmup_fraction: float) -> dict:
    """The repo's AdamW recipe (b1 0.9, b2 0.999, no clipping, label smoothing
    0.1, linear warmup then cosine), lr scaled by sqrt(batch / base_batch).
    Not included: RandAugment, CutMix and the repo's MixUp 0.8 (``--mixup-alpha``
    turns on this toolkit's MixUp; short budgets underfit without them)."""
    return dict(optimizer="adamw", lr=lr * (batch_size / base_batch) ** 0.5, b1=0.9, b2=0.999,
                weight_decay=weight_decay, weight_decay_mode="decoupled", warmup_fraction=warmup_fraction,
                label_smoothing=0.1, grad_clip_norm=0.0, agc_clip=0.0, mixup_alpha=0.0)


# configs/pretrained/cct_7-3x1_cifar10_300epochs.yml: lr 5.5e-4 at batch 128,
# wd 0.06, 10 warmup epochs of 300. cct_14-7x2_imagenet.yml: 5e-4, wd 0.05.
_cifar_recipe = lambda b: cct_recipe(b, lr=5.5e-4, base_batch=128, weight_decay=0.06,  # noqa: E731
                                     warmup_fraction=10 / 300)
_imagenet_recipe = lambda b: cct_recipe(b, lr=5e-4, base_batch=128, weight_decay=0.05,  # noqa: E731
                                        warmup_fraction=10 / 300)

# (layers, kernel, convs, image size); the 32 px ones, ordered by FLOPs, are the CIFAR ladder.
VARIANTS: dict[str, tuple[int, int, int, int]] = {
    "cct-2/3x2": (2, 3, 2, 32),
    "cct-4/3x2": (4, 3, 2, 32),
    "cct-6/3x2": (6, 3, 2, 32),
    "cct-7/3x2": (7, 3, 2, 32),
    "cct-6/3x1": (6, 3, 1, 32),
    "cct-7/3x1": (7, 3, 1, 32),
    "cct-7/7x2": (7, 7, 2, 224),
    "cct-14/7x2": (14, 7, 2, 224),
}


def _register(name: str, layers: int, kernel: int, n_conv: int, image_size: int, rank) -> None:
    width, heads, ratio = ENCODERS[layers]

    def build(num_classes: int, image_size: int, **kw) -> CCT:
        return CCT(num_classes=num_classes, num_layers=layers, width=width, num_heads=heads, mlp_ratio=ratio,
                   kernel=kernel, n_conv=n_conv, **kw)

    register(ModelSpec(
        name=name, family="cct", build=build,
        forward_flops=lambda image_size, num_classes: 2 * cct_forward_macs(image_size, num_classes, layers,
                                                                           kernel, n_conv),
        recipe=_cifar_recipe if image_size == 32 else _imagenet_recipe,
        default_image_size=image_size, ladder_rank=rank,
        description=f"CCT width {width}, {layers} layers, {heads} heads, MLP x{ratio:g}, "
                    f"{n_conv} x {kernel}x{kernel} conv tokenizer",
    ))


_rank = 0
for _name, (_l, _k, _c, _px) in VARIANTS.items():
    _register(_name, _l, _k, _c, _px, _rank if _px == 32 else None)
    _rank += _px == 32
