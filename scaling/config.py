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
    image_size: int | None = None  # None: the data set's native size (streaming: the model's default)
    # Input pipeline (scaling.data.batch_sources): "auto" | "memory" | "stream"; auto keeps the
    # data set on the device when its decoded size fits memory_cap_gb and all images share one size.
    data_pipeline: str = "auto"
    memory_cap_gb: float | None = None  # None: a quarter of this machine's memory
    eval_image_size: int | None = None  # streaming: eval resolution (None: image_size); NFNet-F0: 192/256
    crop_scale: list | None = None  # streaming: random-resized crop area range [min, max] (None: [0.08, 1])
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
    # Schedule (scaling.optim): "cosine" | "wsd" (warmup, constant, then a cooldown to 0
    # over the last cooldown_fraction of the run; shape "1-sqrt" | "linear") | "constant"
    # (warmup then constant: a WSD stem, see scaling.branching).
    schedule: str = "cosine"
    cooldown_fraction: float = 0.2
    cooldown_shape: str = "1-sqrt"
    warmup_steps: int | None = None  # overrides warmup_fraction; a WSD stem and its branches share one
    # A finished run's workdir (a WSD stem) whose last checkpoint this run starts from.
    init_from: str | None = None
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
        if not isinstance(d, dict):
            raise UserError(f"a training config must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if not k.startswith("_")}  # annotations, e.g. an emitted config's _prediction
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


# Field rules: (check, what a valid value is). ``None`` is allowed wherever the
# field's default is ``None`` (the recipe or data set fills it). One table, used
# by every way a config arrives: flags, ``--config`` files, a study's
# ``train_overrides``; checked before anything is written.
def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _integer(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


_RULES: dict[str, tuple[Any, str]] = {
    "model": (lambda x: isinstance(x, str) and x != "", "a model name"),
    "dataset": (lambda x: isinstance(x, str) and x != "", "a data set name"),
    "data_source": (lambda x: isinstance(x, str) and x.strip() != "", "a path, 'tfds' or 'synthetic'"),
    "val_size": (lambda x: _integer(x) and x > 0, "a positive integer"),
    "image_size": (lambda x: _integer(x) and 8 <= x <= 4096, "an integer between 8 and 4096"),
    "data_pipeline": (lambda x: x in ("auto", "memory", "stream"), "auto, memory or stream"),
    "memory_cap_gb": (lambda x: _number(x) and x >= 0, "a non-negative number of GiB"),
    "eval_image_size": (lambda x: _integer(x) and 8 <= x <= 4096, "an integer between 8 and 4096"),
    "crop_scale": (lambda x: isinstance(x, (list, tuple)) and len(x) == 2 and all(_number(v) for v in x)
                   and 0 < x[0] <= x[1] <= 1, "MIN,MAX with 0 < MIN <= MAX <= 1"),
    "epochs": (lambda x: _number(x) and x > 0, "a positive number"),
    "steps": (lambda x: _integer(x) and x > 0, "a positive integer"),
    "batch_size": (lambda x: _integer(x) and x > 0, "a positive integer"),
    "seed": (lambda x: _integer(x) and 0 <= x < 2**32, "an integer in [0, 2^32)"),
    "optimizer": (lambda x: x in ("sgd", "adamw"), "sgd or adamw"),
    "lr": (lambda x: _number(x) and x > 0, "a positive number"),
    "momentum": (lambda x: _number(x) and 0 <= x < 1, "a number in [0, 1)"),
    "b1": (lambda x: _number(x) and 0 <= x < 1, "a number in [0, 1)"),
    "b2": (lambda x: _number(x) and 0 <= x < 1, "a number in [0, 1)"),
    "weight_decay": (lambda x: _number(x) and x >= 0, "a non-negative number"),
    "weight_decay_mode": (lambda x: x in ("coupled", "decoupled"), "coupled or decoupled"),
    "warmup_fraction": (lambda x: _number(x) and 0 <= x < 1, "a number in [0, 1)"),
    "label_smoothing": (lambda x: _number(x) and 0 <= x < 1, "a number in [0, 1)"),
    "agc_clip": (lambda x: _number(x) and x >= 0, "a non-negative number (0 disables)"),
    "agc_skip_gains": (lambda x: isinstance(x, bool), "true or false"),
    "grad_clip_norm": (lambda x: _number(x) and x >= 0, "a non-negative number (0 disables)"),
    "mixup_alpha": (lambda x: _number(x) and x >= 0, "a non-negative number (0 disables)"),
    "ema_decay": (lambda x: _number(x) and 0 <= x < 1, "a number in [0, 1) (0 disables)"),
    "augment": (lambda x: isinstance(x, bool), "true or false"),
    "compute_dtype": (lambda x: x in ("float32", "bfloat16"), "float32 or bfloat16"),
    "model_kwargs": (lambda x: isinstance(x, dict), "a JSON object"),
    "eval_every": (lambda x: _integer(x) and x >= 0, "a non-negative integer (0: automatic)"),
    "checkpoint_every": (lambda x: _integer(x) and x >= 0, "a non-negative integer (0: every ~60 s)"),
    "log_every": (lambda x: _integer(x) and x > 0, "a positive integer"),
    "schedule": (lambda x: x in ("cosine", "wsd", "constant"), "cosine, wsd or constant"),
    "cooldown_fraction": (lambda x: _number(x) and 0 < x <= 1, "a number in (0, 1]"),
    "cooldown_shape": (lambda x: x in ("1-sqrt", "linear"), "1-sqrt or linear"),
    "warmup_steps": (lambda x: _integer(x) and x >= 0, "a non-negative integer"),
    "init_from": (lambda x: isinstance(x, str) and x.strip() != "", "a run directory"),
}
# A run longer than this many epochs is refused: it is a typo, not a study
# (CIFAR-10 recipes run 10-200 epochs; ImageNet ones 90-1000).
MAX_EPOCHS = 10_000


def _flag(name: str) -> str:
    return "--" + {"data_source": "data", "compute_dtype": "dtype"}.get(name, name).replace("_", "-")


def check_fields(cfg: TrainConfig) -> TrainConfig:
    """Every field against its rule (types, ranges, choices); a one-line UserError on the first bad one."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value is None and f.default is None:
            continue
        rule = _RULES.get(f.name)
        if rule is not None and not rule[0](value):
            raise UserError(f"{_flag(f.name)} must be {rule[1]}, got {value!r}")
    if cfg.epochs > MAX_EPOCHS:
        raise UserError(f"--epochs {cfg.epochs:g} is more than {MAX_EPOCHS:,} epochs; a run that long is refused")
    return cfg


def check_length(cfg: TrainConfig, train_size: int, device_count: int) -> int:
    """The run's step count, after checking it against the data: a batch no larger
    than the training set, divisible by the devices, at least one full batch of
    training and at most ``MAX_EPOCHS``."""
    if cfg.batch_size > train_size:
        raise UserError(f"--batch-size {cfg.batch_size} is larger than the training set ({train_size:,} examples)")
    if cfg.batch_size % device_count:
        raise UserError(f"--batch-size {cfg.batch_size} is not divisible by {device_count} devices")
    if cfg.steps is not None:
        total = cfg.steps
    else:
        wanted = cfg.epochs * train_size / cfg.batch_size
        if wanted < 1:
            raise UserError(f"--epochs {cfg.epochs:g} is less than one step of batch {cfg.batch_size} "
                            f"({cfg.epochs * train_size:.3g} of {train_size:,} examples)")
        total = math.ceil(wanted)
    if total * cfg.batch_size > MAX_EPOCHS * train_size:
        raise UserError(f"{total:,} steps of batch {cfg.batch_size} is more than {MAX_EPOCHS:,} epochs; "
                        "a run that long is refused")
    return total


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill ``None`` fields from the model's recipe, then ``FALLBACKS``; validate every field."""
    from scaling.models import registry

    check_fields(cfg)
    spec = registry.get(cfg.model)
    recipe = spec.recipe(cfg.batch_size)
    out = dataclasses.replace(cfg)
    for key, value in {**FALLBACKS, **recipe}.items():
        if key not in FALLBACKS and not hasattr(out, key):
            raise ValueError(f"recipe of {spec.name} sets unknown field {key!r}")
        if getattr(out, key) is None:
            setattr(out, key, value)
    check_fields(out)
    if out.model_kwargs or out.image_size is not None:  # e.g. a window or patch that does not divide it
        check_model_kwargs(spec, out)
    return out


def check_model_kwargs(spec, cfg: TrainConfig) -> None:
    """Trace the model's initialiser with the kwargs (shapes only, no compute):
    names and values that do not fit the model fail here, not in the train step."""
    import jax
    import jax.numpy as jnp

    size = cfg.image_size or spec.default_image_size
    what = "--model-kwargs do not fit" if cfg.model_kwargs else f"--image-size {size} does not fit"
    try:
        module = spec.build(num_classes=10, image_size=size, **cfg.model_kwargs)
        x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
        jax.eval_shape(lambda k, x: module.init({"params": k, "dropout": k}, x, train=True),
                       jax.random.key(0), x)
    except UserError as e:
        raise UserError(f"{what} {spec.name}: {e}") from None
    except (TypeError, ValueError, KeyError, AssertionError, IndexError, ZeroDivisionError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{what} {spec.name}: {msg[:300]}") from None


def parse_crop_scale(text: str) -> list[float]:
    """``--crop-scale MIN,MAX`` (argparse type): the random-resized crop's area range, 0 < MIN <= MAX <= 1."""
    import argparse

    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX, got {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi <= 1):
        raise argparse.ArgumentTypeError(f"crop scale must satisfy 0 < MIN <= MAX <= 1, got {text!r}")
    return [lo, hi]


def dumps(cfg: TrainConfig) -> str:
    return json.dumps(cfg.to_json(), indent=2, sort_keys=True)
