"""Learning-curve forms beyond the saturating law, and their extrapolation on a curve's early part.

Forms of y (loss or error) against x (examples seen), fitted by least squares
on log y (Alabdulmohsin et al. 2022 judge them by extrapolation, in log space):

- ``saturating`` (their M2): y = E + A x^-alpha (the toolkit's default law,
  fitted by scaling.analysis.lawfit);
- ``m4`` (Alabdulmohsin et al. 2022): (y - eps_inf) / (eps_0 - y)^a = b x^-c,
  sigmoid-like in log x: a slow start near the random-guess level eps_0 and
  saturation at eps_inf; y is the root of a monotone equation, found by
  bisection; constraints eps_inf < min y, eps_0 > max y, a, c >= 0;
- ``broken`` (Caballero et al. 2022, one break): y = E + b x^-c0 (1 + (x/d)^(1/f))^(-c1 f),
  a power law whose exponent changes from c0 to c0 + c1 around x = d.

``select`` picks a form by held-out error on the largest-x points of the
fitted part (leave-last-points-out), not by in-sample fit. ``extrapolate``
fits the chosen form to a curve's early part and gives calibrated 95%
intervals at later x (scaling.analysis.intervals).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
from scipy.optimize import least_squares

from scaling.analysis import intervals
from scaling.analysis.lawfit import fit_law

FORMS = ("saturating", "m4", "broken")
HOLDOUT = 0.2  # share of the fitted points (largest x) held out by select and the back-test
_BISECT = 48


def _m4_predict(p, x):
    """y solving log(y - ei) - a log(e0 - y) = log b - c log x on (ei, e0), vectorised bisection."""
    log_b, c, a, ei, e0 = p
    rhs = log_b - c * np.log(x)
    lo, hi = np.full(len(x), ei), np.full(len(x), e0)
    for _ in range(_BISECT):
        mid = 0.5 * (lo + hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.log(mid - ei) - a * np.log(e0 - mid) - rhs
        up = g > 0
        hi = np.where(up, mid, hi)
        lo = np.where(up, lo, mid)
    return 0.5 * (lo + hi)


def _m4_jac(p, x, y):
    """d log y / d params by implicit differentiation of the M4 equation."""
    _, c, a, ei, e0 = p
    gy = 1 / (y - ei) + a / (e0 - y)
    dg = np.stack([-np.ones_like(x), np.log(x), -np.log(e0 - y), -1 / (y - ei), -a / (e0 - y)], 1)
    return -dg / gy[:, None] / y[:, None]


def _broken_predict(p, x):
    E, log_b, c0, c1, log_d, log_f = p
    f = np.exp(log_f)
    t = np.logaddexp(0.0, (np.log(x) - log_d) / f)  # log(1 + (x/d)^(1/f))
    return E + np.exp(log_b - c0 * np.log(x) - c1 * f * t)


def _broken_jac(p, x, y):
    E, log_b, c0, c1, log_d, log_f = p
    f, lx = np.exp(log_f), np.log(x)
    u = (lx - log_d) / f
    s, sig = np.logaddexp(0.0, u), 0.5 * (1 + np.tanh(u / 2))
    e_t = np.exp(log_b - c0 * lx - c1 * f * s)
    dT = np.stack([np.ones_like(x), -lx, -f * s, c1 * sig, -c1 * f * (s - sig * u)], 1)
    return np.concatenate([np.ones((len(x), 1)), e_t[:, None] * dT], 1) / y[:, None]


def _starts(form, x, y):
    ymin, ymax = float(y.min()), float(y.max())
    if form == "m4":
        for c, a, ei in itertools.product((0.3, 1.0), (0.5, 1.5), (0.0, 0.8 * ymin)):
            e0 = min(1.0, ymax + 0.5 * (1 - ymax)) if ymax < 1 else 1.5 * ymax
            e0 = max(e0, ymax + 1e-3)
            mid = np.median(np.log(x))
            ym = float(np.median(y))
            log_b = np.log(max(ym - ei, 1e-6)) - a * np.log(max(e0 - ym, 1e-6)) + c * mid
            yield np.array([log_b, c, a, ei, e0])
    else:
        lx = np.log(x)
        for c0, c1, q, e in itertools.product((0.1, 0.4), (0.5,), (0.3, 0.7), (0.0, 0.7)):
            E = e * ymin
            log_d = float(np.quantile(lx, q))
            log_b = np.log(max(float(np.median(y)) - E, 1e-6)) + c0 * float(np.median(lx))
            yield np.array([E, log_b, c0, c1, log_d, 0.0])


def _bounds(form, x, y):
    ymin, ymax = float(y.min()), float(y.max())
    if form == "m4":
        return ([-np.inf, 0.0, 0.0, 0.0, ymax + 1e-3], [np.inf, 10.0, 20.0, ymin - 1e-3, max(10 * ymax, 1.0)])
    lx = np.log(x)
    return ([0.0, -np.inf, 0.0, 0.0, lx.min() - 2, np.log(0.05)], [ymin * (1 - 1e-6), np.inf, 5.0, 5.0, lx.max() + 2, np.log(20.0)])


@dataclasses.dataclass
class CurveFit:
    form: str
    params: np.ndarray | dict
    law_fit: object = None  # the LawFit of the saturating form (with its bootstrap)

    def predict(self, x) -> np.ndarray:
        x = np.asarray(x, float)
        if self.form == "saturating":
            return np.exp(self.law_fit.log_predict({"compute": x}))
        return (_m4_predict if self.form == "m4" else _broken_predict)(self.params, x)

    def boot_log_predict(self, x) -> np.ndarray:
        if self.form == "saturating" and self.law_fit.boot_theta is not None:
            return self.law_fit.log_predict({"compute": np.asarray(x, float)}, boot=True)
        return np.zeros((0, len(np.atleast_1d(x))))


def fit_curve(form: str, x, y, n_boot: int = 0, seed: int = 0) -> CurveFit:
    """Fit one form to (x, y); only ``saturating`` carries a bootstrap (points resampled)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if form == "saturating":
        return CurveFit(form, None, fit_law("saturating", {"compute": x, "loss": y}, frontier=False,
                                             n_boot=n_boot, seed=seed, n_polish=4))
    pred, jac = (_m4_predict, _m4_jac) if form == "m4" else (_broken_predict, _broken_jac)
    lo, hi = _bounds(form, x, y)
    best = None
    for p0 in _starts(form, x, y):
        p0 = np.clip(p0, np.array(lo) + 1e-9, np.array(hi) - 1e-9)
        with np.errstate(all="ignore"):
            r = least_squares(lambda p: np.log(np.maximum(pred(p, x), 1e-12)) - np.log(y), p0,
                              jac=lambda p: np.nan_to_num(jac(p, x, pred(p, x))),
                              bounds=(lo, hi), max_nfev=200)
        if best is None or r.cost < best.cost:
            best = r
    return CurveFit(form, best.x)


def _split(x, holdout=HOLDOUT):
    """Mask of the early points (all but the largest-x ``holdout`` share, at least one held out)."""
    n_out = max(1, int(round(holdout * len(x))))
    cut = np.sort(x)[len(x) - n_out]
    return x < cut


def backtest(form: str, x, y) -> tuple[float | None, float | None]:
    """RMS log error predicting the largest-x points from the others, and that extrapolation ratio."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    early = _split(x)
    if early.sum() < 5:
        return None, None
    f = fit_curve(form, x[early], y[early])
    err = np.log(f.predict(x[~early])) - np.log(y[~early])
    return float(np.sqrt(np.mean(err**2))), float(x.max() / x[early].max())


def select(x, y, forms=FORMS) -> tuple[str, dict]:
    """The form with the lowest leave-last-points-out error, and every form's error."""
    errs = {f: backtest(f, x, y)[0] for f in forms}
    usable = {f: e for f, e in errs.items() if e is not None and np.isfinite(e)}
    return (min(usable, key=usable.get) if usable else "saturating"), errs


def extrapolate(form: str, x, y, x_new, n_boot: int = 100, seed: int = 0, backtest_err: float | None = None) -> dict:
    """Fit ``form`` on (x, y), predict at ``x_new``: point, bootstrap-only and calibrated 95% intervals.

    ``backtest_err`` overrides the form's own back-test error (``evaluate`` passes the largest
    of the candidate forms' errors after a selection: the winner's own error is optimistic).
    """
    f = fit_curve(form, x, y, n_boot=n_boot, seed=seed)
    x_new = np.asarray(x_new, float)
    pred = f.predict(x_new)
    boot = f.boot_log_predict(x_new)
    naive = intervals.calibrated(np.log(pred), boot, None, None, x_new / np.max(x))
    err, ratio = backtest(form, x, y)
    if backtest_err is not None and err is not None:
        err = max(err, backtest_err)
    cal = intervals.calibrated(np.log(pred), boot, err, ratio, x_new / np.max(x))
    return {"pred": pred, "bootstrap": naive, "calibrated": cal, "backtest": (err, ratio)}


def load_csv(path) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """Curves of a table with columns task, model, examples, loss, training (1: fitted part, 0: held out)."""
    import csv
    import collections

    rows = collections.defaultdict(list)
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            rows[(r["task"], r["model"])].append((float(r["examples"]), float(r["loss"]), int(r["training"])))
    out = {}
    for key, pts in rows.items():
        a = np.array(sorted(pts))
        fit = a[:, 2] == 1
        out[key] = {"x": a[fit, 0], "y": a[fit, 1], "x_test": a[~fit, 0], "y_test": a[~fit, 1]}
    return out


def evaluate(curves: dict, form: str | None = None, n_boot: int = 100) -> dict:
    """Per curve: median |relative error| on its held-out points and the share inside each 95% interval.

    ``form`` None selects the form per curve (``select``), and its interval takes the largest of
    the candidates' back-test errors. Returns lists per metric and the forms used.
    """
    out = {"median_rel_error": [], "coverage_bootstrap": [], "coverage_calibrated": [], "form": []}
    for i, c in enumerate(curves.values()):
        worst = None
        if form is None:
            f, errs = select(c["x"], c["y"])
            worst = max((e for e in errs.values() if e is not None and np.isfinite(e)), default=None)
        else:
            f = form
        o = extrapolate(f, c["x"], c["y"], c["x_test"], n_boot=n_boot, seed=i, backtest_err=worst)
        yt = c["y_test"]
        out["median_rel_error"].append(float(np.median(np.abs(o["pred"] / yt - 1))))
        for kind in ("bootstrap", "calibrated"):
            lo, hi = o[kind]
            out[f"coverage_{kind}"].append(float(np.mean((yt >= lo) & (yt <= hi))))
        out["form"].append(f)
    return out
