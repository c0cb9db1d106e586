"""The batch-source seam: how the train and eval steps get their batches.

A batch source is one input pipeline (``--data-pipeline``), registered by the
name of its module in this package: ``memory`` (the whole data set on the
device; a batch is the indices of its examples) and ``stream`` (Grain reads,
decodes and crops on the host; a batch is uint8 images). Adding a pipeline is
one new module here that defines ``open(cfg, choice)`` returning a
``BatchSource``; ``open_source`` finds it by name, as the model registry finds
families.

The contract both implement (what ``scaling.programs`` and the trainer use):

- ``train_spec(batch_size, sharding)``: the batch's abstract arrays, to lower
  the train step with; the step is ``train_step(state, *batch, key, lr_args)``.
- ``batch_fn(mean, std, image_size, augment, dtype)``: traced inside the step,
  ``(batch, key) -> (x, y)``: standardised model input and labels.
- ``eval_fn(mean, std, image_size, dtype)``: traced inside the eval step,
  ``uint8 images -> x``; ``eval_shape(split)`` and ``eval_batches(split, b)``
  (host dicts ``image``/``label``/``mask``, the last batch padded).
- ``train_batches(start, stop, sharding)``: an iterator of ``(batch, ids)``
  for steps ``start..stop-1`` (device arrays, host example ids); ``close()``.
- ``loader_state(step)`` / ``check_state(state)``: a JSON-able position saved
  with each checkpoint, and the check that a restored one belongs to this run.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Iterator, Protocol

from scaling.errors import UserError


class BatchSource(Protocol):
    pipeline: str  # the registered name
    choice: object  # selection.Choice: picked and why
    num_classes: int
    train_size: int
    val_size: int
    test_size: int
    image_size: int  # the train step's input resolution
    eval_image_size: int
    content_hash: str

    def channel_stats(self): ...
    def train_spec(self, batch_size: int, sharding) -> tuple: ...
    def batch_fn(self, mean, std, image_size: int, augment: bool, dtype): ...
    def eval_fn(self, mean, std, image_size: int, dtype): ...
    def eval_shape(self, split: str) -> tuple[int, tuple, object]: ...
    def eval_batches(self, split: str, batch_size: int) -> Iterator[dict]: ...
    def train_batches(self, start: int, stop: int, sharding) -> Iterator[tuple]: ...
    def loader_state(self, step: int) -> dict: ...
    def check_state(self, state: dict) -> None: ...
    def describe(self) -> dict: ...
    def close(self) -> None: ...


def names() -> tuple[str, ...]:
    """The registered pipelines: the modules of this package."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))


def open_source(cfg, choice) -> BatchSource:
    """The batch source ``choice.pipeline`` for the resolved ``cfg`` (data read or opened, validated)."""
    if choice.pipeline not in names():
        raise UserError(f"unknown data pipeline {choice.pipeline!r}; known: {', '.join(names())}")
    return importlib.import_module(f"{__name__}.{choice.pipeline}").open(cfg, choice)
