"""The model registry: one table of every model the trainer, sweep and CLIs know.

A model family is one module of this package (``cnn.py``, ``nfnet.py``,
``vit.py``, ...) that calls ``register`` at import time for each of its
variants; adding a family is adding a file. Families load lazily: ``get(name)``
imports only the module named by the model name's prefix (``resnet-50`` ->
``scaling.models.resnet``), and ``all_specs`` imports every module of the
package (``pkgutil``; names starting with ``_`` are skipped). This module
imports no family, so there is no import circle. ``ModelSpec`` is the whole
contract:

- ``build(num_classes, image_size, **kwargs)`` returns a Flax module whose
  ``__call__(x, train: bool)`` maps float NHWC images (already standardised)
  to float32 logits; randomness (dropout, stochastic depth) uses the
  ``'dropout'`` RNG stream. The classifier layer is named ``head``.
- ``forward_flops(image_size, num_classes)`` is the analytic forward cost of
  one example in FLOPs (2 x multiply-accumulate). Training cost is 3x this,
  unless the family gives an exact ``train_flops`` of its own.
- ``recipe(batch_size)`` returns the family's default training settings
  (``TrainConfig`` field names), e.g. optimizer, learning rate, weight decay.

Backend settings (XLA:CPU options) are not part of the contract: they live in
``scaling.platform.xla_cpu``, keyed by family.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
from typing import Any, Callable

from scaling.errors import UserError


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    build: Callable[..., Any]
    forward_flops: Callable[[int, int], int]
    recipe: Callable[[int], dict]
    default_image_size: int
    description: str = ""
    # Where the model sits in its family's size ladder (0 = smallest); None for
    # models that are not on a ladder (e.g. full-size ImageNet variants).
    ladder_rank: int | None = None
    # Optional exact training (forward + backward) FLOPs per example; None: 3 x forward.
    train_flops: Callable[[int, int], int] | None = None


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


@functools.lru_cache(maxsize=None)
def _family_modules() -> tuple[str, ...]:
    """Names of the modules of ``scaling.models`` that may hold families."""
    package = importlib.import_module(__package__)
    return tuple(sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")))


def _load_family(module: str) -> None:
    # Importing a family module registers its models (a no-op once imported).
    importlib.import_module(f"{__package__}.{module}")


def _load_families() -> None:
    for module in _family_modules():
        _load_family(module)


def get(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        prefix = name.split("-", 1)[0]
        if prefix in _family_modules():
            _load_family(prefix)
    if name not in _REGISTRY:  # a name that does not start with its module's name
        _load_families()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(
            f"unknown model {name!r}; `python -m scaling.models` lists the "
            f"{len(_REGISTRY)} known models"
        ) from None


def all_specs() -> list[ModelSpec]:
    """Every registered model, grouped by family (in registration order within one)."""
    _load_families()
    return sorted(_REGISTRY.values(), key=lambda s: s.family)


def families() -> list[str]:
    return sorted({s.family for s in all_specs()})


def ladder(family: str) -> list[ModelSpec]:
    """The family's size ladder, smallest first."""
    specs = [s for s in all_specs() if s.family == family and s.ladder_rank is not None]
    return sorted(specs, key=lambda s: s.ladder_rank)
