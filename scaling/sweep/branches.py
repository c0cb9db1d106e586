"""A WSD study's trials: one stem per (model, learning rate, seed), a cooldown branch per epoch budget.

For a study with ``schedule="wsd"`` every cell (model, epoch budget E) is a
cooldown branch (``kind="branch"``: steps [S(E), T(E)), ``T(E)`` the budget's
steps, ``S(E)`` where its last ``cooldown_fraction`` begins) off the model's
stem. The stem is a chain of segments (``kind="stem"``), one per study epoch
budget up to the model's largest planned one, each ending at that budget's
S(E) and starting from the previous segment's checkpoint
(``scaling.branching``), whether or not the model has a branch there: the
chain is then the same whatever the band, so a higher ``--budget`` only
appends segments and branches (nothing that ran is retrained or redefined).

Trial ids: ``<model>-stem-e<E>-<tag>-s<seed>`` (the segment ending at E's
cooldown start) and ``<model>-e<E>-wsd-<tag>-s<seed>`` (the branch).

Learning rates: ``lr_strategy="fixed"``: one stem per model at the base lr.
``"tune"``: the tuning model (as for cosine studies) gets one stem per
``lr_first_multipliers`` x base lr, branched at every planned budget (the lr
grid over stems); the best of them per budget is the tuner's answer. Each
other model's stem takes the lr that was best on the tuning model at that
model's largest planned budget (times ``lr_size_factor`` per ladder step):
the budget its compute-optimal runs live at. A segment or branch always
takes its stem's lr once the stem has started (``runner``), so a re-plan
never mixes learning rates along a stem.

Every trial shares the family's warmup, ``warmup_fraction`` of the study's
shortest epoch budget in steps (``warmup_steps``): a stem and its branches
must agree on it, and the shortest budget is fixed by the study's identity.
"""

from __future__ import annotations

from scaling.schedules import cooldown_start
from scaling.sweep import lr as lrrule
from scaling.sweep.planner import Context, Trial, fmt_epochs


def stem_id(model: str, epochs: float, tag: str, seed: int) -> str:
    return f"{model.replace('/', '_')}-stem-e{fmt_epochs(epochs)}-{tag}-s{seed}"


def branch_id(model: str, epochs: float, tag: str, seed: int) -> str:
    return f"{model.replace('/', '_')}-e{fmt_epochs(epochs)}-wsd-{tag}-s{seed}"


def branch_points(ctx: Context, fam: str) -> list[tuple[int, int]]:
    """(S, T) per study epoch budget: the cooldown start and the end of its branch."""
    cfg, warm = ctx.cfg, ctx.warmup_steps.get(fam, 0)
    out = []
    for e in cfg.epochs:
        total = ctx.steps(e)
        out.append((cooldown_start(total, cfg.cooldown_fraction, min(warm, max(total - 1, 0))), total))
    return out


def chain(ctx: Context, fam: str, i: int, branches_at: list[int], tag: str, seed: int, rule: dict,
          role: str) -> list[Trial]:
    """Model ``i``'s stem segments up to its largest budget in ``branches_at``, and its branches there."""
    cfg, model = ctx.cfg, ctx.ladders[fam][i]
    points = branch_points(ctx, fam)
    out: list[Trial] = []
    prev, prev_end = None, 0
    for j in range(max(branches_at) + 1):
        s, _ = points[j]
        e = cfg.epochs[j]
        if s > prev_end:  # a budget whose cooldown starts where the last one did needs no segment
            sid = stem_id(model, e, tag, seed)
            out.append(Trial(sid, fam, model, i, e, j, seed, "stem", rule, kind="stem", start_step=prev_end,
                             end_step=s, init_from=prev, eval_every=s))
            prev, prev_end = sid, s
        if j in branches_at:
            if prev is None:  # the cooldown starts at step 0 (cooldown_fraction 1): no stem to branch from
                raise ValueError(f"epoch budget {e:g} has no stem to branch from")
            out.append(Trial(branch_id(model, e, tag, seed), fam, model, i, e, j, seed, role, rule, kind="branch",
                             start_step=prev_end, end_step=points[j][1], init_from=prev))
    return out


def family_trials(ctx: Context, fam: str, cells: list[tuple[int, int]], tuned: bool = True) -> list[Trial]:
    """The stems and branches of one family for a set of (size rank, epoch rank) cells."""
    cfg = ctx.cfg
    rows: dict[int, list[int]] = {}
    for i, j in cells:
        rows.setdefault(i, []).append(j)
    out: list[Trial] = []
    if cfg.lr_strategy == "fixed" or not tuned:
        rule = lrrule.fixed(ctx.base_lr[fam])
        for i in sorted(rows):
            for seed in cfg.seeds:
                out += chain(ctx, fam, i, sorted(rows[i]), "lrbase", seed, rule, "main")
        return out
    columns = sorted({j for _, j in cells})
    i0 = 0 if cfg.lr_tune_on == "smallest" else min(rows)
    tune_ids: dict[int, list[str]] = {j: [] for j in columns}
    for m in cfg.lr_first_multipliers:
        tag = f"lr{m:g}x"
        trials = chain(ctx, fam, i0, columns, tag, cfg.seeds[0], lrrule.fixed(ctx.base_lr[fam] * m), "tune")
        out += trials
        for t in trials:
            if t.kind == "branch":
                tune_ids[t.epoch_rank].append(t.id)
    for i in sorted(rows):
        seeds = cfg.seeds[1:] if i == i0 else cfg.seeds
        rule = lrrule.best_of(tune_ids[max(rows[i])], cfg.lr_size_factor ** (i - i0))
        for seed in seeds:
            out += chain(ctx, fam, i, sorted(rows[i]), "lrbest", seed, rule, "main")
    return out


def study_warmup(warmup_fraction: float, shortest_steps: int) -> int:
    """A family's warmup in steps: ``warmup_fraction`` of the shortest budget's steps."""
    return int(round(warmup_fraction * shortest_steps))
