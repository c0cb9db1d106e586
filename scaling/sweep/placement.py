"""Adaptive placement: a first wave on the diagonal band, then trials where they narrow the allocation most.

``placement="adaptive"`` in a study config. The study runs in two waves:

1. The band planner (``scaling.sweep.planner.plan``) on ``adaptive_first_wave``
   of the budget (half by default): a cheap, broad first look.
2. When every first-wave trial has finished, each family's parametric law
   L = E + A/N^alpha + B/D^beta is refitted to the first wave's cells with the
   toolkit's fitter and its bootstrap (``scaling.analysis.lawfit.fit_law``), and
   the rest of the budget is placed greedily, each step taking the candidate
   with the largest expected reduction of the variance of the allocation
   exponent a = beta/(alpha+beta) per accelerator-hour (a sequential design
   on the jackknife variance, linearised at the point fit and at bootstrap
   draws and averaged over them, so an uncertain fit does not steer the
   design by one guess; see ``Criterion``).
   Candidates: any (size, epoch budget) cell of the config's grid not yet
   trained, with the two lr trials a new epoch budget needs (no extra seeds:
   the fitter averages a cell's seeds into one row, so they narrow no interval
   as much as a new cell). Before the greedy step, explicit rules:

   - the fitted optimum (N* or epochs* at the largest compute trained) lies
     beyond the largest sampled size or epoch budget: the cheapest cell one
     step beyond that edge is placed first (when the config's grid has one);
   - the best lr of an epoch budget is the highest one tried there: one more
     lr trial at twice it is placed (and again while the new one wins), and
     the budget's later trials take the best of the extended grid.

The plan stays a pure function of the records and the budget: the second
wave is computed from the first wave's results only (memoised), so every
re-plan, and a re-run after a kill, places the same trials; trials already
started are kept. The first wave's spend excludes adaptively placed trials,
so it is planned the same however far the second wave has got.
"""

from __future__ import annotations

import collections
import dataclasses
import math

import numpy as np

from scaling.sweep import lr as lrrule
from scaling.sweep import planner
from scaling.sweep.planner import FILL_MARGIN, Context, Plan, Trial, trial_id

ROLE, TUNE_ROLE = "adapt", "adapt-tune"
N_BOOT = 64  # bootstrap resamples of the wave-one fit
DRAWS = 8  # bootstrap draws the design criterion is averaged over (plus the point fit)
_FITS: dict = {}  # memo: (family, first-wave cells) -> FamilyFit


def is_adaptive(t: Trial) -> bool:
    return t.role in (ROLE, TUNE_ROLE)


@dataclasses.dataclass
class FamilyFit:
    """The parametric law fitted to one family's first wave, and what the placement reads off it."""

    lawfit: object  # scaling.analysis.lawfit.LawFit
    exponent: float  # a = beta / (alpha + beta): N* ~ C^a, epochs* ~ C^(1-a)
    ci95: tuple[float, float]
    n_star: float  # at the largest compute of the first wave
    epochs_star: float
    k: float  # C = k N D, compute in the study's x (accelerator-hours)

    def summary(self) -> dict:
        lo, hi = self.ci95
        return {"n_star_exponent": self.exponent, "n_star_ci95": [lo, hi],
                "epochs_star_exponent": 1 - self.exponent, "epochs_star_ci95": [1 - hi, 1 - lo],
                "width": hi - lo, "n_star_at_top": self.n_star, "epochs_star_at_top": self.epochs_star}


def result_columns(rows: list[dict]) -> dict[str, np.ndarray]:
    """Analysis columns of finished trials (result.json dicts): accelerator-hours as compute."""
    def num(key, fallback=None):
        return np.array([float(r.get(key) if r.get(key) is not None else fallback(r)) for r in rows])

    cols = {
        "compute": num("accelerator_hours"),
        "loss": num("val_loss"),
        "params": num("params"),
        "epochs": num("epochs"),
        "examples": num("examples_seen", lambda r: r["epochs"] * r["train_size"]),
        "lr": num("lr"),
        "seed": num("seed", lambda r: 0),
    }
    for key in ("family", "model"):
        cols[key] = np.array([str(r.get(key, "")) for r in rows], dtype=object)
    return cols


def cells_of(rows: list[dict]):
    """The analysis table of ``rows`` with one row per cell (seeds averaged, best lr kept)."""
    from scaling.analysis import cells
    from scaling.analysis.records import Table

    return cells.collapse(Table(result_columns(rows), collections.Counter(), {"study"}))


def usable(r: dict) -> bool:
    v = r.get("val_loss")
    return r.get("status", "done") == "done" and isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def fit_family(rows: list[dict], n_boot: int = N_BOOT) -> FamilyFit | None:
    """Parametric fit with bootstrap to one family's finished runs; None with fewer than 6 cells."""
    from scaling.analysis import allocation
    from scaling.analysis.bootstrap import percentile_ci
    from scaling.analysis.lawfit import fit_law

    rows = [r for r in rows if usable(r)]
    if not rows:
        return None
    table = cells_of(rows)
    c = table.columns
    if len(table) < 6 or len(np.unique(c["params"])) < 2 or len(np.unique(c["epochs"])) < 2:
        return None
    lf = fit_law("parametric", c, frontier=False, n_boot=n_boot, seed=0)
    p, bp = lf.params, lf.boot_params()
    s = p["alpha"] + p["beta"]
    a = p["beta"] / s if s > 0 else float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        a_boot = bp["beta"] / (bp["alpha"] + bp["beta"]) if bp else np.array([])
    k, _ = allocation.cost_constant(c["compute"], c["params"], c["examples"])
    n_star, d_star = allocation.parametric_optimum(p, float(c["compute"].max()), k)
    train_size = float(np.median(c["examples"] / c["epochs"]))
    return FamilyFit(lf, float(a), percentile_ci(a_boot), float(n_star.ravel()[0]),
                     float(d_star.ravel()[0] / train_size), k)


def _memo_fit(fam: str, rows: list[dict]) -> FamilyFit | None:
    key = (fam, tuple(sorted((r.get("id", ""), r.get("val_loss"), r.get("params"), r.get("epochs"),
                              r.get("accelerator_hours"), r.get("lr")) for r in rows)))
    if key not in _FITS:
        if len(_FITS) > 64:
            _FITS.clear()
        _FITS[key] = fit_family(rows)
    return _FITS[key]


# ---- the design criterion --------------------------------------------------------------


def _draws(ff: FamilyFit) -> np.ndarray:
    """Internal parameter vectors to linearise at: the point fit and up to DRAWS bootstrap draws."""
    lf = ff.lawfit
    rows = [lf.fit.theta]
    if lf.boot_theta is not None:
        ok = lf.boot_theta[np.isfinite(lf.boot_theta).all(1)]
        if len(ok):
            rows += list(ok[np.linspace(0, len(ok) - 1, min(DRAWS, len(ok))).astype(int)])
    return np.array(rows)


class Criterion:
    """Expected relative variance reduction of a = beta/(alpha+beta) from new design points.

    The variance is the jackknife's (the HC3 sandwich, sum_i (g' I^-1 j_i)^2 / (1 - h_i)^2 with
    h_i the leverage of cell i), not the plain c-optimal g' I^-1 g: the reported intervals are a
    bootstrap over cells, and a lone far cell that the bootstrap leaves out of a third of its
    resamples widens them, which only the leverage term sees.
    """

    def __init__(self, ff: FamilyFit, train_size: float):
        self.law, self.feats, self.train_size = ff.lawfit.law, ff.lawfit.fit.feats, train_size
        self.theta = _draws(ff)
        self.points: list[tuple[float, float, float]] = []  # (params, epochs, weight)

    def _u(self, pts) -> np.ndarray:
        x = np.log([[n, e * self.train_size] for n, e, _ in pts])
        return x - self.feats.centre

    @staticmethod
    def _var(j: np.ndarray, g: np.ndarray) -> float:
        info = j.T @ j
        info += np.eye(len(g)) * (1e-9 * np.trace(info) + 1e-12)
        inv = np.linalg.inv(info)
        infl = j @ (inv @ g)
        h = np.einsum("nk,kl,nl->n", j, inv, j)
        return float(np.sum(infl**2 / np.maximum(1 - h, 1e-3) ** 2))

    def gains(self, candidates: list[list[tuple[float, float, float]]]) -> np.ndarray:
        """Mean over draws of the relative reduction of the jackknife variance of a per candidate."""
        flat = [p for pts in candidates for p in pts]
        owner = np.repeat(np.arange(len(candidates)), [len(pts) for pts in candidates])
        total, used = np.zeros(len(candidates)), 0
        for th in self.theta:
            al, be = th[3], th[4]
            if not al + be > 0 or not flat:
                continue
            g = np.zeros(len(th))
            g[3], g[4] = -be / (al + be) ** 2, al / (al + be) ** 2
            _, j0 = self.law.predict(th[None], self._u(self.points))
            _, jc = self.law.predict(th[None], self._u(flat))
            j0, jc = j0[0], jc[0]
            base = self._var(j0, g)
            if not (np.isfinite(base) and base > 0):
                continue
            used += 1
            for c in range(len(candidates)):
                total[c] += (base - self._var(np.vstack([j0, jc[owner == c]]), g)) / base
        return total / max(used, 1)


# ---- the plan --------------------------------------------------------------------------


def plan(ctx: planner.Context, budget: float, spent: float, carried: list[Trial], started: bool = False) -> Plan:
    """The adaptive plan (see the module docstring): wave one, then the placed wave two."""
    cfg = ctx.cfg
    first = cfg.adaptive_first_wave * budget
    wave1_carried = [t for t in carried if not is_adaptive(t)]
    # adaptive trials started or finished (a finished one's Trial is kept in its result's "trial")
    adapt_carried = planner._dedupe([t for t in carried if is_adaptive(t)] + [
        Trial(**r["trial"]) for r in ctx.results.values() if r.get("role") in (ROLE, TUNE_ROLE) and r.get("trial")])
    p1 = planner.plan(ctx, first, spent - ctx.adapt_hours, wave1_carried, started)
    if not p1.feasible:
        return dataclasses.replace(p1, budget=budget, minimum_budget=p1.minimum_budget / cfg.adaptive_first_wave,
                                   notes=p1.notes + ["adaptive: the first wave is this share of the budget: "
                                                     f"{cfg.adaptive_first_wave:g}"])
    done = set(ctx.results)
    pending = [t for t in p1.trials if t.id not in done]
    notes = [f"adaptive: first wave = band on {cfg.adaptive_first_wave:.0%} of the budget"] + p1.notes
    if pending:
        trials = planner._dedupe(p1.trials + adapt_carried)
        planner._price_trials(ctx, adapt_carried)
        notes.append(f"adaptive: {len(pending)} first-wave trials to finish before the rest is placed")
        return Plan(True, budget, cfg.plan_fraction * budget, spent, trials, p1.extents, p1.minimum_budget, notes)

    fits: dict[str, FamilyFit | None] = {}
    for fam in cfg.families:
        rows = [dict(r, id=i) for i, r in ctx.results.items()
                if r.get("family") == fam and r.get("role") not in (ROLE, TUNE_ROLE)]
        fits[fam] = _memo_fit(fam, rows)
    have = planner._dedupe(p1.trials + adapt_carried)
    room = cfg.fill_fraction * budget - spent - planner._price_trials(ctx, adapt_carried)
    new, why = place(ctx, fits, have, room)
    notes += why
    summaries = {f: ff.summary() for f, ff in fits.items() if ff is not None}
    return Plan(True, budget, cfg.plan_fraction * budget, spent, have + new, p1.extents, p1.minimum_budget,
                notes, fits=summaries)


@dataclasses.dataclass
class _Cand:
    family: str
    trials: list[Trial]
    points: list[tuple[float, float, float]]  # (params, epochs, weight) added to the design
    cost: float
    forced: str = ""  # why an edge rule places it first


def place(ctx: planner.Context, fits: dict, have: list[Trial], room: float) -> tuple[list[Trial], list[str]]:
    """Greedy second wave within ``room`` hours; returns the new trials and notes saying why."""
    cfg = ctx.cfg
    params = _params_of(ctx)
    train_size = _train_size(ctx)
    trials = list(have)
    new: list[Trial] = []
    notes: list[str] = []
    crit = {}
    for fam, ff in fits.items():
        if ff is None:
            notes.append(f"adaptive: {fam}: first wave too small for a parametric fit (6 cells, 2 sizes, "
                         "2 epoch budgets): the rest of the budget extends the band")
            continue
        c = Criterion(ff, train_size)
        c.points = _design_points(trials, fam, params)
        crit[fam] = c
        lo, hi = ff.ci95
        notes.append(f"adaptive: {fam}: N* exponent {ff.exponent:.3g} (95% CI [{lo:.3g}, {hi:.3g}], "
                     f"width {hi - lo:.3g}) from the first wave")
    # lr rule: extend the grid upwards where the best lr is the highest tried
    for fam in crit:
        for t in _lr_extensions(ctx, trials, fam):
            cost = planner._price_trials(ctx, [t])
            if cost * (1 + FILL_MARGIN) <= room - sum(x.predicted_hours for x in new):
                new.append(t)
                trials.append(t)
                crit[fam].points.append((params[t.model], t.epochs, 1.0))
                notes.append(f"adaptive: {fam}: best lr at {t.epochs:g} epochs is the highest tried: trying 2x")
    forced_done: set[str] = set()
    while True:
        left = room - sum(t.predicted_hours for t in new)
        cands = [c for fam in crit for c in _candidates(ctx, trials, fam, params, fits[fam])]
        cands = [c for c in cands if c.trials and c.cost * (1 + FILL_MARGIN) <= left + 1e-15]
        if not cands:
            break
        forced = [c for c in cands if c.forced and c.forced not in forced_done]
        if forced:
            pick = min(forced, key=lambda c: c.cost)
            forced_done.add(pick.forced)
            notes.append(f"adaptive: {pick.family}: {pick.forced}")
        else:
            scores = []
            for fam in crit:
                mine = [c for c in cands if c.family == fam]
                if mine:
                    g = crit[fam].gains([c.points for c in mine])
                    scores += [(gi / max(c.cost, 1e-12), c) for gi, c in zip(g, mine)]
            pick = max(scores, key=lambda s: s[0])[1]
        new += pick.trials
        trials += pick.trials
        if pick.family in crit:
            crit[pick.family].points += pick.points
    if new:
        notes.append(f"adaptive: second wave of {len(new)} trials ({sum(t.predicted_hours for t in new):.4g} h)")
    return new, notes


def _params_of(ctx: planner.Context) -> dict[str, float]:
    """Parameters per model: calibration's (``ctx.params``), else a finished trial's record."""
    out = {r["model"]: float(r["params"]) for r in ctx.results.values() if r.get("model") and r.get("params")}
    return {**out, **ctx.params}


def _train_size(ctx: planner.Context) -> float:
    sizes = [r["examples_seen"] / r["epochs"] for r in ctx.results.values()
             if r.get("examples_seen") and r.get("epochs")]
    return float(np.median(sizes)) if sizes else 45_000.0


def _design_points(trials: list[Trial], fam: str, params: dict) -> list[tuple[float, float, float]]:
    """One point per planned cell of ``fam`` (the fitter sees one row per cell: seeds are averaged)."""
    cells = {(t.model, t.epochs) for t in trials if t.family == fam}
    return [(params[m], e, 1.0) for m, e in sorted(cells)]


def _tune_ids(trials: list[Trial], fam: str, j: int) -> tuple[int, list[str]]:
    """(size rank, ids) of the lr trials of epoch budget ``j`` (first wave's and adaptive ones)."""
    ts = [t for t in trials if t.family == fam and t.epoch_rank == j and t.role in ("tune", TUNE_ROLE)]
    return (ts[0].size_rank if ts else 0), [t.id for t in ts]


def _lr_extensions(ctx, trials: list[Trial], fam: str) -> list[Trial]:
    """A trial at 2x the best lr of each epoch budget whose best finished lr is its highest tried."""
    out = []
    res = ctx.results
    for j in sorted({t.epoch_rank for t in trials if t.family == fam}):
        i0, ids = _tune_ids(trials, fam, j)
        fin = [i for i in ids if i in res and res[i].get("lr") is not None]
        if len(fin) < 2 or len(fin) < len(ids):
            continue
        best = lrrule.best_lr(res, fin)
        if best < max(res[i]["lr"] for i in fin) * (1 - 1e-9):
            continue
        m, e = ctx.ladders[fam][i0], ctx.cfg.epochs[j]
        n = sum(1 for i in ids if "-lrup" in i) + 1
        out.append(Trial(trial_id(m, e, f"lrup{n}", ctx.cfg.seeds[0]), fam, m, i0, e, j, ctx.cfg.seeds[0],
                         TUNE_ROLE, lrrule.fixed(2 * best)))
    return out


def _candidates(ctx, trials: list[Trial], fam: str, params: dict, ff: FamilyFit | None) -> list[_Cand]:
    cfg, ladder = ctx.cfg, ctx.ladders[fam]
    have_ids = {t.id for t in trials}
    mine = [t for t in trials if t.family == fam]
    cells = collections.defaultdict(set)
    for t in mine:
        cells[(t.size_rank, t.epoch_rank)].add(t.seed)
    tuned = {j for j in range(len(cfg.epochs)) if _tune_ids(trials, fam, j)[1]}
    max_i = max(i for i, _ in cells)
    max_j = max(j for _, j in cells)
    out = []
    for i in range(len(ladder)):
        for j in range(len(cfg.epochs)):
            m, e = ladder[i], cfg.epochs[j]
            new: list[Trial] = []
            pts: list[tuple[float, float, float]] = []
            if j in tuned:
                i0, ids = _tune_ids(trials, fam, j)
                rule = lrrule.best_of(ids, cfg.lr_size_factor ** (i - i0))
            else:  # a new epoch budget: its two lr trials on the smallest model, from the nearest tuned one
                ref = max((x for x in tuned if x < j), default=None)
                up = ref is None
                ref = min(tuned) if up else ref
                _, ref_ids = _tune_ids(trials, fam, ref)
                mults = (1.0, 2.0) if up else (1.0, 0.5)
                tune = [Trial(trial_id(ladder[0], e, f"adlr{mu:g}x", cfg.seeds[0]), fam, ladder[0], 0, e, j,
                              cfg.seeds[0], TUNE_ROLE, lrrule.best_of(ref_ids, mu)) for mu in mults]
                new += tune
                pts.append((params[ladder[0]], e, 1.0))
                rule = lrrule.best_of([t.id for t in tune], cfg.lr_size_factor ** i)
                if i == 0:  # the lr trials are the cell
                    new += [Trial(trial_id(m, e, "adbest", s), fam, m, i, e, j, s, ROLE, rule) for s in cfg.seeds[1:]]
            if (i, j) in cells:  # trained already (an extra seed adds no row to the fit: seeds are averaged)
                continue
            if not (i == 0 and j not in tuned):
                new += [Trial(trial_id(m, e, "adbest", s), fam, m, i, e, j, s, ROLE, rule) for s in cfg.seeds]
                pts.append((params[m], e, 1.0))
            new = [t for t in new if t.id not in have_ids]
            if not new:
                continue
            cost = planner._price_trials(ctx, new)
            forced = ""
            if ff is not None and (i, j) not in cells:
                if i == max_i + 1 and ff.n_star > params[ladder[max_i]]:
                    forced = (f"fitted N* {ff.n_star:.3g} lies above the largest size trained "
                              f"({params[ladder[max_i]]:.3g}): extending the sizes")
                elif j == max_j + 1 and ff.epochs_star > cfg.epochs[max_j]:
                    forced = (f"fitted epochs* {ff.epochs_star:.3g} lies above the longest epoch budget trained "
                              f"({cfg.epochs[max_j]:g}): extending the epochs")
            out.append(_Cand(fam, new, pts, cost, forced))
    return out


def edge_notes(ff: FamilyFit, params: list[float], epochs: list[float]) -> list[str]:
    """Sentences when the fitted optimum lies outside the sampled sizes or epochs."""
    out = []
    if ff.n_star < min(params):
        out.append(f"N* {ff.n_star:.3g} lies below the smallest size trained ({min(params):.3g}): "
                   "add smaller models to the ladder")
    if ff.epochs_star < min(epochs):
        out.append(f"epochs* {ff.epochs_star:.3g} lies below the shortest epoch budget ({min(epochs):g})")
    return out


def plan_study(ctx: Context, budget: float, spent: float, carried: list[Trial], started: bool = False) -> Plan:
    """The study's plan under its placement: the static band (``planner.plan``) or
    adaptive (``plan`` here, which plans its first wave with the band)."""
    if ctx.cfg.placement == "adaptive":
        return plan(ctx, budget, spent, carried, started)
    return planner.plan(ctx, budget, spent, carried, started)
