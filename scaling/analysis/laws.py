"""Functional forms of the scaling laws, written in log space.

Each law predicts ``log L`` from log-transformed inputs and gives the
Jacobian, so that fits minimise a robust loss on log residuals with an
analytic gradient (Chinchilla Approach 3; Besiroglu et al. 2024).

Inputs are centred internally (``u = log x - mean(log x)``) because it makes
the optimisation well conditioned and the start grid independent of the units
of ``x`` (FLOPs or accelerator-hours). Public parameters are always reported
in the user's units:

- ``power``:       L = a * C^b                     (internal: a0=log a at the centre, b)
- ``saturating``:  L = E + A * C^(-alpha)          (internal: LSE(a - alpha*u, e))
- ``parametric``:  L = E + A/N^alpha + B/D^beta    (internal: LSE(a - alpha*u, b - beta*v, e))

Positive scales are exponents of free parameters (A = e^a) and sums of terms
use log-sum-exp, as in Chinchilla's parameterisation.

Start grids. Chinchilla's grid (alpha, beta in {0, 0.5, ..., 2}, e in
{-1, ..., 1}, a, b in {0, 5, ..., 25}) is written in absolute language-model
units. ``parametric`` keeps its exponent grid verbatim but places e, a and b
relative to the observed losses (fractions of min L, and of the median L at
the centre of the data), so that one grid works for any loss scale and any
N, D range. ``saturating`` uses a log-spaced exponent grid because exponents
against compute are small (0.05-0.3 in vision, fitting-methods.md section 4).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Features:
    """Centred log inputs of one data set (columns of ``u``) and their centres."""

    u: np.ndarray  # (n, d)
    centre: np.ndarray  # (d,)
    log_y: np.ndarray  # (n,)


@dataclasses.dataclass(frozen=True)
class Law:
    name: str
    inputs: tuple[str, ...]  # which columns feed the law, e.g. ("compute",)
    internal: tuple[str, ...]
    public: tuple[str, ...]
    # theta (B, k), u (n, d) -> log prediction (B, n), Jacobian (B, n, k) (None if jac=False)
    predict: Callable[..., tuple[np.ndarray, np.ndarray | None]]
    grid: Callable[[Features], np.ndarray]
    bounds: Callable[[Features], list[tuple[float | None, float | None]]]
    to_public: Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]
    # internal parameters with a meaningful bound (scaling.analysis.bounds): ("exponent", input column,
    # its term's scale),
    # ("floor", public name) for e = log E in (log min L - 20, log min L), ("scale", public name)
    # for the log scale of a term (bound: scale 0, the term removed)
    bound_kinds: dict[str, tuple] = dataclasses.field(default_factory=dict)
    # laws whose inputs are not a plain centred log of each column (scaling.analysis.data_constrained)
    make_features: Callable[[dict], Features] | None = None
    public_log_predict: Callable[[dict, dict], np.ndarray] | None = None

    def features(self, columns: dict[str, np.ndarray]) -> Features:
        if self.make_features is not None:
            return self.make_features(columns)
        logs = np.stack([np.log(np.asarray(columns[c], float)) for c in self.inputs], 1)
        centre = logs.mean(0)
        return Features(logs - centre, centre, np.log(np.asarray(columns["loss"], float)))

    def log_predict_public(self, params: dict, columns: dict[str, np.ndarray]) -> np.ndarray:
        """log L at new inputs from public parameters (arrays broadcast: (B,) x (n,) -> (B, n))."""
        p = {k: np.asarray(v, float)[..., None] for k, v in params.items()}
        if self.public_log_predict is not None:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                return self.public_log_predict(p, columns)
        x = [np.log(np.asarray(columns[c], float))[None, :] for c in self.inputs]
        # E = 0 (a floor at its bound) is log E = -inf; unusable bootstrap rows are nan
        with np.errstate(divide="ignore", invalid="ignore"):
            return self._log_predict(p, x)

    def _log_predict(self, p: dict, x: list) -> np.ndarray:
        if self.name == "power":
            return np.log(p["a"]) + p["b"] * x[0]
        if self.name == "saturating":
            return np.logaddexp(np.log(p["A"]) - p["alpha"] * x[0], np.log(p["E"]))
        terms = [np.log(p["A"]) - p["alpha"] * x[0], np.log(p["B"]) - p["beta"] * x[1]]
        return np.logaddexp(np.logaddexp(terms[0], terms[1]), np.log(p["E"]))


def _softmax_terms(terms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log-sum-exp over the last axis and the softmax weights (its gradient)."""
    m = terms.max(-1, keepdims=True)
    z = np.exp(terms - m)
    s = z.sum(-1, keepdims=True)
    return (m + np.log(s))[..., 0], z / s


# ---- power: log L = a0 + b*u ------------------------------------------------


def _power_predict(theta, u, jac=True):
    u0 = u[:, 0]
    pred = theta[:, :1] + theta[:, 1:2] * u0
    if not jac:
        return pred, None
    jac = np.stack([np.ones_like(pred), np.broadcast_to(u0, pred.shape)], -1)
    return pred, jac


def _power_grid(f: Features) -> np.ndarray:
    a0 = np.median(f.log_y)
    return np.array([[a0 + da, b] for da in (-0.5, 0.0, 0.5) for b in (-1.0, -0.3, -0.1, 0.0, 0.3)])


def _power_public(theta, centre):
    return {"a": np.exp(theta[:, 0] - theta[:, 1] * centre[0]), "b": theta[:, 1]}


POWER = Law(
    name="power",
    inputs=("compute",),
    internal=("a0", "b"),
    public=("a", "b"),
    predict=_power_predict,
    grid=_power_grid,
    bounds=lambda f: [(None, None), (-10.0, 10.0)],
    to_public=_power_public,
)


# ---- saturating: log L = LSE(a - alpha*u, e) ---------------------------------


def _saturating_predict(theta, u, jac=True):
    u0 = u[None, :, 0]
    a, alpha, e = (theta[:, i : i + 1] for i in range(3))
    if not jac:
        return np.logaddexp(a - alpha * u0, e), None
    terms = np.stack(np.broadcast_arrays(a - alpha * u0, e + 0 * u0), -1)
    pred, p = _softmax_terms(terms)
    jac = np.stack([p[..., 0], -u0 * p[..., 0], p[..., 1]], -1)
    return pred, jac


def _e_grid(f: Features) -> np.ndarray:
    return f.log_y.min() + np.log([0.05, 0.3, 0.6, 0.85, 0.97])


def _scale_grid(f: Features) -> np.ndarray:
    return np.median(f.log_y) + np.log([0.03, 0.15, 0.5, 1.0])


def _saturating_grid(f: Features) -> np.ndarray:
    alphas = [0.05, 0.1, 0.2, 0.4, 0.8, 1.6]
    return np.array(list(itertools.product(_scale_grid(f), alphas, _e_grid(f))))


def _saturating_public(theta, centre):
    a, alpha, e = theta.T
    return {"E": np.exp(e), "A": np.exp(a + alpha * centre[0]), "alpha": alpha}


def _e_upper(f: Features) -> float:
    """E must stay below the smallest observed loss (fitting-methods.md section 9)."""
    return float(f.log_y.min())


SATURATING = Law(
    name="saturating",
    inputs=("compute",),
    internal=("a", "alpha", "e"),
    public=("E", "A", "alpha"),
    predict=_saturating_predict,
    grid=_saturating_grid,
    bounds=lambda f: [(None, None), (0.0, 5.0), (_e_upper(f) - 20.0, _e_upper(f))],
    to_public=_saturating_public,
    bound_kinds={"a": ("scale", "A"), "alpha": ("exponent", 0, "a"), "e": ("floor", "E")},
)


# ---- parametric: log L = LSE(a - alpha*u, b - beta*v, e) ---------------------


def _parametric_predict(theta, u, jac=True):
    uu, vv = u[None, :, 0], u[None, :, 1]
    a, b, e, alpha, beta = (theta[:, i : i + 1] for i in range(5))
    if not jac:
        return np.logaddexp(np.logaddexp(a - alpha * uu, b - beta * vv), e), None
    terms = np.stack(np.broadcast_arrays(a - alpha * uu, b - beta * vv, e + 0 * uu), -1)
    pred, p = _softmax_terms(terms)
    jac = np.stack([p[..., 0], p[..., 1], p[..., 2], -uu * p[..., 0], -vv * p[..., 1]], -1)
    return pred, jac


def _parametric_grid(f: Features) -> np.ndarray:
    exps = [0.0, 0.5, 1.0, 1.5, 2.0]  # Chinchilla's exponent grid
    scales = _scale_grid(f)
    return np.array(
        [(a, b, e, al, be) for al, be, e, a, b in itertools.product(exps, exps, _e_grid(f), scales, scales)]
    )


def _parametric_public(theta, centre):
    a, b, e, alpha, beta = theta.T
    return {
        "E": np.exp(e),
        "A": np.exp(a + alpha * centre[0]),
        "B": np.exp(b + beta * centre[1]),
        "alpha": alpha,
        "beta": beta,
    }


PARAMETRIC = Law(
    name="parametric",
    inputs=("params", "examples"),
    internal=("a", "b", "e", "alpha", "beta"),
    public=("E", "A", "B", "alpha", "beta"),
    predict=_parametric_predict,
    grid=_parametric_grid,
    bounds=lambda f: [(None, None), (None, None), (_e_upper(f) - 20.0, _e_upper(f)), (0.0, 5.0), (0.0, 5.0)],
    to_public=_parametric_public,
    bound_kinds={
        "a": ("scale", "A"), "b": ("scale", "B"),
        "alpha": ("exponent", 0, "a"), "beta": ("exponent", 1, "b"), "e": ("floor", "E"),
    },
)

LAWS: dict[str, Law] = {law.name: law for law in (POWER, SATURATING, PARAMETRIC)}
