"""The on-device input pipeline: an exactly resumable example stream plus augmentation.

The whole data set lives on the device as uint8. The host only computes the
indices of each batch (a few microseconds); gathering, random crop with
padding, horizontal flip and standardisation run inside the jitted train step.

Step ``s`` takes examples ``[s*B, (s+1)*B)`` of the endless concatenation of
per-epoch permutations, each derived from ``(seed, epoch)``. So fractional
epochs are exact, batches cross epoch boundaries without dropping examples,
and a run resumed at step ``s`` sees exactly the batches it would have seen.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


class ExampleStream:
    def __init__(self, num_examples: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = num_examples, batch_size, seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            rng = np.random.default_rng([self.seed, epoch])
            self._perms[epoch] = rng.permutation(self.n).astype(np.int32)
        return self._perms[epoch]

    def indices(self, step: int) -> np.ndarray:
        start = step * self.batch_size
        out = np.empty(self.batch_size, np.int32)
        filled = 0
        while filled < self.batch_size:
            epoch, offset = divmod(start + filled, self.n)
            take = min(self.batch_size - filled, self.n - offset)
            out[filled : filled + take] = self._perm(epoch)[offset : offset + take]
            filled += take
        return out


def random_crop_flip(images: jax.Array, key: jax.Array, pad: int = 4) -> jax.Array:
    """Zero-pad by ``pad``, crop back to size at a random offset, flip half (per example)."""
    n, h, w, c = images.shape
    k_off, k_flip = jax.random.split(key)
    offsets = jax.random.randint(k_off, (n, 2), 0, 2 * pad + 1)
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))

    out = jax.vmap(crop)(padded, offsets)
    flip = jax.random.bernoulli(k_flip, 0.5, (n, 1, 1, 1))
    return jnp.where(flip, out[:, :, ::-1, :], out)


def preprocess(images_u8: jax.Array, mean, std, image_size: int, dtype=jnp.float32) -> jax.Array:
    """uint8 NHWC -> standardised float, resized (bilinear) if the model wants another size."""
    x = (images_u8.astype(jnp.float32) - jnp.asarray(mean)) / jnp.asarray(std)
    if x.shape[1] != image_size:
        x = jax.image.resize(x, (x.shape[0], image_size, image_size, x.shape[3]), "bilinear")
    return x.astype(dtype)


def make_batch_fn(mean, std, image_size: int, augment: bool, dtype=jnp.float32):
    """Return ``batch(images, labels, idx, key) -> (x, y)`` to call inside a jitted step."""

    def batch(images, labels, idx, key):
        x = jnp.take(images, idx, axis=0)
        if augment:
            x = random_crop_flip(x, key)
        return preprocess(x, mean, std, image_size, dtype), jnp.take(labels, idx, axis=0)

    return batch
