"""A small ConvNet: the baseline and plumbing model of the registry.

Three stages of [3x3 conv -> GroupNorm -> ReLU] x ``depth``, each followed by
2x2 max pooling, then global average pooling and a linear ``head``. GroupNorm, not BatchNorm, keeps the
model stateless, so the train step stays a pure function of parameters and
batch. Not a published architecture: it exists so the whole pipeline can be
exercised in minutes on a CPU. Measured on CIFAR-10, one epoch at batch 64:
max pooling reaches 47.6% validation accuracy, average pooling 44.5% (but
runs ~1.5x faster on XLA:CPU, whose max-pool gradient is slow).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from scaling.models.registry import ModelSpec, register


class SmallCNN(nn.Module):
    num_classes: int
    width: int = 32
    depth: int = 1
    pool: str = "max"  # "max" | "avg" (avg is ~2x faster on XLA:CPU but learns slower)
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.astype(self.dtype)
        for stage in range(3):
            for _ in range(self.depth):
                x = nn.Conv(self.width * 2**stage, (3, 3), use_bias=False, dtype=self.dtype)(x)
                x = nn.relu(nn.GroupNorm(num_groups=8, dtype=self.dtype)(x))
            pool = {"max": nn.max_pool, "avg": nn.avg_pool}[self.pool]
            x = pool(x, (2, 2), (2, 2))
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, name="head", dtype=self.dtype)(x).astype(jnp.float32)


def _valid_taps(size: int, k: int = 3) -> int:
    """Multiplies per output channel per input channel of a stride-1 SAME conv,
    counting only taps that land inside the image (XLA's convention)."""
    pad = k // 2
    per_axis = sum(min(i + pad, size - 1) - max(i - pad, 0) + 1 for i in range(size))
    return per_axis * per_axis


def cnn_conv_flops(image_size: int, width: int, depth: int, in_ch: int = 3) -> list[int]:
    """Forward FLOPs (2 x MAC, valid taps) of each conv, in order."""
    out, size, cin = [], image_size, in_ch
    for stage in range(3):
        cout = width * 2**stage
        for _ in range(depth):
            out.append(2 * _valid_taps(size) * cin * cout)
            cin = cout
        size //= 2
    return out


def cnn_forward_flops(image_size: int, num_classes: int, width: int, depth: int) -> int:
    return sum(cnn_conv_flops(image_size, width, depth)) + 2 * 4 * width * num_classes


def cnn_train_flops(image_size: int, num_classes: int, width: int, depth: int) -> int:
    """Forward + backward: 3 x forward, less the first conv's input gradient,
    which nobody needs (the input is data, not a parameter)."""
    first = cnn_conv_flops(image_size, width, depth)[0]
    return 3 * cnn_forward_flops(image_size, num_classes, width, depth) - first


_LADDER = {"cnn-xs": (16, 1), "cnn-s": (32, 1), "cnn-m": (64, 1), "cnn-l": (64, 2)}

for _rank, (_name, (_w, _d)) in enumerate(_LADDER.items()):
    register(
        ModelSpec(
            name=_name,
            family="cnn",
            build=lambda num_classes, image_size, _w=_w, _d=_d, **kw: SmallCNN(
                num_classes=num_classes, width=_w, depth=_d, **kw
            ),
            forward_flops=lambda image_size, num_classes, _w=_w, _d=_d: cnn_forward_flops(
                image_size, num_classes, _w, _d
            ),
            train_flops=lambda image_size, num_classes, _w=_w, _d=_d: cnn_train_flops(
                image_size, num_classes, _w, _d
            ),
            recipe=lambda batch_size: dict(
                optimizer="sgd", lr=0.1 * batch_size / 64, weight_decay=5e-4, label_smoothing=0.0
            ),
            default_image_size=32,
            description=f"ConvNet with GroupNorm, widths {_w}/{2*_w}/{4*_w}, {_d} conv per stage",
            ladder_rank=_rank,
        )
    )
