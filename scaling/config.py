"""Training configuration: one dataclass, resolved in three layers.

Precedence: ``TrainConfig`` defaults < the model family's ``recipe`` < what the
user set explicitly (flags or a study config). Fields left as ``None`` are
filled by the recipe, then by ``FALLBACKS``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from scaling.errors import UserError


@dataclasses.dataclass
class TrainConfig:
    model: str = "cnn-s"
    dataset: str = "cifar10"
    # Where the data comes from: a .zip / folder path, "tfds", or "synthetic".
    # None: $SCALING_CIFAR10 (for cifar10), else TFDS.
    data_source: str | None = None
    val_size: int | None = None  # None: the data set's default (5,000 for CIFAR-10)
    image_size: int | None = None  # None: the data set's native size
    epochs: float = 1.0  # fractional epochs allowed
    steps: int | None = None  # if set, overrides epochs (``--steps`` / ``--examples``)
    batch_size: int = 64  # small-budget default; recipes scale the learning rate with it
    seed: int = 0

    # Optimizer (None = from the family recipe, then FALLBACKS).
    optimizer: str | None = None  # "sgd" (Nesterov momentum) | "adamw"
    lr: float | None = None  # peak learning rate
    momentum: float | None = None
    b1: float | None = None
    b2: float | None = None
    weight_decay: float | None = None
    # "coupled": L2 added to the gradient (NFNet reference, after AGC);
    # "decoupled": AdamW-style, scaled by the learning rate (Optax convention).
    weight_decay_mode: str | None = None
    warmup_fraction: float | None = None  # linear warmup from 0, then cosine to 0
    label_smoothing: float | None = None
    agc_clip: float | None = None  # AGC lambda; 0 or None disables
    # AGC also clips the SkipInit gains (NF21 reference: yes, the default). A
    # zero-initialised gain's bound is eps * lambda (~3e-5 per step), so after one
    # CIFAR epoch of nfnet-f0-w0.125 the gains are still ~1e-4; with this off they
    # reach ~0.1, at the same 1-epoch accuracy (36.8% vs 36.7%), so it stays on.
    agc_skip_gains: bool | None = None
    grad_clip_norm: float | None = None  # global-norm clipping; 0 or None disables
    mixup_alpha: float | None = None
    ema_decay: float | None = None
    augment: bool = True  # random crop (pad 4) + horizontal flip, on device
    compute_dtype: str = "float32"  # "float32" | "bfloat16" activations
    model_kwargs: dict = dataclasses.field(default_factory=dict)

    # Bookkeeping.
    eval_every: int = 0  # steps between validation evals; 0: ~10 per run
    checkpoint_every: int = 0  # steps between checkpoints; 0: ~ every 60 s of training
    log_every: int = 50

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise UserError(f"unknown config fields: {', '.join(sorted(unknown))}")
        return cls(**d)


FALLBACKS: dict[str, Any] = dict(
    optimizer="sgd",
    lr=0.1,
    momentum=0.9,
    b1=0.9,
    b2=0.999,
    weight_decay=5e-4,
    weight_decay_mode="coupled",
    warmup_fraction=0.05,
    label_smoothing=0.0,
    agc_clip=0.0,
    agc_skip_gains=True,
    grad_clip_norm=0.0,
    mixup_alpha=0.0,
    ema_decay=0.0,
)


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill ``None`` fields from the model's recipe, then ``FALLBACKS``; validate."""
    from scaling.models import registry

    spec = registry.get(cfg.model)
    if not (isinstance(cfg.epochs, (int, float)) and math.isfinite(cfg.epochs) and cfg.epochs > 0):
        raise UserError(f"--epochs must be a positive number, got {cfg.epochs}")
    if cfg.steps is not None and not (isinstance(cfg.steps, int) and cfg.steps > 0):
        raise UserError(f"--steps must be a positive integer, got {cfg.steps}")
    if not (isinstance(cfg.batch_size, int) and cfg.batch_size > 0):
        raise UserError(f"--batch-size must be a positive integer, got {cfg.batch_size}")
    recipe = spec.recipe(cfg.batch_size)
    out = dataclasses.replace(cfg)
    for key, value in {**FALLBACKS, **recipe}.items():
        if key not in FALLBACKS and not hasattr(out, key):
            raise ValueError(f"recipe of {spec.name} sets unknown field {key!r}")
        if getattr(out, key) is None:
            setattr(out, key, value)
    if out.optimizer not in ("sgd", "adamw"):
        raise UserError(f"unknown optimizer {out.optimizer!r}; choose sgd or adamw")
    if out.weight_decay_mode not in ("coupled", "decoupled"):
        raise UserError(f"unknown weight_decay_mode {out.weight_decay_mode!r}")
    if out.compute_dtype not in ("float32", "bfloat16"):
        raise UserError(f"unknown compute dtype {out.compute_dtype!r}")
    if not (out.lr > 0 and math.isfinite(out.lr)):
        raise UserError(f"--lr must be positive, got {out.lr}")
    if not isinstance(out.model_kwargs, dict):
        raise UserError(f"--model-kwargs must be a JSON object, got {out.model_kwargs!r}")
    if out.model_kwargs:  # constructing the module (no parameters yet) checks names and values
        try:
            spec.build(num_classes=10, image_size=spec.default_image_size, **out.model_kwargs)
        except (TypeError, ValueError) as e:
            raise UserError(f"--model-kwargs do not fit {spec.name}: {e}") from None
    return out


def dumps(cfg: TrainConfig) -> str:
    return json.dumps(cfg.to_json(), indent=2, sort_keys=True)
