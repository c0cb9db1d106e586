"""The compiled programs of one run, set up and compiled in one place.

The trainer, the benchmark and the sweep's calibration all get their train
step, eval steps and initialiser from ``Programs``, so what is timed is the
program that trains, byte for byte: ``fingerprint`` (a hash of the lowered
train step) is recorded by all three and tested equal.
"""

from __future__ import annotations

import hashlib
import time

import jax
import numpy as np

from scaling import evaluation, optim, runtime, steps
from scaling.config import TrainConfig


class Programs:
    """Device-resident data, the state's shapes, and (after ``compile``) the programs."""

    def __init__(self, cfg: TrainConfig, data, device_count: int, total_steps: int):
        self.cfg, self.data, self.device_count = cfg, data, device_count
        self.image_size = cfg.image_size or data.image_size
        mean, std = data.channel_stats()
        self.parts = steps.build(cfg, data.num_classes, self.image_size, mean, std)
        self.lr_args = optim.schedule_args(cfg, total_steps)
        rep = self.parts.replicated
        self.images = jax.device_put(data.train_images, rep)
        self.labels = jax.device_put(data.train_labels, rep)
        self.init_key, self.step_key = jax.random.split(jax.random.key(cfg.seed))
        abstract = jax.eval_shape(self.parts.init_state, self.init_key)
        self.abstract = jax.tree_util.tree_map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), abstract)
        self.init = self.train = None
        self.evals: dict[int, object] = {}
        self.fresh: dict[str, float] = {}  # program -> seconds compiled here (persistent-cache misses)
        self.seconds: dict[str, float] = {}  # program -> wall seconds to compile (or load from the cache)
        self.compile_seconds = 0.0
        self.fingerprint: str | None = None

    def eval_batch(self, n: int) -> int:
        return evaluation.eval_batch(n, self.device_count)

    def compile(self, with_init: bool = True) -> "Programs":
        """Compile every program before any runs (the initialiser only when ``with_init``):
        on XLA:CPU a compile after the train step is loaded slows it for the rest of the
        process (docs/performance.md, "Restart after compiling")."""
        t = time.monotonic()
        shard = self.parts.batch_sharded
        idx = jax.ShapeDtypeStruct((self.cfg.batch_size,), np.int32, sharding=shard)
        if with_init:
            self.init = self._compile("init", self.parts.init_state.lower(self.init_key))
        lowered = self.parts.train_step.lower(self.abstract, self.images, self.labels, idx, self.step_key,
                                              self.lr_args)
        self.fingerprint = hashlib.sha256(lowered.as_text().encode()).hexdigest()[:16]
        self.train = self._compile("train", lowered)
        for split in ("val", "test"):
            x, y = getattr(self.data, f"{split}_images"), getattr(self.data, f"{split}_labels")
            eb = self.eval_batch(len(x))
            if eb not in self.evals:
                specs = (jax.ShapeDtypeStruct((eb,) + x.shape[1:], x.dtype, sharding=shard),
                         jax.ShapeDtypeStruct((eb,), y.dtype, sharding=shard),
                         jax.ShapeDtypeStruct((eb,), np.float32, sharding=shard))
                self.evals[eb] = self._compile(f"eval{eb}", self.parts.eval_step.lower(self.abstract["params"], *specs))
        self.compile_seconds = time.monotonic() - t
        return self

    def _compile(self, name: str, lowered):
        t = time.monotonic()
        with runtime.CacheMisses() as misses:  # per program: tiny ones miss in every process
            compiled = lowered.compile()
        self.fresh[name] = misses.fresh_seconds
        self.seconds[name] = time.monotonic() - t
        return compiled

    def evaluate(self, params, split: str) -> tuple[float, float]:
        """Mean loss and accuracy over a split (the last batch padded and masked)."""
        shard = self.parts.batch_sharded
        x, y = getattr(self.data, f"{split}_images"), getattr(self.data, f"{split}_labels")
        eb = self.eval_batch(len(x))
        loss = correct = 0.0
        for i in range(0, len(x), eb):
            xb, yb = x[i : i + eb], y[i : i + eb]
            mask = np.ones(eb, np.float32)
            if len(xb) < eb:
                mask[len(xb) :] = 0
                xb = np.concatenate([xb, np.zeros((eb - len(xb),) + xb.shape[1:], xb.dtype)])
                yb = np.concatenate([yb, np.zeros(eb - len(yb), yb.dtype)])
            ls, cs = self.evals[eb](params, jax.device_put(xb, shard), jax.device_put(yb, shard),
                                    jax.device_put(mask, shard))
            loss += float(ls)
            correct += float(cs)
        return loss / len(x), correct / len(x)
