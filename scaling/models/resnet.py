"""ResNets (He et al. 2016), v1.5 as torchvision and timm: the stride of a bottleneck is in its 3x3.

ResNet-18/34 use basic blocks (two 3x3 convs), 50/101/152 bottlenecks (1x1,
3x3, 1x1 with 4x expansion); stem 7x7/2 conv -> norm -> ReLU -> 3x3/2 max-pool;
stages of 64, 128, 256, 512 planes, the first block of a stage that changes
shape has a 1x1 conv + norm shortcut (stride 2 from stage 2); global average
pool and a ``head`` Dense. Convs have no bias, symmetric (PyTorch) padding,
Kaiming-normal fan-out init; the last norm of each residual branch starts
at scale 0 (timm ``zero_init_last``); ``head`` has torch's default init.

Deviation: GroupNorm (32 groups, at least 2 channels per group, eps 1e-5)
where the reference has BatchNorm. The train step is a pure function of
(params, batch), with no place for running statistics; the parameter count is
unchanged (scale + bias per channel). Optional ``drop_path_rate`` (stochastic
depth, rising linearly over blocks) and ``drop_rate`` (dropout before the
head), both 0 by default as in the reference.

CIFAR ladder ``resnet-c0`` ... ``resnet-c5`` (see ``LADDER``): the same blocks
with the small-image stem of He et al. section 4.2 (one 3x3/1 conv, no
max-pool; stages at 32, 16, 8, 4 px) and stage widths scaled down.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from scaling.errors import UserError
from scaling.models.layers import DropPath, conv_macs, torch_default_init
from scaling.models.registry import ModelSpec, register

GN_GROUPS = 32
NORM_EPS = 1e-5  # torch's BatchNorm/GroupNorm default
STAGE_PLANES = (64, 128, 256, 512)
_kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

# name: (block, depths); torchvision / timm.
VARIANTS: dict[str, tuple[str, tuple[int, ...]]] = {
    "18": ("basic", (2, 2, 2, 2)),
    "34": ("basic", (3, 4, 6, 3)),
    "50": ("bottleneck", (3, 4, 6, 3)),
    "101": ("bottleneck", (3, 4, 23, 3)),
    "152": ("bottleneck", (3, 8, 36, 3)),
}
EXPANSION = {"basic": 1, "bottleneck": 4}


def gn_groups(channels: int) -> int:
    """32 groups (Wu & He 2018) or fewer: the largest divisor of ``channels``
    up to 32 that leaves at least 2 channels per group."""
    return max(g for g in range(1, GN_GROUPS + 1) if channels % g == 0 and (channels // g >= 2 or g == 1))


def _norm(channels: int, dtype, name: str, zero_init: bool = False) -> nn.GroupNorm:
    """GroupNorm standing in for BatchNorm (see the module docstring)."""
    return nn.GroupNorm(num_groups=gn_groups(channels), epsilon=NORM_EPS, dtype=dtype, name=name,
                        scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones)


def _conv(features: int, k: int, stride: int, dtype, name: str) -> nn.Conv:
    p = k // 2
    return nn.Conv(features, (k, k), strides=stride, padding=((p, p), (p, p)), use_bias=False,
                   kernel_init=_kaiming_fan_out, dtype=dtype, name=name)


class ResidualBlock(nn.Module):
    """A basic (3x3, 3x3) or bottleneck (1x1, 3x3 with the stride, 1x1 x4) block."""

    kind: str
    planes: int
    stride: int = 1
    drop_path: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        out_ch = self.planes * EXPANSION[self.kind]
        if self.kind == "basic":
            convs = [(self.planes, 3, self.stride), (out_ch, 3, 1)]
        else:
            convs = [(self.planes, 1, 1), (self.planes, 3, self.stride), (out_ch, 1, 1)]
        y = x
        for i, (ch, k, s) in enumerate(convs, 1):
            y = _conv(ch, k, s, self.dtype, f"conv{i}")(y)
            y = _norm(ch, self.dtype, f"norm{i}", zero_init=i == len(convs))(y)
            if i < len(convs):
                y = nn.relu(y)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != out_ch:
            shortcut = _conv(out_ch, 1, self.stride, self.dtype, "downsample_conv")(x)
            shortcut = _norm(out_ch, self.dtype, "downsample_norm")(shortcut)
        return nn.relu(DropPath(self.drop_path)(y, train) + shortcut)


class ResNet(nn.Module):
    num_classes: int
    block: str = "bottleneck"
    depths: tuple[int, ...] = (3, 4, 6, 3)
    widths: tuple[int, ...] = STAGE_PLANES
    stem: str = "imagenet"  # "imagenet" (7x7/2 + max-pool) | "cifar" (3x3/1, no pool)
    drop_path_rate: float = 0.0
    drop_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.block not in EXPANSION:
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {self.block!r}")
        if self.stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {self.stem!r}")
        if len(self.depths) != len(self.widths) or not self.depths:
            raise ValueError(f"depths and widths need the same number of stages, got {self.depths}, {self.widths}")
        x = x.astype(self.dtype)
        k, s = (7, 2) if self.stem == "imagenet" else (3, 1)
        x = _conv(self.widths[0], k, s, self.dtype, "conv1")(x)
        x = nn.relu(_norm(self.widths[0], self.dtype, "norm1")(x))
        if self.stem == "imagenet":
            x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        total, index = sum(self.depths), 0
        for stage, (planes, depth) in enumerate(zip(self.widths, self.depths)):
            for j in range(depth):
                rate = self.drop_path_rate * index / max(total - 1, 1)
                x = ResidualBlock(self.block, planes, 2 if (stage and not j) else 1, rate, self.dtype,
                                  name=f"layer{stage + 1}_{j}")(x, train)
                index += 1
        x = x.mean(axis=(1, 2))
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        head = nn.Dense(self.num_classes, kernel_init=torch_default_init, bias_init=_head_bias_init(x.shape[-1]),
                        dtype=self.dtype, name="head")
        return head(x).astype(jnp.float32)


def _head_bias_init(fan_in: int):
    bound = 1 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: nn.initializers.uniform(2 * bound)(key, shape, dtype) - bound


def resnet_forward_macs(image_size: int, num_classes: int, block: str, depths, widths=STAGE_PLANES,
                        stem: str = "imagenet") -> int:
    """Multiply-accumulates of one forward pass: every conv (padding taps
    included, as torchvision/fvcore count) and the head; norms, ReLU, pooling
    and the residual adds are not counted."""
    out = lambda size, k, s: (size + 2 * (k // 2) - k) // s + 1  # noqa: E731
    if stem == "imagenet":
        size = out(image_size, 7, 2)
        macs = conv_macs(3, widths[0], 7, size, size)
        size = out(size, 3, 2)  # max-pool
    else:
        size = image_size
        macs = conv_macs(3, widths[0], 3, size, size)
    ch = widths[0]
    for stage, (planes, depth) in enumerate(zip(widths, depths)):
        for j in range(depth):
            stride = 2 if (stage and not j) else 1
            out_ch = planes * EXPANSION[block]
            new = out(size, 3, stride)
            if block == "basic":
                macs += conv_macs(ch, planes, 3, new, new) + conv_macs(planes, out_ch, 3, new, new)
            else:
                macs += (conv_macs(ch, planes, 1, size, size) + conv_macs(planes, planes, 3, new, new)
                         + conv_macs(planes, out_ch, 1, new, new))
            if stride != 1 or ch != out_ch:
                macs += conv_macs(ch, out_ch, 1, new, new)
            size, ch = new, out_ch
    return macs + ch * num_classes


def resnet_recipe(batch_size: int, weight_decay: float) -> dict:
    """SGD + Nesterov momentum 0.9, lr 0.1 x batch/256, coupled weight decay on
    weights, label smoothing 0.1, 5% linear warmup then cosine."""
    return dict(optimizer="sgd", lr=0.1 * batch_size / 256, momentum=0.9, weight_decay=weight_decay,
                weight_decay_mode="coupled", label_smoothing=0.1, warmup_fraction=0.05, agc_clip=0.0,
                grad_clip_norm=0.0, mixup_alpha=0.0)


# CIFAR ladder, smallest first: name -> (ResNet depth, base width); small-image
# stem; widths base x (1, 2, 4, 8). ResNet-18 at base 64 is the usual CIFAR
# ResNet-18 (11.2M parameters); the others scale its width and depth (18 -> 34)
# so that forward FLOPs grow ~2-4x per rung and parameters span 0.18M-11M.
LADDER: dict[str, tuple[str, int]] = {
    "resnet-c0": ("18", 8),
    "resnet-c1": ("18", 16),
    "resnet-c2": ("34", 16),
    "resnet-c3": ("18", 32),
    "resnet-c4": ("34", 32),
    "resnet-c5": ("18", 64),
}
# wd 1e-4 is the ImageNet recipe; the short CIFAR budgets underfit, so the
# ladder halves it (the 5e-5 option of the issue).
LADDER_WEIGHT_DECAY = 5e-5


def _register(name: str, block: str, depths, widths, stem: str, image_size: int, ladder_rank, wd: float,
              description: str) -> None:
    def build(num_classes: int, image_size: int, **kw) -> ResNet:
        bad = {"block", "depths", "widths", "stem"} & set(kw)
        if bad:
            raise UserError(f"{name}: {', '.join(sorted(bad))} is fixed by the variant; pick another model")
        return ResNet(num_classes=num_classes, block=block, depths=depths, widths=widths, stem=stem, **kw)

    register(ModelSpec(
        name=name, family="resnet", build=build,
        forward_flops=lambda image_size, num_classes: 2 * resnet_forward_macs(
            image_size, num_classes, block, depths, widths, stem),
        recipe=lambda batch_size: resnet_recipe(batch_size, wd),
        default_image_size=image_size, ladder_rank=ladder_rank, description=description,
    ))


for _v, (_block, _depths) in VARIANTS.items():
    _register(f"resnet-{_v}", _block, _depths, STAGE_PLANES, "imagenet", 224, None, 1e-4,
              f"ResNet-{_v} v1.5 ({_block} blocks {list(_depths)}), GroupNorm, ImageNet stem")
for _rank, (_name, (_v, _base)) in enumerate(LADDER.items()):
    _block, _depths = VARIANTS[_v]
    _widths = tuple(_base * m for m in (1, 2, 4, 8))
    _register(_name, _block, _depths, _widths, "cifar", 32, _rank, LADDER_WEIGHT_DECAY,
              f"ResNet-{_v} widths {list(_widths)}, GroupNorm, CIFAR stem (3x3/1, no pool)")
