"""Choose the trials of a study so that they fit the budget.

The search space of a family is its size ladder x the epoch budgets: cell
(i, j) = (i-th smallest model, j-th smallest epoch budget). The planner:

1. For every *extent* (first k sizes x first l epoch budgets) of every family,
   selects a diagonal band of cells, |i (l-1)/(k-1) - j| <= band_width, plus the
   nearest cell of every row and column: compute-optimal model size and epochs
   grow together (P23 §2, "scale the model size and the number of training
   epochs at the same rate"), so that is where the frontier will be.
2. Adds the learning-rate trials of ``scaling.sweep.lr`` (2 per epoch budget,
   on the smallest model of that budget).
3. Picks, across families, the extents whose predicted cost fits the
   available budget, preferring in order: a real study (two compute levels),
   tuned lr, every family with >= ``min_sizes`` sizes and >= ``min_epoch_budgets`` epoch
   budgets (3 and 3 by default), the widest
   compute range (log max/min training FLOPs), more cells, lower cost; and
   among the 30 best of those, the first whose predicted spend after step 4
   reaches 90% of the budget (at small budgets a trial is coarse, and the
   best extent can leave a gap that nothing fills).
4. Spends the slack, up to ``fill_fraction`` of the budget (see
   ``_fill_slack``): a trial is the planning granularity, and at small budgets
   one trial is 10-30% of the budget.

The minimal study is two cells of different compute per family; a budget
that cannot pay for it is refused with the budget it would need. When even
the minimal study cannot pay for P23's lr tuning, the planner falls back to
the family's base lr and says so in the plan's notes (tuned plans always win
when affordable).

Trials already finished cost nothing more; started ones cost their predicted
remainder and are always kept, so a re-plan (after a trial finishes, or with a
larger ``--budget``) extends the study instead of restarting it.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Callable

from scaling.sweep import lr as lrrule
from scaling.sweep.study import StudyConfig

ADHERENCE_FLOOR = 0.9  # prefer plans predicted to spend at least this share of the budget
ADHERENCE_CANDIDATES = 30  # ... among this many best-scoring ones
FILL_MARGIN = 0.05  # a filler must fit with 5% to spare for its own prediction error
MAX_JOINT = 200_000  # joint extent combinations to score before falling back to per-family greedy


@dataclasses.dataclass
class Trial:
    id: str
    family: str
    model: str
    size_rank: int
    epochs: float
    epoch_rank: int
    seed: int
    role: str  # "tune" | "main" | "replicate" (an extra seed that fills slack) | "stem"
    lr_rule: dict
    predicted_hours: float = 0.0  # cost still to pay (0 for finished)
    train_flops: float = 0.0
    # WSD studies (scaling.sweep.branches): "stem" (a constant-lr segment) or "branch"
    # (a cooldown) trains steps [start_step, end_step) from trial ``init_from``'s checkpoint.
    kind: str = "run"  # "run" | "stem" | "branch"
    start_step: int = 0
    end_step: int = 0
    init_from: str | None = None
    eval_every: int | None = None  # None: the trainer's default

    def work(self) -> dict:
        """The cost model's keywords for what this trial trains (none for a whole run)."""
        if self.kind == "run":
            return {}
        return {"start": self.start_step, "end": self.end_step, "eval_every": self.eval_every}

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Plan:
    feasible: bool
    budget: float
    target: float  # plan_fraction x budget
    spent: float  # already spent (calibration, finished and partial trials, overhead)
    trials: list[Trial]
    extents: dict[str, list[int]]  # family -> [sizes, epoch budgets]
    minimum_budget: float  # smallest budget that fits the minimal study
    notes: list[str] = dataclasses.field(default_factory=list)
    fits: dict = dataclasses.field(default_factory=dict)  # adaptive placement: family -> current allocation fit

    @property
    def predicted_future(self) -> float:
        return sum(t.predicted_hours for t in self.trials)

    @property
    def predicted_total(self) -> float:
        return self.spent + self.predicted_future

    def to_json(self) -> dict:
        return dict(
            feasible=self.feasible,
            budget=self.budget,
            target=self.target,
            spent=self.spent,
            predicted_future=self.predicted_future,
            predicted_total=self.predicted_total,
            minimum_budget=self.minimum_budget,
            extents=self.extents,
            notes=self.notes,
            fits=self.fits,
            trials=[t.to_json() for t in self.trials],
        )


def fmt_epochs(e: float) -> str:
    return f"{e:g}"


def trial_id(model: str, epochs: float, tag: str, seed: int) -> str:
    """A trial's id, also its directory name: a model's "/" (``vit-s/16``) becomes "_"."""
    return f"{model.replace('/', '_')}-e{fmt_epochs(epochs)}-{tag}-s{seed}"


def band_cells(k: int, l: int, width: float) -> list[tuple[int, int]]:
    """Diagonal band of a k x l grid, plus the nearest cell of every row and column."""
    if k == 1:
        return [(0, j) for j in range(l)]
    if l == 1:
        return [(i, 0) for i in range(k)]
    slope = (l - 1) / (k - 1)
    cells = {(i, j) for i in range(k) for j in range(l) if abs(i * slope - j) <= width + 1e-9}
    cells |= {(i, round(i * slope)) for i in range(k)}
    cells |= {(min(k - 1, round(j / slope)), j) for j in range(l)}
    return sorted(cells)


def diagonal_distance(i: int, j: int, k: int, l: int) -> float:
    if k == 1 or l == 1:
        return 0.0
    return abs(i * (l - 1) / (k - 1) - j)


@dataclasses.dataclass
class Context:
    """What the planner needs besides the study config."""

    cfg: StudyConfig
    ladders: dict[str, list[str]]  # family -> calibrated model names, smallest first
    base_lr: dict[str, float]  # family -> base learning rate
    price: Callable[[str, float], float]  # (model, epochs) -> hours of a new trial
    flops: Callable[[str, float], float]  # (model, epochs) -> training FLOPs
    future_of: Callable[[str], float | None]  # trial id -> remaining hours if started/done, else None
    # WSD studies: epochs -> steps, and each family's warmup in steps (shared by its stems and branches)
    steps: Callable[[float], int] | None = None
    warmup_steps: dict[str, int] = dataclasses.field(default_factory=dict)
    # Adaptive placement (scaling.sweep.placement): finished trials' results (result.json plus the
    # trial's role and family) and the hours spent so far on adaptively placed trials.
    results: dict[str, dict] = dataclasses.field(default_factory=dict)
    adapt_hours: float = 0.0
    params: dict[str, float] = dataclasses.field(default_factory=dict)  # model -> parameters (calibration)
    # WSD studies: cells -> trials (scaling.sweep.branches.family_trials); None: one cosine run per cell
    cells_to_trials: Callable | None = None


def family_trials(ctx: Context, fam: str, cells: list[tuple[int, int]], tuned: bool = True) -> list[Trial]:
    """The trials (lr tuning + main) for a set of cells of one family.

    ``tuned=False`` (or ``lr_strategy="fixed"``): one trial per cell at the base lr.
    A WSD study's cells are stems and cooldown branches: ``ctx.cells_to_trials``
    (``scaling.sweep.branches.family_trials``, set by whoever builds the context).
    """
    if ctx.cells_to_trials is not None:  # a WSD study: stems and branches (scaling.sweep.branches)
        return ctx.cells_to_trials(ctx, fam, cells, tuned)
    cfg, ladder = ctx.cfg, ctx.ladders[fam]
    seeds = list(cfg.seeds)
    columns: dict[int, list[int]] = {}
    for i, j in cells:
        columns.setdefault(j, []).append(i)
    out: list[Trial] = []

    def add(i: int, j: int, tag: str, seed: int, role: str, rule: dict) -> Trial:
        m, e = ladder[i], cfg.epochs[j]
        t = Trial(trial_id(m, e, tag, seed), fam, m, i, e, j, seed, role, rule)
        out.append(t)
        return t

    if cfg.lr_strategy == "fixed" or not tuned:
        base = ctx.base_lr[fam]
        for (i, j), s in itertools.product(sorted(cells), seeds):
            add(i, j, "lrbase", s, "main", lrrule.fixed(base))
        return out

    prev: list[str] | None = None
    for j in sorted(columns):
        i0 = 0 if cfg.lr_tune_on == "smallest" else min(columns[j])
        rows = [i for i in sorted(columns[j]) if i != i0]
        if prev is None:
            tune = [
                add(i0, j, f"lr{m:g}x", seeds[0], "tune", lrrule.fixed(ctx.base_lr[fam] * m))
                for m in cfg.lr_first_multipliers
            ]
        else:
            tune = [
                add(i0, j, "lrprev", seeds[0], "tune", lrrule.best_of(prev, 1.0)),
                add(i0, j, "lrhalf", seeds[0], "tune", lrrule.best_of(prev, 0.5)),
            ]
        ids = [t.id for t in tune]
        for s in seeds[1:]:
            add(i0, j, "lrbest", s, "main", lrrule.best_of(ids, 1.0))
        for i in rows:
            for s in seeds:
                add(i, j, "lrbest", s, "main", lrrule.best_of(ids, cfg.lr_size_factor ** (i - i0)))
        prev = ids
    return out


def _price_trials(ctx: Context, trials: list[Trial]) -> float:
    total = 0.0
    for t in trials:
        fut = ctx.future_of(t.id)
        t.predicted_hours = ctx.price(t.model, t.epochs, **t.work()) if fut is None else fut
        t.train_flops = ctx.flops(t.model, t.epochs)  # a branch: its standalone run's, stem included
        total += t.predicted_hours
    return total


@dataclasses.dataclass
class Option:
    family: str
    k: int
    l: int
    cells: list[tuple[int, int]]
    trials: list[Trial]
    cost: float
    log_range: float
    min_k: int = 3
    min_l: int = 3
    tuned: bool = True  # lr tuned per epoch budget (False: the base lr, when tuning is unaffordable)

    @property
    def meets_min(self) -> bool:
        return self.k >= self.min_k and self.l >= self.min_l


def family_options(ctx: Context, fam: str) -> list[Option]:
    K, L = len(ctx.ladders[fam]), len(ctx.cfg.epochs)
    modes = (True, False) if ctx.cfg.lr_strategy == "tune" else (False,)
    opts = []
    for tuned in modes:
        for k in range(1, K + 1):
            for l in range(1, L + 1):
                cells = band_cells(k, l, ctx.cfg.band_width)
                trials = family_trials(ctx, fam, cells, tuned)
                cost = _price_trials(ctx, trials)
                flops = [ctx.flops(ctx.ladders[fam][i], ctx.cfg.epochs[j]) for i, j in cells]
                opts.append(Option(fam, k, l, cells, trials, cost, math.log(max(flops) / min(flops)),
                                   min(ctx.cfg.min_sizes, K), min(ctx.cfg.min_epoch_budgets, L), tuned))
    return opts


def _score(combo: tuple[Option, ...]) -> tuple:
    return (
        all(_is_study(o) for o in combo),
        all(o.tuned for o in combo),
        all(o.meets_min for o in combo),
        sum(o.log_range for o in combo),
        sum(len(o.cells) for o in combo),
        -sum(o.cost for o in combo),
    )


def plan(
    ctx: Context,
    budget: float,
    spent: float,
    carried: list[Trial],
    started: bool = False,
) -> Plan:
    """Plan the trials still to run. ``carried``: started, unfinished trials (always kept);
    ``started``: the study has run trials before (so it is never refused, only trimmed)."""
    cfg = ctx.cfg
    target = cfg.plan_fraction * budget
    carried_cost = _price_trials(ctx, carried)
    available = target - spent - carried_cost
    options = {fam: family_options(ctx, fam) for fam in cfg.families}

    minimum = tuple(min((o for o in options[f] if _is_study(o)), key=lambda o: o.cost) for f in cfg.families)
    min_cost = _combo_cost(minimum, carried)
    minimum_budget = (spent + carried_cost + min_cost) / cfg.plan_fraction

    fitting: list[tuple[Option, ...]] = []
    n_joint = math.prod(len(v) for v in options.values())
    if n_joint <= MAX_JOINT:
        fitting = [c for c in itertools.product(*(options[f] for f in cfg.families))
                   if _combo_cost(c, carried) <= available]
    else:  # many families: give each an equal share
        share = available / len(cfg.families)
        picks = []
        for f in cfg.families:
            fits = [o for o in options[f] if o.cost <= share]
            if fits:
                picks.append(max(fits, key=lambda o: _score((o,))))
        fitting = [tuple(picks)] if len(picks) == len(cfg.families) else []
    fitting.sort(key=_score, reverse=True)

    def materialize(combo: tuple[Option, ...]) -> tuple[list[Trial], dict]:
        trials = _dedupe(list(carried) + [t for o in combo for t in o.trials])
        cells = {o.family: set(o.cells) for o in combo}
        if cfg.schedule == "cosine":  # WSD studies are not filled (a filler would need its own stem)
            _fill_slack(ctx, combo, cells, trials, cfg.fill_fraction * budget - spent)
        return trials, cells

    # Among the best-scoring plans, take the first whose predicted spend after
    # filling reaches ADHERENCE_FLOOR of the budget (a trial is coarse at small
    # budgets: the best-scoring extent can leave a gap nothing fills).
    best, chosen = (fitting[0] if fitting else None), None
    for combo in fitting[:ADHERENCE_CANDIDATES]:
        if not all(_is_study(o) for o in combo):
            break
        trials, cells = materialize(combo)
        if spent + sum(t.predicted_hours for t in trials) >= ADHERENCE_FLOOR * budget:
            best, chosen = combo, (trials, cells)
            break

    notes = []
    if best is None or not all(_is_study(o) for o in best):
        if not started:
            return Plan(False, budget, target, spent, list(carried), {}, minimum_budget, ["minimal study does not fit"])
        # The study has begun but measured costs leave no room for its minimal plan:
        # keep what ran, and spend what is left on whatever still fits.
        best = minimum
        done = [t for o in best for t in o.trials if ctx.future_of(t.id) == 0.0]
        trials = _dedupe(list(carried) + done)
        cells = {o.family: {(t.size_rank, t.epoch_rank) for t in trials if t.family == o.family} for o in best}
        if cfg.schedule == "cosine":
            _fill_slack(ctx, best, cells, trials, cfg.fill_fraction * budget - spent)
        notes.append("measured costs leave no room for the minimal study: filling what fits")
        return Plan(True, budget, target, spent, trials, {}, minimum_budget, notes)
    if not all(o.meets_min for o in best):
        notes.append(f"budget too small for {cfg.min_sizes} sizes x {cfg.min_epoch_budgets} epoch budgets in every family")
    if cfg.lr_strategy == "tune" and not all(o.tuned for o in best):
        notes.append("budget too small to tune the lr (2 trials per epoch budget): using the base lr")

    trials, cells = chosen or materialize(best)
    extents = {o.family: [o.k, o.l] for o in best}
    for o in best:
        notes.append(f"{o.family}: {o.k} sizes x {o.l} epoch budgets, {len(cells[o.family])} cells")
    return Plan(True, budget, target, spent, trials, extents, minimum_budget, notes)


def _is_study(o: Option) -> bool:
    """The minimal study: two cells of different compute (2 sizes or 2 epoch budgets),
    unless the family's grid has a single cell."""
    return len(o.cells) >= 2 or (o.min_k == 1 and o.min_l == 1)


def _dedupe(trials: list[Trial]) -> list[Trial]:
    seen, out = set(), []
    for t in trials:
        if t.id not in seen:
            seen.add(t.id)
            out.append(t)
    return out


def _combo_cost(combo: tuple[Option, ...], carried: list[Trial]) -> float:
    ids = {t.id for t in carried}
    total = 0.0
    for o in combo:
        for t in o.trials:
            if t.id not in ids:
                ids.add(t.id)
                total += t.predicted_hours
    return total


def _fill_slack(ctx: Context, chosen: tuple[Option, ...], cells: dict, trials: list[Trial], room: float) -> None:
    """Spend the slack, in this order of preference, while anything fits:

    1. a cell next to the band in an epoch budget already in the plan (nearest
       the diagonal first, then cheapest);
    2. the next epoch budget on the family's smallest model (with its 2 lr trials
       when tuning): a wider epoch range;
    3. an extra seed of the cell with fewest seeds, cheapest first: the finest
       grain, so that small budgets end close to their target.
    """
    have = {t.id for t in trials}
    cfg = ctx.cfg
    while True:
        used = sum(t.predicted_hours for t in trials)

        def fits(new: list[Trial]) -> float | None:
            new[:] = [t for t in new if t.id not in have]
            cost = _price_trials(ctx, new)
            return cost if new and used + cost * (1 + FILL_MARGIN) <= room + 1e-15 else None

        cell_cands, column_cands, replicas = [], [], []
        for o in chosen:
            fam, ladder = o.family, ctx.ladders[o.family]
            fixed = not o.tuned
            tag = "lrbase" if fixed else "lrbest"
            columns: dict[int, tuple[int, list[str]]] = {}
            seeds: dict[tuple[int, int], int] = {}
            for t in trials:
                if t.family != fam:
                    continue
                key = (t.size_rank, t.epoch_rank)
                seeds[key] = max(seeds.get(key, -1), t.seed)
                if (t.role == "tune" and not fixed) or (fixed and t.lr_rule["kind"] == "fixed" and t.role == "main"):
                    columns.setdefault(t.epoch_rank, (0 if fixed else t.size_rank, []))[1].append(t.id)

            def rule(ids: list[str], i: int, i0: int) -> dict:
                if fixed:
                    return lrrule.fixed(ctx.base_lr[fam])
                return lrrule.best_of(ids, cfg.lr_size_factor ** (i - i0))

            for j, (i0, ids) in columns.items():
                m_e = [(i, ladder[i], cfg.epochs[j]) for i in range(len(ladder))]
                for i, m, e in m_e:
                    if (i, j) not in cells[fam] and (i > i0 or fixed):
                        new = [Trial(trial_id(m, e, tag, s), fam, m, i, e, j, s, "main", rule(ids, i, i0))
                               for s in cfg.seeds]
                        cost = fits(new)
                        if cost is not None:
                            cell_cands.append((diagonal_distance(i, j, o.k, o.l), cost, fam, (i, j), new))
                    elif (i, j) in seeds:
                        s = seeds[(i, j)] + 1
                        new = [Trial(trial_id(m, e, tag, s), fam, m, i, e, j, s, "replicate", rule(ids, i, i0))]
                        cost = fits(new)
                        if cost is not None:
                            replicas.append((s, cost, fam, None, new))
            if columns:
                j = max(columns) + 1
                if j < len(cfg.epochs):
                    m, e = ladder[0], cfg.epochs[j]
                    if fixed:
                        new = [Trial(trial_id(m, e, tag, s), fam, m, 0, e, j, s, "main", rule([], 0, 0))
                               for s in cfg.seeds]
                    else:
                        prev = [t.id for t in trials if t.family == fam and t.role == "tune"
                                and t.epoch_rank == max(columns) and t.size_rank == 0]
                        new = [Trial(trial_id(m, e, "lrprev", cfg.seeds[0]), fam, m, 0, e, j, cfg.seeds[0], "tune",
                                     lrrule.best_of(prev, 1.0)),
                               Trial(trial_id(m, e, "lrhalf", cfg.seeds[0]), fam, m, 0, e, j, cfg.seeds[0], "tune",
                                     lrrule.best_of(prev, 0.5))] if prev else []
                    cost = fits(new)
                    if cost is not None:
                        column_cands.append((cost, 0, fam, (0, j), new))
        if cell_cands:
            _, _, fam, cell, new = min(cell_cands, key=lambda c: (c[0], c[1]))
        elif column_cands:
            _, _, fam, cell, new = min(column_cands, key=lambda c: c[0])
        elif replicas and cfg.fill_replicates:
            _, _, fam, cell, new = min(replicas, key=lambda c: (c[0], c[1]))
        else:
            return
        if cell is not None:
            cells[fam].add(cell)
        trials.extend(new)
        have.update(t.id for t in new)
