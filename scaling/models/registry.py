"""The model registry: one table of every model the trainer, sweep and CLIs know.

A model family module (``cnn.py``, ``nfnet.py``, ``vit.py``) calls ``register``
at import time for each of its variants. ``ModelSpec`` is the whole contract:

- ``build(num_classes, image_size, **kwargs)`` returns a Flax module whose
  ``__call__(x, train: bool)`` maps float NHWC images (already standardised)
  to float32 logits; randomness (dropout, stochastic depth) uses the
  ``'dropout'`` RNG stream. The classifier layer is named ``head``.
- ``forward_flops(image_size, num_classes)`` is the analytic forward cost of
  one example in FLOPs (2 x multiply-accumulate). Training cost is 3x this,
  unless the family gives an exact ``train_flops`` of its own.
- ``recipe(batch_size)`` returns the family's default training settings
  (``TrainConfig`` field names), e.g. optimizer, learning rate, weight decay.
- ``cpu_compiler_options``: XLA options for the family's train and eval
  steps on a CPU (``jax.jit(compiler_options=...)``); None: XLA's defaults.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

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
    cpu_compiler_options: Mapping[str, Any] | None = None


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _load_families() -> None:
    # Importing a family module registers its models.
    from scaling.models import cnn  # noqa: F401

    for optional in ("nfnet", "vit"):
        try:
            __import__(f"scaling.models.{optional}")
        except ModuleNotFoundError as e:
            if e.name != f"scaling.models.{optional}":
                raise


def get(name: str) -> ModelSpec:
    _load_families()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(
            f"unknown model {name!r}; `python -m scaling.models` lists the "
            f"{len(_REGISTRY)} known models"
        ) from None


def all_specs() -> list[ModelSpec]:
    _load_families()
    return list(_REGISTRY.values())


def families() -> list[str]:
    return sorted({s.family for s in all_specs()})


def ladder(family: str) -> list[ModelSpec]:
    """The family's size ladder, smallest first."""
    specs = [s for s in all_specs() if s.family == family and s.ladder_rank is not None]
    return sorted(specs, key=lambda s: s.ladder_rank)
