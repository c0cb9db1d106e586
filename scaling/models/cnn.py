"""A small plain ConvNet: the baseline and plumbing model of the registry.

Three stages of [3x3 conv -> ReLU] x ``depth`` followed by 2x2 average
pooling, then global average pooling and a linear ``head``. Not a published
architecture; it exists so the pipeline can be exercised in minutes on a CPU.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from scaling.models.registry import ModelSpec, register


class SmallCNN(nn.Module):
    num_classes: int
    width: int = 32
    depth: int = 1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.astype(self.dtype)
        for stage in range(3):
            for _ in range(self.depth):
                x = nn.Conv(self.width * 2**stage, (3, 3), dtype=self.dtype)(x)
                x = nn.relu(x)
            x = nn.avg_pool(x, (2, 2), (2, 2))
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, name="head", dtype=self.dtype)(x).astype(jnp.float32)


def cnn_forward_flops(image_size: int, num_classes: int, width: int, depth: int, in_ch: int = 3) -> int:
    """2 x MACs of the convolutions and the head (SAME padding counted in full)."""
    flops, size, cin = 0, image_size, in_ch
    for stage in range(3):
        cout = width * 2**stage
        for _ in range(depth):
            flops += 2 * size * size * 9 * cin * cout
            cin = cout
        size //= 2
    return flops + 2 * cin * num_classes


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
            recipe=lambda batch_size: dict(
                optimizer="sgd", lr=0.05 * batch_size / 128, weight_decay=5e-4, label_smoothing=0.0
            ),
            default_image_size=32,
            description=f"plain ConvNet, widths {_w}/{2*_w}/{4*_w}, {_d} conv per stage",
            ladder_rank=_rank,
        )
    )
