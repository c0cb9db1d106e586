"""The in-memory pipeline: the whole data set on the device, a batch is its indices.

The decoded splits (``scaling.data.load``) are copied to the device once as
uint8; the host only computes each step's example indices
(``pipeline.ExampleStream``), and gathering, the padded random crop, flip and
standardisation run inside the jitted step. Fast and exact, for data sets that
fit in memory at one image size.
"""

from __future__ import annotations

import numpy as np

from scaling.data.pipeline import ExampleStream, make_batch_fn, preprocess


class MemorySource:
    pipeline = "memory"

    def __init__(self, data, cfg, choice):
        self.data, self.cfg, self.choice = data, cfg, choice
        self.num_classes, self.content_hash = data.num_classes, data.content_hash
        self.train_size, self.val_size, self.test_size = data.train_size, data.val_size, data.test_size
        self.image_size = cfg.image_size or data.image_size
        self.eval_image_size = self.image_size  # eval images are resized to the model's size in the step
        self._device = None  # (images, labels) on the device, after the first train_spec
        self._stats = None

    def channel_stats(self):
        if self._stats is None:
            self._stats = self.data.channel_stats()
        return self._stats

    def _on_device(self, sharding):
        import jax

        if self._device is None:
            rep = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
            self._device = (jax.device_put(self.data.train_images, rep), jax.device_put(self.data.train_labels, rep))
        return self._device

    def train_spec(self, batch_size: int, sharding) -> tuple:
        import jax

        images, labels = self._on_device(sharding)
        return images, labels, jax.ShapeDtypeStruct((batch_size,), np.int32, sharding=sharding)

    def batch_fn(self, mean, std, image_size: int, augment: bool, dtype):
        fn = make_batch_fn(mean, std, image_size, augment, dtype)
        return lambda batch, key: fn(*batch, key)

    def eval_fn(self, mean, std, image_size: int, dtype):
        return lambda images_u8: preprocess(images_u8, mean, std, image_size, dtype)

    def _split(self, split: str):
        return getattr(self.data, f"{split}_images"), getattr(self.data, f"{split}_labels")

    def eval_shape(self, split: str):
        x, y = self._split(split)
        return len(x), x.shape[1:], x.dtype

    def eval_batches(self, split: str, batch_size: int):
        x, y = self._split(split)
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            mask = np.ones(batch_size, np.float32)
            if len(xb) < batch_size:
                mask[len(xb) :] = 0
                xb = np.concatenate([xb, np.zeros((batch_size - len(xb),) + xb.shape[1:], xb.dtype)])
                yb = np.concatenate([yb, np.zeros(batch_size - len(yb), yb.dtype)])
            yield {"image": xb, "label": yb, "mask": mask}

    def train_batches(self, start: int, stop: int, sharding):
        import jax

        images, labels = self._on_device(sharding)
        stream = ExampleStream(self.train_size, self.cfg.batch_size, self.cfg.seed)
        for step in range(start, stop):
            idx = stream.indices(step)
            yield (images, labels, jax.device_put(idx, sharding)), idx

    def example_ids(self, step: int) -> np.ndarray:
        return ExampleStream(self.train_size, self.cfg.batch_size, self.cfg.seed).indices(step)

    def loader_state(self, step: int) -> dict:
        return {"pipeline": self.pipeline, "step": int(step), "content_hash": self.content_hash,
                "seed": self.cfg.seed, "batch_size": self.cfg.batch_size}

    def check_state(self, state: dict) -> None:
        _check_same(self.loader_state(int(state.get("step", 0))), state)

    def describe(self) -> dict:
        return {**self.data.describe(), "pipeline": self.pipeline}

    def close(self) -> None:
        pass


def _check_same(mine: dict, theirs: dict) -> None:
    import json

    from scaling.errors import UserError

    mine, theirs = json.loads(json.dumps(mine)), json.loads(json.dumps(theirs))
    diff = sorted(k for k in set(mine) | set(theirs) if k != "step" and mine.get(k) != theirs.get(k))
    if diff:
        raise UserError(f"the checkpoint's data-loader state belongs to another input pipeline "
                        f"(differs in {', '.join(diff)}); use a new --workdir")


def open(cfg, choice) -> MemorySource:
    from scaling.data import load

    return MemorySource(load(cfg.dataset, cfg.data_source, cfg.val_size), cfg, choice)
