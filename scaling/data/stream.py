"""The streaming input pipeline: records on disk -> uint8 batches, on Grain.

For data sets that do not fit in memory or whose images differ in size. Decode
threads (small hosts) or worker processes (``grain`` ``mp_prefetch``; hosts of
more than 4 cores) read, decode and crop images (``scaling.data.preprocess``)
and stack them into batches, a few batches ahead of the step; the trainer
standardises and casts on the device, as on the in-memory path.

Exactness: batch ``s`` of process ``i`` of ``n`` holds the examples of
``order.ExampleOrder`` at positions ``s*B + [i*B/n, (i+1)*B/n)``, and each
example's crop and flip are drawn from ``(seed, position)``. So a batch is a
pure function of ``(data, seed, B, step, i, n)``: independent of the number of
workers and threads, identical after a resume (the state is the next step),
and the examples equal the in-memory path's ``ExampleStream`` for the same
seed. The validation split is the in-memory path's fixed hold-out.

Use::

    data = open_stream("cifar10", "/data/my-folder-or-arrayrecord")
    crop = CropConfig(train_size=64, eval_size=64)
    with data.train_loader(batch_size=256, seed=0, crop=crop, start_step=s) as loader:
        batch = next(loader)      # {"image": (b,64,64,3) uint8, "label": (b,) int32, "id": (b,) int64}
        state = loader.get_state()  # JSON-able; loader.set_state(state) resumes exactly
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from scaling.data import DEFAULT_VAL_SIZE, preprocess
from scaling.data.dataset import hold_out
from scaling.data.order import ExampleOrder, global_position, local_batch_size
from scaling.data.preprocess import CropConfig
from scaling.data.records import Source, Subset, open_source
from scaling.errors import UserError

STATE_VERSION = 1
_AUGMENT_TAG = 0x5CA1  # separates the augmentation streams from the order's (seed, epoch)
_ENDLESS = 1 << 40  # positions in a loader without num_steps


# Up to this many cores, decode in threads of the training process rather than in
# worker processes: PIL decodes and resizes without the GIL, and a worker costs
# seconds to start (Grain imports JAX) and ~200 MiB. Measured on 2 cores (ArrayRecord,
# 64 px crops of 40-160 px images): 2 threads 1830 images/s, 2 processes 1234.
THREADS_UP_TO_CORES = 4


def default_workers() -> int:
    """Decode processes per host: none on a small machine (threads), else one per core."""
    cores = os.cpu_count() or 1
    return 0 if cores <= THREADS_UP_TO_CORES else cores


def default_threads(workers: int) -> int:
    """Decode threads per process: one per core without workers, else one each."""
    return max(1, os.cpu_count() or 1) if workers == 0 else 1


def augment_rng(seed: int, position: int) -> np.random.Generator:
    """The generator of the crop and flip of the example at ``position`` of the run's order."""
    return np.random.default_rng([seed, _AUGMENT_TAG, position])


class _TrainExample:
    """Local position -> {"image", "label", "id"} (runs in the worker processes)."""

    def __init__(self, records, order: ExampleOrder, crop: CropConfig, global_batch: int, process_index: int,
                 process_count: int):
        self.records, self.order, self.crop = records, order, crop
        self.shard = (global_batch, process_index, process_count)

    def __call__(self, local_position: int) -> dict:
        position = global_position(int(local_position), *self.shard)
        example = self.order.example(position)
        data, label, name = self.records[example]
        image = preprocess.train_view(data, self.crop, augment_rng(self.order.seed, position), name)
        return {"image": image, "label": np.int32(label), "id": np.int64(example)}


class _EvalExample:
    """Local position -> eval view of example ``global position`` (zeros and mask 0 past the end)."""

    def __init__(self, records, crop: CropConfig, global_batch: int, process_index: int, process_count: int):
        self.records, self.crop = records, crop
        self.shard = (global_batch, process_index, process_count)

    def __call__(self, local_position: int) -> dict:
        position = global_position(int(local_position), *self.shard)
        s = self.crop.eval_size
        if position >= len(self.records):
            return {"image": np.zeros((s, s, 3), np.uint8), "label": np.int32(0), "id": np.int64(-1),
                    "mask": np.float32(0)}
        data, label, name = self.records[position]
        return {"image": preprocess.eval_view(data, self.crop, name), "label": np.int32(label),
                "id": np.int64(position), "mask": np.float32(1)}


def _grain_iterator(fn, start: int, stop: int, batch: int, workers: int, threads: int, prefetch: int):
    import grain

    ds = grain.MapDataset.range(start, stop).map(fn).batch(batch, drop_remainder=True)
    ids = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch))
    if workers:
        from absl import flags  # Grain reads absl flags when it starts workers; a library

        if not flags.FLAGS.is_parsed():  # caller has not parsed any: use their defaults
            flags.FLAGS.mark_as_parsed()
        ids = ids.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=prefetch))
    return iter(ids)


class TrainLoader:
    """Endless (or ``num_steps``-long) iterator of this process's training batches.

    ``next(loader)`` gives the batch of step ``loader.step`` and advances it;
    ``loader.batch(s)`` computes the batch of any step in this process (no
    workers; for tests and checks). ``get_state``/``set_state`` save and restore
    the position as a small JSON-able dict.
    """

    def __init__(self, records, *, fingerprint: dict, batch_size: int, seed: int, crop: CropConfig,
                 process_index: int = 0, process_count: int = 1, start_step: int = 0, num_steps: int | None = None,
                 workers: int | None = None, threads: int | None = None, prefetch: int = 2):
        if batch_size < 1:
            raise UserError(f"batch size must be positive, got {batch_size}")
        try:
            self.local_batch = local_batch_size(batch_size, process_count)
        except ValueError as e:
            raise UserError(str(e)) from None
        if not 0 <= process_index < process_count:
            raise UserError(f"process index {process_index} outside [0, {process_count})")
        self.records, self.crop = records, crop
        self.batch_size, self.seed = batch_size, seed
        self.process_index, self.process_count = process_index, process_count
        self.num_steps = num_steps
        self.workers = default_workers() if workers is None else workers
        self.threads = default_threads(self.workers) if threads is None else threads
        self.prefetch = max(prefetch, self.threads)  # at least one batch in flight per thread
        self.fingerprint = dict(fingerprint, seed=seed, batch_size=batch_size, num_examples=len(records),
                                crop=dataclasses.asdict(crop))
        self._fn = _TrainExample(records, ExampleOrder(len(records), seed), crop, batch_size, process_index,
                                 process_count)
        self.step = start_step
        self._it = None

    # iteration ---------------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.num_steps is not None and self.step >= self.num_steps:
            self.close()
            raise StopIteration
        if self._it is None:
            stop = self.num_steps if self.num_steps is not None else _ENDLESS // self.local_batch
            b = self.local_batch
            self._it = _grain_iterator(self._fn, self.step * b, stop * b, b, self.workers, self.threads,
                                       self.prefetch)
        out = next(self._it)
        self.step += 1
        return out

    def batch(self, step: int) -> dict:
        """The batch of ``step`` for this process, computed here and now."""
        b = self.local_batch
        items = [self._fn(p) for p in range(step * b, (step + 1) * b)]
        return {k: np.stack([it[k] for it in items]) for k in items[0]}

    def example_ids(self, step: int) -> np.ndarray:
        """The example ids of ``step`` for this process, without reading any image."""
        return self._fn.order.indices(step, self.batch_size, self.process_index, self.process_count).astype(np.int64)

    # state -------------------------------------------------------------------
    def get_state(self) -> dict:
        """The position (next step) and what it is a position in; JSON-able."""
        return {"version": STATE_VERSION, "step": self.step, **self.fingerprint}

    def set_state(self, state: dict) -> None:
        """Continue at ``state["step"]``; the state must come from a loader over
        the same data, seed, batch size and crops (any process count)."""
        theirs = {k: v for k, v in state.items() if k not in ("step", "version")}
        mine = _jsonable(self.fingerprint)
        if state.get("version") != STATE_VERSION or _jsonable(theirs) != mine:
            diff = sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k))
            raise UserError(f"the saved data-loader state belongs to another input pipeline "
                            f"(differs in {', '.join(diff) or 'version'})")
        self.close()
        self.step = int(state["step"])

    # cleanup -----------------------------------------------------------------
    def close(self) -> None:
        it, self._it = self._it, None
        if it is not None and hasattr(it, "close"):
            it.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _jsonable(obj):
    import json

    return json.loads(json.dumps(obj))


@dataclasses.dataclass
class StreamData:
    """A data set opened for streaming, split like ``scaling.data.Dataset``."""

    name: str
    source: Source
    train: Subset  # the training split minus the validation hold-out
    val: Subset
    test: object

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.source.class_names

    @property
    def num_classes(self) -> int:
        return len(self.source.class_names)

    @property
    def train_size(self) -> int:
        return len(self.train)

    @property
    def val_size(self) -> int:
        return len(self.val)

    @property
    def test_size(self) -> int:
        return len(self.test)

    @property
    def content_hash(self) -> str:
        return self.source.content_hash

    def describe(self) -> dict:
        return dict(name=self.name, source=self.source.location, source_kind=self.source.kind,
                    content_hash=self.content_hash, num_classes=self.num_classes, train_size=self.train_size,
                    val_size=self.val_size, test_size=self.test_size, pipeline="stream")

    def _fingerprint(self) -> dict:
        return {"content_hash": self.content_hash, "val_size": self.val_size}

    def train_loader(self, *, batch_size: int, seed: int, crop: CropConfig, process_index: int = 0,
                     process_count: int = 1, start_step: int = 0, num_steps: int | None = None,
                     workers: int | None = None, threads: int | None = None, prefetch: int = 2) -> TrainLoader:
        """This process's training batches from ``start_step`` on (see ``TrainLoader``)."""
        return TrainLoader(self.train, fingerprint=self._fingerprint(), batch_size=batch_size, seed=seed,
                           crop=crop, process_index=process_index, process_count=process_count,
                           start_step=start_step, num_steps=num_steps, workers=workers, threads=threads,
                           prefetch=prefetch)

    def eval_batches(self, split: str, *, batch_size: int, crop: CropConfig, process_index: int = 0,
                     process_count: int = 1, workers: int = 0, threads: int | None = None, prefetch: int = 2):
        """Batches of ``split`` ("val" | "test") in order, the last padded: each has
        ``image``, ``label``, ``id`` (-1 for padding) and ``mask`` (0 for padding);
        process ``i`` of ``n`` gets its slice of every global batch of ``batch_size``.
        Decodes in threads by default: an evaluation is short, and starting worker
        processes (each imports Grain and so JAX) costs seconds every time."""
        records = {"val": self.val, "test": self.test}.get(split)
        if records is None:
            raise UserError(f"unknown split {split!r}: expected val or test")
        b = local_batch_size(batch_size, process_count)
        steps = -(-len(records) // batch_size)
        fn = _EvalExample(records, crop, batch_size, process_index, process_count)
        threads = default_threads(workers) if threads is None else threads
        it = _grain_iterator(fn, 0, steps * b, b, workers, threads, max(prefetch, threads))
        try:
            yield from it
        finally:
            if hasattr(it, "close"):
                it.close()

    def channel_stats(self, crop: CropConfig, num: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std in [0, 255] of the eval views of ``num`` training
        images spread evenly over the split (an estimate: the data set is not read whole)."""
        idx = np.unique(np.linspace(0, self.train_size - 1, min(num, self.train_size)).astype(np.int64))
        hist = np.zeros((3, 256), np.float64)
        for i in idx:
            data, _, name = self.train[int(i)]
            img = preprocess.eval_view(data, crop, name).reshape(-1, 3)
            for c in range(3):
                hist[c] += np.bincount(img[:, c], minlength=256)
        values = np.arange(256, dtype=np.float64)
        mean = hist @ values / hist.sum(1)
        std = np.sqrt((hist * (values[None] - mean[:, None]) ** 2).sum(1) / hist.sum(1))
        return mean.astype(np.float32), std.astype(np.float32)


def open_stream(name: str, source: str, val_size: int | None = None) -> StreamData:
    """Open ``source`` (folder, ZIP, converted ArrayRecord folder or ``"tfds"``) for streaming,
    holding out ``val_size`` training images (default as ``scaling.data.load``)."""
    src = open_source(source, name)
    n = len(src.splits["train"])
    if val_size is None:
        val_size = DEFAULT_VAL_SIZE.get(name) if DEFAULT_VAL_SIZE.get(name, n) < n else None
        val_size = val_size or n // 10
    if not 0 < val_size < n:
        raise UserError(f"--val-size must be between 1 and {n - 1}, got {val_size}")
    idx = np.arange(n)
    tr, _, va, _ = hold_out(idx, idx, val_size)
    return StreamData(name, src, Subset(src.splits["train"], tr), Subset(src.splits["train"], va),
                      src.splits["test"])
