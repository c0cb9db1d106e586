"""DeiT (Touvron et al. 2021) with the distillation token, as timm ``deit_*_distilled_patch16_224``.

A ViT (conv patch embedding, pre-LN blocks with qkv bias, exact GELU,
LayerNorm eps 1e-6, final ``norm``) with two prefix tokens, ``cls`` and
``dist``, and a learned position embedding over N + 2 positions added after
them; two classifiers read them, ``head`` (class token) and ``head_dist``
(distillation token), and at evaluation the prediction is their average, as
DeiT. Init as timm: Dense N(0, 0.02), position embedding and ``dist``
N(0, 0.02), ``cls`` N(0, 1e-6), patch embedding torch's default; stochastic
depth rising linearly to 0.1.

Built without a teacher: the distillation head learns from the true labels.
DeiT's hard-distillation loss is 0.5 CE(head) + 0.5 CE(head_dist, teacher
label); the trainer takes one logit array per example, so in training (default
``train_heads="split"``) even-indexed examples of a batch are scored by
``head`` and odd-indexed ones by ``head_dist``: the batch mean is an unbiased
estimate of that loss with the teacher label replaced by the true one.
``train_heads="average"`` trains the averaged logits instead.

CIFAR ladder ``deit-c0/4`` ... ``deit-c4/4``: patch 4 at 32 px (64 patches),
DeiT's own scaling rule (depth 12, MLP ratio 4, head dim 64, width varied).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from scaling.errors import UserError
from scaling.models.layers import Block, block_macs, dense_init, drop_path_rates, torch_default_init
from scaling.models.registry import ModelSpec, register

LN_EPS = 1e-6
TRAIN_HEADS = ("split", "average")


class DeiT(nn.Module):
    num_classes: int
    patch: int = 16
    width: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1
    dropout: float = 0.0
    attn_dropout: float = 0.0
    train_heads: str = "split"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.train_heads not in TRAIN_HEADS:
            raise ValueError(f"train_heads must be one of {TRAIN_HEADS}, got {self.train_heads!r}")
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not divisible by {self.num_heads} heads")
        x = nn.Conv(self.width, (self.patch, self.patch), strides=self.patch, padding="VALID",
                    kernel_init=torch_default_init, bias_init=nn.initializers.zeros, dtype=self.dtype,
                    name="embedding")(x.astype(self.dtype))
        b, h, w, d = x.shape
        x = x.reshape(b, h * w, d)
        cls = self.param("cls", nn.initializers.normal(1e-6), (1, 1, d))
        dist = self.param("dist", nn.initializers.normal(0.02), (1, 1, d))
        pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1, h * w + 2, d))
        prefix = jnp.broadcast_to(jnp.concatenate([cls, dist], axis=1).astype(x.dtype), (b, 2, d))
        x = jnp.concatenate([prefix, x], axis=1) + pos.astype(x.dtype)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        for i, rate in enumerate(drop_path_rates(self.drop_path_rate, self.depth)):
            x = Block(self.num_heads, int(self.width * self.mlp_ratio), drop=self.dropout,
                      attn_drop=self.attn_dropout, drop_path=rate, norm_eps=LN_EPS, dtype=self.dtype,
                      name=f"block{i}")(x, train)
        x = nn.LayerNorm(LN_EPS, dtype=self.dtype, name="norm")(x)
        dense = lambda name: nn.Dense(self.num_classes, kernel_init=dense_init, dtype=self.dtype, name=name)  # noqa: E731
        logits = dense("head")(x[:, 0]).astype(jnp.float32)
        logits_dist = dense("head_dist")(x[:, 1]).astype(jnp.float32)
        if train and self.train_heads == "split":
            odd = (jnp.arange(b) % 2 == 1)[:, None]
            return jnp.where(odd, logits_dist, logits)
        return (logits + logits_dist) / 2


def deit_forward_macs(image_size: int, num_classes: int, patch: int, width: int, depth: int,
                      mlp_ratio: float = 4.0) -> int:
    """Multiply-accumulates: patch embedding, every block on N + 2 tokens (q/k/v,
    projection, MLP, both attention matmuls) and the two heads."""
    n = (image_size // patch) ** 2
    embed = n * patch * patch * 3 * width
    return embed + depth * block_macs(n + 2, width, int(width * mlp_ratio)) + 2 * width * num_classes


def deit_recipe(batch_size: int, warmup_fraction: float) -> dict:
    """DeiT: AdamW (0.9, 0.999), lr 5e-4 x batch/512, decoupled weight decay
    0.05, label smoothing 0.1, warmup 5 epochs (of 300) then cosine, no
    clipping. DeiT's MixUp 0.8 / CutMix 1.0 / RandAugment are off by default
    (``--mixup-alpha`` turns on this toolkit's MixUp; there is no CutMix)."""
    return dict(optimizer="adamw", lr=5e-4 * batch_size / 512, b1=0.9, b2=0.999, weight_decay=0.05,
                weight_decay_mode="decoupled", warmup_fraction=warmup_fraction, label_smoothing=0.1,
                grad_clip_norm=0.0, agc_clip=0.0, mixup_alpha=0.0)


# name: (width, heads); depth 12, MLP ratio 4 (DeiT Table 1).
VARIANTS: dict[str, tuple[int, int]] = {"ti": (192, 3), "s": (384, 6), "b": (768, 12)}
# CIFAR ladder, smallest first: width with heads = max(1, width // 64), depth 12.
LADDER: dict[str, tuple[int, int]] = {"c0": (32, 1), "c1": (64, 1), "c2": (128, 2), "c3": (192, 3), "c4": (256, 4)}
LADDER_PATCH = 4


def _register(name: str, width: int, heads: int, patch: int, image_size: int, rank) -> None:
    def build(num_classes: int, image_size: int, **kw) -> DeiT:
        if image_size % patch:
            raise UserError(f"{name}: image size {image_size} is not a multiple of patch {patch}")
        return DeiT(num_classes=num_classes, patch=patch, width=width, depth=12, num_heads=heads, **kw)

    register(ModelSpec(
        name=name, family="deit", build=build,
        forward_flops=lambda image_size, num_classes: 2 * deit_forward_macs(image_size, num_classes, patch,
                                                                            width, 12),
        recipe=lambda batch_size: deit_recipe(batch_size, 5 / 300),
        default_image_size=image_size, ladder_rank=rank,
        description=f"DeiT (distillation token) width {width}, depth 12, {heads} heads, patch {patch}",
    ))


for _v, (_w, _h) in VARIANTS.items():
    _register(f"deit-{_v}/16", _w, _h, 16, 224, None)
for _rank, (_v, (_w, _h)) in enumerate(LADDER.items()):
    _register(f"deit-{_v}/{LADDER_PATCH}", _w, _h, LADDER_PATCH, 32, _rank)
