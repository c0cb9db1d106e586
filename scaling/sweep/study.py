"""Study configuration: what a budgeted sweep may train, loaded from a Python file.

Convention (big_vision style): a study config is a Python file (packaged ones
in ``scaling/studies/``) that defines ``get_config(arg=None)`` returning a dict of
``StudyConfig`` fields (or a ``StudyConfig``). ``--config NAME`` resolves to
``scaling/studies/NAME.py``; ``--config path.py:arg`` passes ``arg`` to
``get_config``. CLI flags (``--families``, ``--batch-size``, ``--seed``,
``--data``) override fields after loading.

The study's identity is its name plus a hash of every field, so a workdir can
tell a different study from a re-run (the budget is not part of the identity:
raising it extends the same study).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

from scaling.errors import UserError



# TrainConfig fields a study sets for each trial (not overridable).
PLACEMENTS = ("band", "adaptive")
# StudyConfig fields added after studies were run, with their defaults (left out of the identity hash at them).
_LATER_FIELDS = {"schedule": "cosine", "cooldown_fraction": 0.2, "cooldown_shape": "1-sqrt",
                 "placement": "band", "adaptive_first_wave": 0.5}
PLANNED_FIELDS = frozenset({"model", "epochs", "steps", "seed", "lr", "batch_size", "schedule", "init_from"})


@dataclasses.dataclass
class StudyConfig:
    name: str = "study"
    dataset: str = "cifar10"
    data_source: str | None = None  # None: the trainer's default ($SCALING_CIFAR10, then TFDS)
    val_size: int | None = None
    image_size: int | None = None
    families: list[str] = dataclasses.field(default_factory=lambda: ["nfnet", "vit"])
    # family -> model names, smallest first; a family missing here uses its full registry ladder.
    ladders: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    # Epoch budgets, as in P23 (0.25 .. 8, factor-2 spacing).
    epochs: list[float] = dataclasses.field(default_factory=lambda: [0.25, 0.5, 1, 2, 4, 8])
    batch_size: int = 128
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    compute_dtype: str = "float32"
    # Learning rate. "tune": P23's per-epoch-budget tuning on a factor-2 grid
    # (see scaling.sweep.lr); "fixed": the family recipe's lr (or lr_base) everywhere.
    lr_strategy: str = "tune"
    lr_base: float | None = None  # None: the family recipe's lr at this batch size
    lr_first_multipliers: list[float] = dataclasses.field(default_factory=lambda: [1.0, 0.5])
    # Multiplier applied per ladder step when a larger model reuses the tuned lr
    # (1.0 = reuse as is; P23: the optimum falls slowly with model size).
    lr_size_factor: float = 1.0
    # Which model the lr is tuned on per epoch budget: "smallest" (the family's
    # smallest model, cheapest) or "band" (the smallest model planned at that budget).
    lr_tune_on: str = "smallest"
    # What a "full" study has per family when the budget allows (the planner's
    # third preference, after a real study and a tuned lr).
    min_sizes: int = 3
    min_epoch_budgets: int = 3
    # Half-width of the diagonal band of (size rank, epoch rank) cells, in epoch-rank units.
    band_width: float = 1.0
    # Choose the study's extent to fit this fraction of the budget ...
    plan_fraction: float = 0.95
    # ... then fill slack up to this fraction, re-planned with measured costs as trials
    # finish (each filler with 5% to spare; the sweep stops a trial rather than pass the budget).
    fill_fraction: float = 1.0
    # Fill slack with extra seeds of the cheapest cells when no new cell fits.
    fill_replicates: bool = True
    # Extra TrainConfig fields applied to every trial (e.g. {"augment": False}).
    train_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    # "cosine": one run per cell; "wsd": one stem per (model, lr, seed) and a cooldown branch
    # per epoch budget (scaling.sweep.branches), cooling down over the last cooldown_fraction.
    schedule: str = "cosine"
    cooldown_fraction: float = 0.2
    cooldown_shape: str = "1-sqrt"
    # Where the budget goes: "band" (the diagonal band above, planned up front) or "adaptive"
    # (scaling.sweep.placement: the band on adaptive_first_wave of the budget, then a refit with
    # bootstrap places the rest where it most narrows the allocation exponent's interval).
    placement: str = "band"
    adaptive_first_wave: float = 0.5

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, str]:
        fields = self.to_json()
        for name, default in _LATER_FIELDS.items():  # fields added later: at their default they leave
            if fields.get(name) == default:  # the hash as it was, so existing workdirs still resume
                fields.pop(name)
        blob = json.dumps(fields, sort_keys=True).encode()
        return {"name": self.name, "hash": hashlib.sha256(blob).hexdigest()[:16]}

    def validate(self) -> "StudyConfig":
        if not self.families:
            raise UserError("the study has no model families")
        if not self.epochs or any(not _positive(e) for e in self.epochs):
            raise UserError(f"epoch budgets must be positive numbers, got {self.epochs}")
        if not (isinstance(self.batch_size, int) and self.batch_size > 0):
            raise UserError(f"batch size must be a positive integer, got {self.batch_size}")
        if not self.seeds:
            raise UserError("the study has no seeds")
        if self.lr_strategy not in ("tune", "fixed"):
            raise UserError(f"unknown lr_strategy {self.lr_strategy!r}; choose tune or fixed")
        if self.lr_strategy == "tune" and (
            not self.lr_first_multipliers or any(not _positive(m) for m in self.lr_first_multipliers)
        ):
            raise UserError("lr_first_multipliers must be positive numbers")
        if not all(isinstance(v, int) and v >= 1 for v in (self.min_sizes, self.min_epoch_budgets)):
            raise UserError("min_sizes and min_epoch_budgets must be positive integers")
        if self.lr_tune_on not in ("smallest", "band"):
            raise UserError(f"unknown lr_tune_on {self.lr_tune_on!r}; choose smallest or band")
        if not 0 < self.plan_fraction <= self.fill_fraction <= 1:
            raise UserError("need 0 < plan_fraction <= fill_fraction <= 1, got "
                            f"{self.plan_fraction} and {self.fill_fraction}")
        if not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in self.seeds):
            raise UserError(f"seeds must be integers in [0, 2^32), got {self.seeds}")
        if not (_positive(self.band_width) and _positive(self.lr_size_factor)):
            raise UserError("band_width and lr_size_factor must be positive numbers")
        if self.schedule not in ("cosine", "wsd"):
            raise UserError(f"unknown schedule {self.schedule!r}; choose cosine or wsd")
        if self.placement not in PLACEMENTS:
            raise UserError(f"unknown placement {self.placement!r}; choose {' or '.join(PLACEMENTS)}")
        if not (_positive(self.adaptive_first_wave) and self.adaptive_first_wave < 1):
            raise UserError(f"adaptive_first_wave must be a fraction in (0, 1), got {self.adaptive_first_wave!r}")
        if self.placement == "adaptive" and self.schedule != "cosine":
            raise UserError("placement='adaptive' needs schedule='cosine' (WSD stems are planned up front)")
        if self.lr_base is not None and not _positive(self.lr_base):
            raise UserError(f"lr_base must be a positive number, got {self.lr_base!r}")
        self._check_train_fields()
        self.epochs = sorted(float(e) for e in self.epochs)
        return self

    def _check_train_fields(self) -> None:
        """The fields every trial inherits, and ``train_overrides``, by the trainer's own rules."""
        from scaling.config import TrainConfig, check_fields

        if not isinstance(self.train_overrides, dict):
            raise UserError(f"train_overrides must be a dict, got {type(self.train_overrides).__name__}")
        planned = sorted(set(self.train_overrides) & PLANNED_FIELDS)
        if planned:
            raise UserError(f"train_overrides may not set {', '.join(planned)}: the study plans them")
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(self.train_overrides) - names)
        if unknown:
            raise UserError(f"train_overrides: unknown training fields: {', '.join(unknown)}")
        try:
            check_fields(TrainConfig(dataset=self.dataset, data_source=self.data_source, val_size=self.val_size,
                                     image_size=self.image_size, batch_size=self.batch_size,
                                     compute_dtype=self.compute_dtype, cooldown_fraction=self.cooldown_fraction,
                                     cooldown_shape=self.cooldown_shape, **self.train_overrides))
        except UserError as e:
            raise UserError(f"study config: {e}".replace("--", "", 1)) from None


def _positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def packaged(name: str) -> Path:
    """The file of packaged study config ``name`` (``scaling/studies/NAME.py``)."""
    from importlib import resources

    return Path(str(resources.files("scaling.studies").joinpath(f"{name}.py")))


def packaged_names() -> list[str]:
    from importlib import resources

    return sorted(p.name[:-3] for p in resources.files("scaling.studies").iterdir()
                  if p.name.endswith(".py") and not p.name.startswith("_"))


def resolve_path(spec: str) -> tuple[Path, str | None]:
    """``NAME``, ``path.py`` or ``path.py:arg`` -> (file, arg)."""
    path, _, arg = spec.partition(":")
    p = Path(path)
    if p.suffix != ".py" and not p.exists():
        p = packaged(path)
    if not p.is_file():
        raise UserError(f"study config {spec!r} not found (looked for {p}; packaged: {', '.join(packaged_names())})")
    return p, (arg or None)


def load(spec: str) -> StudyConfig:
    """Load a study config file; any failure is a one-line UserError."""
    path, arg = resolve_path(spec)
    try:
        module_spec = importlib.util.spec_from_file_location(f"_study_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        get_config = getattr(module, "get_config", None)
        if get_config is None:
            raise UserError(f"study config {path} defines no get_config()")
        raw = get_config(arg) if arg is not None else get_config()
    except UserError:
        raise
    except Exception as e:  # a broken user file: say what and where, no traceback
        raise UserError(f"study config {path} failed to load: {type(e).__name__}: {e}") from None
    return from_raw(raw, default_name=path.stem, origin=str(path))


def from_raw(raw: Any, default_name: str = "study", origin: str = "config") -> StudyConfig:
    if isinstance(raw, StudyConfig):
        cfg = dataclasses.replace(raw)
    elif isinstance(raw, dict):
        names = {f.name for f in dataclasses.fields(StudyConfig)}
        unknown = set(raw) - names
        if unknown:
            raise UserError(f"{origin}: unknown study fields: {', '.join(sorted(unknown))}")
        cfg = StudyConfig(**{"name": default_name, **raw})
    else:
        raise UserError(f"{origin}: get_config() must return a dict or StudyConfig, got {type(raw).__name__}")
    return cfg


def apply_overrides(
    cfg: StudyConfig,
    families: str | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    data: str | None = None,
) -> StudyConfig:
    cfg = dataclasses.replace(cfg)
    if families is not None:
        cfg.families = [f.strip() for f in families.split(",") if f.strip()]
    if batch_size is not None:
        cfg.batch_size = batch_size
    if seed is not None:
        cfg.seeds = [seed]
    if data is not None:
        cfg.data_source = data
    return cfg


def trial_config(cfg: StudyConfig, model: str, **fields: Any):
    """The ``TrainConfig`` of a trial of ``model``: what every trial of the study shares
    (data, batch, dtype, ``train_overrides``) plus ``fields`` (epochs, seed, lr, ...).
    Calibration measures this same config, so it times the step the trials train."""
    from scaling.config import TrainConfig

    tc = TrainConfig(model=model, dataset=cfg.dataset, data_source=cfg.data_source, val_size=cfg.val_size,
                     image_size=cfg.image_size, batch_size=cfg.batch_size, compute_dtype=cfg.compute_dtype)
    return dataclasses.replace(tc, **{**cfg.train_overrides, **fields})


def check_models(cfg: StudyConfig) -> dict[str, list[str]]:
    """Each family's ladder (model names, smallest first); unknown names are user errors."""
    from scaling.models import registry

    known = registry.families()
    ladders = {}
    for fam in cfg.families:
        if fam not in known:
            raise UserError(f"unknown model family {fam!r}; known: {', '.join(known)}")
        names = cfg.ladders.get(fam) or [s.name for s in registry.ladder(fam)]
        for n in names:
            if registry.get(n).family != fam:
                raise UserError(f"model {n!r} in the {fam} ladder belongs to another family")
        if not names:
            raise UserError(f"family {fam!r} has no size ladder")
        ladders[fam] = list(names)
    return ladders

