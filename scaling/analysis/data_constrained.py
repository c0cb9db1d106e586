"""The data-constrained law (Muennighoff et al. 2023): repeated data is worth less than fresh data.

    L(N, D, U) = E + A / N'^alpha + B / D'^beta
    D' = U_D + U_D R_D* (1 - exp(-R_D / R_D*)),   U_D = min(U, D),  R_D = D / U_D - 1
    N' = U_N + U_N R_N* (1 - exp(-R_N / R_N*)),   U_N = min(N, N_opt(U_D)),  R_N = N / U_N - 1

D is the examples seen, U the unique examples (the training-set size for
this toolkit's runs), R_D the repeated epochs; R_D* is the "half-life" of a
repeated example's value (published 15.4 tokens-epochs for LMs) and R_N* the
same for parameters beyond the compute-optimal size N_opt(U_D) =
G (G U_D)^(beta/alpha) of the parametric law for U_D examples,
G = (alpha A / (beta B))^(1/(alpha+beta)). With no repetition and N <= N_opt
it is the parametric law.

Fitted like the parametric law (analysis.fitting: Huber on log residuals,
multi-start L-BFGS-B, bootstrap): internally a, b, e are the log terms at the
data's centre, and R_D*, R_N* enter as logs. The Jacobian is by central
differences (the min() in U_N has no useful closed form).
"""

from __future__ import annotations

import itertools

import numpy as np

from scaling.analysis.laws import LAWS, Features, Law, _e_grid, _e_upper, _parametric_public, _scale_grid

_LOG_R = (np.log(0.1), np.log(1e4))  # bounds of log R_D*, log R_N*
_FD_STEP = 1e-6


def _features(columns: dict) -> Features:
    """u: (centred log N, centred log D, log U_D - centre of log D, log N, log U_D); centre (log N, log D)."""
    n, d = (np.log(np.asarray(columns[c], float)) for c in ("params", "examples"))
    u_d = np.minimum(np.log(np.asarray(columns["unique_examples"], float)), d)
    centre = np.array([n.mean(), d.mean()])
    u = np.stack([n - centre[0], d - centre[1], u_d - centre[1], n, u_d], 1)
    return Features(u, centre, np.log(np.asarray(columns["loss"], float)))


def core(log_a, log_b, log_e, alpha, beta, r_d, r_n, log_n, log_d, log_u):
    """log L from public parameters (log A, log B, log E, ...) and absolute log inputs; all broadcast."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_u = np.minimum(log_u, log_d)
        rep_d = np.expm1(log_d - log_u)
        log_dp = log_u + np.log1p(r_d * -np.expm1(-rep_d / r_d))
        al, be = np.maximum(alpha, 1e-8), np.maximum(beta, 1e-8)
        log_g = (np.log(al) + log_a - np.log(be) - log_b) / (al + be)
        log_nopt = log_g + (be / al) * (log_u + log_g)
        log_un = np.minimum(log_n, log_nopt)
        rep_n = np.expm1(log_n - log_un)
        log_np = log_un + np.log1p(r_n * -np.expm1(-rep_n / r_n))
        t1, t2 = log_a - alpha * log_np, log_b - beta * log_dp
        return np.logaddexp(np.logaddexp(t1, t2), log_e)


def _internal(theta, u):
    """log L for internal theta (B, 7) = (a, b, e, alpha, beta, log R_D*, log R_N*) on features u."""
    c_n = u[0, 3] - u[0, 0]  # the centres, from the absolute columns
    c_d = u[0, 4] - u[0, 2]
    a, b, e, al, be, lrd, lrn = (theta[:, i : i + 1] for i in range(7))
    log_d = u[None, :, 1] + c_d
    return core(a + al * c_n, b + be * c_d, e, al, be, np.exp(lrd), np.exp(lrn), u[None, :, 3], log_d, u[None, :, 4])


def _predict(theta, u, jac=True):
    theta = np.atleast_2d(theta)
    pred = _internal(theta, u)
    if not jac:
        return pred, None
    cols = []
    for j in range(theta.shape[1]):
        step = np.zeros_like(theta)
        step[:, j] = _FD_STEP
        cols.append((_internal(theta + step, u) - _internal(theta - step, u)) / (2 * _FD_STEP))
    return pred, np.nan_to_num(np.stack(cols, -1))


def _grid(f: Features) -> np.ndarray:
    exps = [0.1, 0.35, 0.7, 1.2]
    rs = np.log([3.0, 15.0, 80.0])
    return np.array([
        (a, b, e, al, be, rd, rn)
        for al, be, e, a, b, rd, rn in itertools.product(exps, exps, _e_grid(f), _scale_grid(f), _scale_grid(f), rs, rs)
    ])


def _public(theta, centre):
    """The parametric law's public parameters plus the two repetition half-lives."""
    lrd, lrn = theta[..., 5], theta[..., 6]
    return {**_parametric_public(theta[..., :5], centre), "R_D_star": np.exp(lrd), "R_N_star": np.exp(lrn)}


def _public_log_predict(p: dict, columns: dict) -> np.ndarray:
    x = {c: np.log(np.asarray(columns[c], float))[None, :] for c in ("params", "examples", "unique_examples")}
    return core(np.log(p["A"]), np.log(p["B"]), np.log(p["E"]), p["alpha"], p["beta"], p["R_D_star"], p["R_N_star"],
                x["params"], x["examples"], x["unique_examples"])


DATA_CONSTRAINED = Law(
    name="data-constrained",
    inputs=("params", "examples", "unique_examples"),
    internal=("a", "b", "e", "alpha", "beta", "log_R_D_star", "log_R_N_star"),
    public=("E", "A", "B", "alpha", "beta", "R_D_star", "R_N_star"),
    predict=_predict,
    grid=_grid,
    bounds=lambda f: [(None, None), (None, None), (_e_upper(f) - 20.0, _e_upper(f)), (0.0, 5.0), (0.0, 5.0), _LOG_R, _LOG_R],
    to_public=_public,
    bound_kinds={"alpha": ("exponent", 0), "beta": ("exponent", 1), "e": ("floor", "E")},
    make_features=_features,
    public_log_predict=_public_log_predict,
)
LAWS[DATA_CONSTRAINED.name] = DATA_CONSTRAINED
