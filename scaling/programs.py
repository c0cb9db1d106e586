"""The compiled programs of one run, set up and compiled in one place.

The trainer, the benchmark and the sweep's calibration all get their train
step, eval steps and initialiser from ``Programs``, so what is timed is the
program that trains, byte for byte: ``fingerprint`` (a hash of the lowered
train step) is recorded by all three and tested equal. The batches come from a
``scaling.data.batch_sources`` source (in-memory indices or streamed images);
the programs only see the source's batch contract.
"""

from __future__ import annotations

import hashlib
import time

import jax
import numpy as np

from scaling import evaluation, optim, runtime, steps
from scaling.config import TrainConfig


class Programs:
    """The batch source's shapes, the state's shapes, and (after ``compile``) the programs."""

    def __init__(self, cfg: TrainConfig, source, device_count: int, total_steps: int):
        """``source``: a ``BatchSource`` (or an in-memory ``Dataset``, wrapped as the memory source)."""
        if not hasattr(source, "train_spec"):
            from scaling.data.batch_sources.memory import MemorySource
            from scaling.data.selection import Choice

            source = MemorySource(source, cfg, Choice("memory", "an in-memory data set given"))
        self.cfg, self.source, self.device_count = cfg, source, device_count
        self.image_size = source.image_size
        mean, std = source.channel_stats()
        self.parts = steps.build(cfg, source.num_classes, self.image_size, mean, std, source)
        self.lr_args = optim.schedule_args(cfg, total_steps)
        rep = self.parts.replicated
        self.batch_spec = source.train_spec(cfg.batch_size, self.parts.batch_sharded)
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
        if with_init:
            self.init = self._compile("init", self.parts.init_state.lower(self.init_key))
        lowered = self.parts.train_step.lower(self.abstract, *self.batch_spec, self.step_key, self.lr_args)
        self.fingerprint = hashlib.sha256(lowered.as_text().encode()).hexdigest()[:16]
        self.train = self._compile("train", lowered)
        for split in ("val", "test"):
            n, shape, dtype = self.source.eval_shape(split)
            eb = self.eval_batch(n)
            if eb not in self.evals:
                specs = (jax.ShapeDtypeStruct((eb,) + tuple(shape), dtype, sharding=shard),
                         jax.ShapeDtypeStruct((eb,), np.int32, sharding=shard),
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
        from scaling.data.feed import to_device

        n = self.source.eval_shape(split)[0]
        eb = self.eval_batch(n)
        loss = correct = 0.0
        for b in self.source.eval_batches(split, eb):
            b = to_device(b, self.parts.batch_sharded)
            ls, cs = self.evals[eb](params, b["image"], b["label"], b["mask"])
            loss += float(ls)
            correct += float(cs)
        return loss / n, correct / n
