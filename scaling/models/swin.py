"""Swin Transformer (Liu et al. 2021), as timm ``swin_{tiny,small,base}_patch4_window7_224``.

- Patch embedding: p x p conv with stride p (torch's default init), then
  LayerNorm (``patch_norm``).
- Stages of pre-LN blocks on the (H, W) token map. A block attends within
  non-overlapping w x w windows; every second block of a stage shifts the map
  by (-w//2, -w//2) first (a cyclic roll) and rolls it back after, and an
  attention mask (-100 on the logits, as the reference) keeps tokens that came
  from different regions of the unshifted map from attending to each other.
  Each head adds a learned relative position bias, a ((2w-1)^2, heads) table
  indexed by the (dy, dx) offset of the two tokens (``relative_position_index``).
  Where a stage's map is no larger than the window, the window is the whole
  map and the shift is off (as the reference).
- Patch merging before stages 2.. : the 2 x 2 neighbours concatenated in the
  reference's order (x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]),
  LayerNorm, Dense(4C -> 2C, no bias).
- Final LayerNorm, global average pool, ``head``. LayerNorm eps 1e-5 (torch's
  default), exact GELU, MLP ratio 4, qkv bias, Dense and the bias table
  N(0, 0.02), biases 0; stochastic depth rising linearly over all blocks
  (timm ``linspace(0, rate, sum(depths))``).

Deliberate deviation: a window that does not divide a stage's feature map,
or an image size the patch (and the merges) do not divide, is a one-line
error, as the original code's asserts; newer timm pads the map instead.

CIFAR ladder ``swin-c0`` ... ``swin-c4``: 32 px, patch 2 (16 x 16 tokens),
window 4, three stages (16, 8 and 4 px maps: 16, 4 and 1 windows; Swin-T's
fourth stage would see a 2 x 2 map), head dim 32 (16 for ``c0``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from scaling.errors import UserError
from scaling.models.layers import (DropPath, Mlp, attention, block_macs, dense_init, drop_path_rates,
                                   torch_default_init)
from scaling.models.registry import ModelSpec, register

LN_EPS = 1e-5  # torch's LayerNorm default, as timm's Swin
MASK_VALUE = -100.0  # the reference's additive mask


def window_partition(x, window: int):
    """(B, H, W, C) -> (B, number of windows, window * window, C), windows row-major."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // window) * (w // window), window * window, c)


def window_reverse(windows, window: int, h: int, w: int):
    """Inverse of ``window_partition``: (B, nW, window * window, C) -> (B, H, W, C)."""
    b, _, _, c = windows.shape
    x = windows.reshape(b, h // window, w // window, window, window, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def relative_position_index(window: int) -> np.ndarray:
    """(w*w, w*w) index into the ((2w-1)^2, heads) bias table: (dy + w-1) * (2w-1) + (dx + w-1)."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)
    return rel[0] * (2 * window - 1) + rel[1]


def shifted_window_mask(h: int, w: int, window: int, shift: int) -> np.ndarray:
    """(nW, w*w, w*w) additive mask: 0 where two tokens of a window come from the same
    region of the unshifted map, ``MASK_VALUE`` where the cyclic shift put them together."""
    regions = np.zeros((h, w), np.int32)
    cuts = lambda n: (slice(0, n - window), slice(n - window, n - shift), slice(n - shift, n))  # noqa: E731
    label = 0
    for rows in cuts(h):
        for cols in cuts(w):
            regions[rows, cols] = label
            label += 1
    labels = window_partition(regions[None, :, :, None], window)[0, :, :, 0]  # (nW, w*w)
    return np.where(labels[:, :, None] != labels[:, None, :], MASK_VALUE, 0.0).astype(np.float32)


def stage_geometry(res: int, window: int, shift: int) -> tuple[int, int]:
    """(window, shift) on a res x res map: the whole map and no shift where it fits in one window."""
    return (res, 0) if res <= window else (window, shift)


class WindowAttention(nn.Module):
    """Multi-head attention within windows, with the relative position bias (timm layout)."""

    num_heads: int
    window: int
    attn_drop: float = 0.0
    proj_drop: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, mask, train: bool):
        b, nw, t, d = x.shape
        hd = d // self.num_heads
        table = self.param("relative_position_bias_table", dense_init,
                           ((2 * self.window - 1) ** 2, self.num_heads))
        index = relative_position_index(self.window).reshape(-1)
        bias = table[index].reshape(t, t, self.num_heads).transpose(2, 0, 1)  # (heads, t, t)
        if mask is not None:
            bias = bias + mask[:, None]  # (nW, heads, t, t)
        qkv = nn.Dense(3 * d, kernel_init=dense_init, dtype=self.dtype, name="qkv")(x)
        qkv = qkv.reshape(b, nw, t, 3, self.num_heads, hd)
        drop = nn.Dropout(self.attn_drop, deterministic=not train) if self.attn_drop else None
        y = attention(qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :], bias, drop).reshape(b, nw, t, d)
        y = nn.Dense(d, kernel_init=dense_init, dtype=self.dtype, name="proj")(y)
        return nn.Dropout(self.proj_drop, deterministic=not train)(y)


class SwinBlock(nn.Module):
    """x + DropPath(W-MSA or SW-MSA(norm1(x))), then x + DropPath(MLP(norm2(x))), on (B, H, W, C)."""

    num_heads: int
    window: int
    shift: int
    mlp_ratio: float = 4.0
    drop: float = 0.0
    attn_drop: float = 0.0
    drop_path: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        b, h, w, c = x.shape
        y = nn.LayerNorm(LN_EPS, dtype=self.dtype, name="norm1")(x)
        mask = None
        if self.shift:
            y = jnp.roll(y, (-self.shift, -self.shift), axis=(1, 2))
            mask = jnp.asarray(shifted_window_mask(h, w, self.window, self.shift))
        y = WindowAttention(self.num_heads, self.window, self.attn_drop, self.drop, self.dtype, name="attn")(
            window_partition(y, self.window), mask, train)
        y = window_reverse(y, self.window, h, w)
        if self.shift:
            y = jnp.roll(y, (self.shift, self.shift), axis=(1, 2))
        x = x + DropPath(self.drop_path)(y, train)
        y = nn.LayerNorm(LN_EPS, dtype=self.dtype, name="norm2")(x)
        y = Mlp(int(c * self.mlp_ratio), drop=self.drop, dtype=self.dtype, name="mlp")(y, train)
        return x + DropPath(self.drop_path)(y, train)


def patch_merge(x):
    """(B, H, W, C) -> (B, H/2, W/2, 4C), channels in the reference's order x0, x1, x2, x3."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 4, 2, 5)  # (.., dx, dy, C)
    return x.reshape(b, h // 2, w // 2, 4 * c)


def check_geometry(image_size: int, patch: int, window: int, stages: int) -> list[tuple[int, int]]:
    """(map side, window) of every stage; ``UserError`` where the patch, a merge or the window does not fit."""
    if image_size % patch:
        raise UserError(f"image size {image_size} is not a multiple of patch {patch}")
    res = image_size // patch
    out = []
    for i in range(stages):
        if i:
            if res % 2:
                raise UserError(f"the {res}x{res} feature map of stage {i} cannot be halved by patch merging "
                                f"(image size {image_size}, patch {patch})")
            res //= 2
        w, _ = stage_geometry(res, window, 0)
        if res % w:
            raise UserError(f"window {window} does not divide the {res}x{res} feature map of stage {i + 1}")
        out.append((res, w))
    return out


class Swin(nn.Module):
    num_classes: int
    patch: int = 4
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.2
    dropout: float = 0.0
    attn_dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        if len(self.depths) != len(self.num_heads):
            raise ValueError(f"{len(self.depths)} stage depths but {len(self.num_heads)} head counts")
        for i, heads in enumerate(self.num_heads):
            if (self.embed_dim << i) % heads:
                raise ValueError(f"stage {i + 1} width {self.embed_dim << i} is not divisible by {heads} heads")
        try:
            geometry = check_geometry(x.shape[1], self.patch, self.window_size, len(self.depths))
        except UserError as e:
            raise ValueError(str(e)) from None
        x = nn.Conv(self.embed_dim, (self.patch, self.patch), strides=self.patch, padding="VALID",
                    kernel_init=torch_default_init, bias_init=nn.initializers.zeros, dtype=self.dtype,
                    name="patch_embed")(x.astype(self.dtype))
        x = nn.LayerNorm(LN_EPS, dtype=self.dtype, name="patch_norm")(x)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        rates = iter(drop_path_rates(self.drop_path_rate, sum(self.depths)))
        for i, (depth, heads, (_, window)) in enumerate(zip(self.depths, self.num_heads, geometry)):
            if i:
                x = nn.LayerNorm(LN_EPS, dtype=self.dtype, name=f"stage{i}_merge_norm")(patch_merge(x))
                x = nn.Dense(x.shape[-1] // 2, use_bias=False, kernel_init=dense_init, dtype=self.dtype,
                             name=f"stage{i}_merge_reduction")(x)
            for j in range(depth):
                _, shift = stage_geometry(x.shape[1], self.window_size, self.window_size // 2 if j % 2 else 0)
                x = SwinBlock(heads, window, shift, self.mlp_ratio, self.dropout, self.attn_dropout, next(rates),
                              self.dtype, name=f"stage{i}_block{j}")(x, train)
        x = nn.LayerNorm(LN_EPS, dtype=self.dtype, name="norm")(x).mean(axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=dense_init, dtype=self.dtype, name="head")(x).astype(jnp.float32)


def swin_forward_macs(image_size: int, num_classes: int, patch: int, embed_dim: int, depths, window: int,
                      mlp_ratio: float = 4.0) -> int:
    """Multiply-accumulates: patch embedding, every block (q/k/v, projection, MLP and
    the two attention matmuls within its window), the patch merges and the head."""
    geometry = check_geometry(image_size, patch, window, len(depths))
    macs = geometry[0][0] ** 2 * patch * patch * 3 * embed_dim
    dim = embed_dim
    for i, (depth, (res, w)) in enumerate(zip(depths, geometry)):
        if i:
            macs += res * res * 4 * dim * 2 * dim
            dim *= 2
        macs += depth * block_macs(res * res, dim, int(dim * mlp_ratio), attn_tokens=w * w)
    return macs + dim * num_classes


def swin_recipe(batch_size: int, warmup_fraction: float) -> dict:
    """Swin: AdamW (0.9, 0.999), lr 1e-3 x batch/1024, decoupled weight decay 0.05
    (kernels only: not the bias tables, norms or biases), 20 of 300 epochs warmup
    then cosine, label smoothing 0.1, gradient clipping at norm 5. Swin's
    RandAugment, MixUp 0.8 / CutMix 1.0 and random erasing are off (this
    toolkit has crop + flip and ``--mixup-alpha``)."""
    return dict(optimizer="adamw", lr=1e-3 * batch_size / 1024, b1=0.9, b2=0.999, weight_decay=0.05,
                weight_decay_mode="decoupled", warmup_fraction=warmup_fraction, label_smoothing=0.1,
                grad_clip_norm=5.0, agc_clip=0.0, mixup_alpha=0.0)


# name: (embed dim, depths, heads, stochastic depth); patch 4, window 7 (Swin Table 1 / timm).
VARIANTS: dict[str, tuple[int, tuple[int, ...], tuple[int, ...], float]] = {
    "t": (96, (2, 2, 6, 2), (3, 6, 12, 24), 0.2),
    "s": (96, (2, 2, 18, 2), (3, 6, 12, 24), 0.3),
    "b": (128, (2, 2, 18, 2), (4, 8, 16, 32), 0.5),
}
# CIFAR ladder, smallest first: patch 2, window 4, three stages; stochastic depth 0.1.
LADDER: dict[str, tuple[int, tuple[int, ...], tuple[int, ...], float]] = {
    "c0": (16, (2, 2, 2), (1, 2, 4), 0.1),
    "c1": (32, (2, 2, 2), (1, 2, 4), 0.1),
    "c2": (32, (2, 2, 6), (1, 2, 4), 0.1),
    "c3": (64, (2, 2, 6), (2, 4, 8), 0.1),
    "c4": (96, (2, 2, 6), (3, 6, 12), 0.1),
}
LADDER_PATCH, LADDER_WINDOW = 2, 4


def _register(name: str, dim: int, depths, heads, dpr: float, patch: int, window: int, image_size: int,
              rank, warmup: float) -> None:
    def build(num_classes: int, image_size: int, **kw) -> Swin:
        fixed = {"patch", "embed_dim", "depths", "num_heads"} & set(kw)
        if fixed:
            raise UserError(f"{name}: {', '.join(sorted(fixed))} is fixed by the variant; pick another model")
        kw = {"window_size": window, "drop_path_rate": dpr, **kw}
        try:
            check_geometry(image_size, patch, kw["window_size"], len(depths))
        except UserError as e:
            raise UserError(f"{name}: {e}") from None
        return Swin(num_classes=num_classes, patch=patch, embed_dim=dim, depths=depths, num_heads=heads, **kw)

    register(ModelSpec(
        name=name, family="swin", build=build,
        forward_flops=lambda image_size, num_classes: 2 * swin_forward_macs(image_size, num_classes, patch, dim,
                                                                            depths, window),
        recipe=lambda batch_size: swin_recipe(batch_size, warmup),
        default_image_size=image_size, ladder_rank=rank,
        description=f"Swin dim {dim}, depths {list(depths)}, heads {list(heads)}, patch {patch}, window {window}",
    ))


for _v, (_d, _depths, _heads, _dpr) in VARIANTS.items():
    _register(f"swin-{_v}", _d, _depths, _heads, _dpr, 4, 7, 224, None, 20 / 300)
for _rank, (_v, (_d, _depths, _heads, _dpr)) in enumerate(LADDER.items()):
    _register(f"swin-{_v}", _d, _depths, _heads, _dpr, LADDER_PATCH, LADDER_WINDOW, 32, _rank, 20 / 300)
