"""The sweep loop: calibrate, plan, run trials, re-plan with measured costs, resume.

Each pass reads the records (``ledger.snapshot``), re-fits the cost model on
the finished trials, re-plans for the budget, and launches the trials that are
ready (their lr dependencies finished), not finished, not locked by another
sweep process, and that fit the budget with everything else in flight. A
running trial is interrupted if the study's spend would pass the budget.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from scaling.errors import UserError
from scaling.sweep import branches, calibrate, costmodel, executors, ledger, placement, planner, priors, progress, state
from scaling.sweep import lr as lrrule
from scaling.sweep.study import StudyConfig, check_models, trial_config

POLL_SECONDS = 0.25  # how often running trials are checked
REPLAN_SECONDS = 5.0  # how often the records are re-read while nothing finishes
MAX_CRASHES = 2  # a trial that crashes this often without a result is marked failed


@dataclasses.dataclass
class Options:
    budget: float
    workdir: Path
    executor: str = "local"
    ray_address: str | None = None
    slurm: dict = dataclasses.field(default_factory=dict)  # partition, account, time_min, max_jobs; cluster (tests)
    dry_run: bool = False
    json: bool = False
    quiet: bool = False
    # the design tool (scaling.sweep.design), with --dry-run
    design: bool = True
    target_width: float | None = None
    accelerator: str | None = None
    mfu: float | None = None


@dataclasses.dataclass
class Running:
    trial: planner.Trial
    handle: Any
    lock: state.TrialLock
    seg: str
    t0: float
    acct_before: float
    est_overhead: float


def base_lrs(cfg: StudyConfig, ladders: dict[str, list[str]]) -> dict[str, float]:
    """The family recipe's lr at the study's batch size (or ``lr_base``)."""
    from scaling.config import resolve

    if cfg.lr_base is not None:
        return {f: cfg.lr_base for f in ladders}
    return {f: resolve(trial_config(cfg, ladder[0])).lr for f, ladder in ladders.items()}


def wsd_warmups(cfg: StudyConfig, ladders: dict[str, list[str]], steps) -> dict[str, int]:
    """Each family's warmup in steps for a WSD study (``branches.study_warmup``); {} for cosine."""
    if cfg.schedule == "cosine":
        return {}
    from scaling.config import resolve

    if cfg.train_overrides.get("warmup_steps") is not None:
        return {f: int(cfg.train_overrides["warmup_steps"]) for f in ladders}
    out = {}
    for f, ladder in ladders.items():
        frac = cfg.train_overrides.get("warmup_fraction")
        if frac is None:
            frac = resolve(trial_config(cfg, ladder[0])).warmup_fraction
        out[f] = branches.study_warmup(frac, steps(cfg.epochs[0]))
    return out


def train_config(cfg: StudyConfig, t: planner.Trial, lr: float, run_dir=None, warmup: int | None = None) -> dict:
    """The trial's TrainConfig; a WSD stem segment or branch also gets its schedule, warmup
    and ``init_from`` (``run_dir``: trial id -> its run directory)."""
    tc = trial_config(cfg, t.model, epochs=t.epochs, seed=t.seed, lr=lr)
    if t.kind != "run":
        tc = dataclasses.replace(
            tc, schedule="constant" if t.kind == "stem" else "wsd", cooldown_fraction=cfg.cooldown_fraction,
            cooldown_shape=cfg.cooldown_shape, warmup_steps=warmup,
            init_from=str(Path(run_dir(t.init_from)).absolute()) if t.init_from else None)
        if t.kind == "stem":
            tc = dataclasses.replace(tc, steps=t.end_step, eval_every=t.eval_every)
    return tc.to_json()


class Sweep:
    def __init__(self, cfg: StudyConfig, opts: Options):
        self.cfg, self.opts = cfg, opts
        self.paths = state.Paths(opts.workdir)
        self.ladders_all = check_models(cfg)
        self.session: ledger.Session | None = None
        self.progress = progress.Progress(opts.budget, enabled=not opts.quiet)
        self.running: dict[str, Running] = {}
        self.given_up: set[str] = set()  # trials not to launch again in this session
        self.warmups: dict[str, int] = {}  # WSD: family -> warmup steps (set by replan)
        self._priors_from = 0
        self.stopped_for_budget: set[str] = set()  # interrupted on purpose (budget, Ctrl-C, SIGTERM)

    # ---- setup -----------------------------------------------------------------------

    def _cost_model(self, calib: dict) -> costmodel.CostModel:
        every = int(self.cfg.train_overrides.get("eval_every", 0) or 0)
        return costmodel.CostModel(calib, self.cfg.batch_size, eval_every=every)

    def calibrate(self) -> dict:
        def cheapest(calib: dict, model: str) -> float:
            return self._cost_model(calib).trial_hours(model, self.cfg.epochs[0])

        def estimate(calib: dict, measured: str, model: str) -> dict:
            """A larger model's costs guessed from a smaller one's, scaled by FLOPs."""
            from scaling.models import registry

            d, m = calib["data"], calib["models"][measured]
            size, classes = d["image_size"], d["num_classes"]
            ratio = registry.get(model).forward_flops(size, classes) / registry.get(measured).forward_flops(size, classes)
            return dict(m, step_seconds=m["step_seconds"] * ratio, flops_per_example=m["flops_per_example"] * ratio,
                        eval_seconds_per_example=m["eval_seconds_per_example"] * ratio)

        self.session.tick(busy=True)  # the worker's time is charged as calibration
        calib = calibrate.ensure(self.paths.calibration, self.cfg, self.ladders_all, self.opts.budget,
                                 cheapest, estimate, log=self.progress.log)
        self.session.tick(busy=False)
        return calib

    # ---- one planning pass -------------------------------------------------------------

    def replan(self, calib: dict, snap: ledger.Snapshot) -> tuple[planner.Plan, costmodel.CostModel]:
        cm = self._cost_model(calib)
        finished = []
        for rec in snap.trials.values():
            r = rec.result
            if rec.finished and r and r.get("accelerator_hours_breakdown"):
                segs = [s for s in state.read_jsonl(self.paths.segments(rec.id)) if s.get("event") == "end"]
                ov = [s["overhead_hours"] * 3600 / max(s.get("devices", 1), 1) for s in segs]
                trial = planner.Trial(**rec.spec["trial"]) if rec.spec.get("trial") else None
                finished.append(dict(
                    model=rec.spec.get("model", r.get("model")), epochs=rec.spec.get("epochs", r.get("epochs")),
                    work=trial.work() if trial else {},
                    breakdown_seconds=_own_breakdown(self.paths.run_dir(rec.id), r),
                    overhead_seconds=sum(ov) / len(ov) if ov else None,
                ))
        cm = costmodel.fit_corrections(cm, finished, priors.load(calib["data"].get("device_kind", "?")))
        if finished and len(finished) != self._priors_from:
            self._priors_from = len(finished)
            priors.store(calib["data"].get("device_kind", "?"), cm.pooled, cm.other_seconds, cm.startup_seconds)

        def future_of(tid: str) -> float | None:
            rec = snap.trials.get(tid)
            if rec is None:
                return None
            if rec.finished:
                return 0.0
            return cm.remaining_hours(rec.spec["model"], rec.spec["epochs"], rec.trainer_hours, **_work(rec))

        ctx = self.context(calib, snap, cm, future_of)
        carried = [
            planner.Trial(**rec.spec["trial"])
            for rec in snap.trials.values()
            if not rec.finished and rec.spec.get("trial")
        ]
        p = placement.plan_study(ctx, self.opts.budget, snap.total, carried, started=bool(snap.trials))
        self._show_fits(p)
        return p, cm

    def context(self, calib: dict, snap: ledger.Snapshot, cm: costmodel.CostModel, future_of) -> planner.Context:
        """The planner's view of the study: costs, ladders, lrs and (adaptive placement) the results."""
        ladders = calibrate.calibrated_ladders(calib, self.ladders_all)
        results, adapt = {}, 0.0
        for tid, rec in snap.trials.items():
            role = rec.spec.get("role")
            if role in (placement.ROLE, placement.TUNE_ROLE):
                adapt += rec.hours
            if rec.finished and rec.result is not None:
                results[tid] = {**rec.result, "family": rec.spec.get("family", rec.result.get("family")),
                                "role": role, "trial": rec.spec.get("trial")}
        ctx = planner.Context(self.cfg, ladders, base_lrs(self.cfg, ladders), cm.trial_hours, cm.train_flops, future_of,
                              steps=cm.steps, warmup_steps=wsd_warmups(self.cfg, ladders, cm.steps),
                              results=results, adapt_hours=adapt,
                              cells_to_trials=branches.family_trials if self.cfg.schedule != "cosine" else None,
                              params={m: float(v["params"]) for m, v in calib["models"].items() if v.get("params")})
        self.warmups = ctx.warmup_steps
        return ctx

    def _show_fits(self, p: planner.Plan) -> None:
        """Log the adaptive placement's current allocation fit when it changes (the progress display)."""
        shown = {f: (round(v["n_star_exponent"], 4), round(v["width"], 4)) for f, v in p.fits.items()}
        if shown and shown != getattr(self, "_fits_shown", None):
            self._fits_shown = shown
            for f, v in p.fits.items():
                self.progress.log(progress.fit_line(f, v))

    def write_plan(self, p: planner.Plan, snap: ledger.Snapshot) -> None:
        out = p.to_json()
        out["calibration_hours"] = snap.calibration_hours
        state.write_json(self.paths.plan, out)

    # ---- launching ---------------------------------------------------------------------

    def _lr_for(self, t: planner.Trial, snap: ledger.Snapshot) -> float | None:
        spec = snap.trials.get(t.id)
        if spec is not None and spec.spec.get("lr") is not None:
            return spec.spec["lr"]  # fixed once the trial first started
        stem = snap.trials.get(t.init_from) if t.init_from else None
        if stem is not None and stem.spec.get("lr") is not None:
            return stem.spec["lr"]  # a stem segment or branch continues its stem, at its lr
        return lrrule.resolve(t.lr_rule, snap.results())

    def _in_flight_hours(self, snap: ledger.Snapshot, cm: costmodel.CostModel, plan: planner.Plan) -> float:
        """Predicted hours still to come from trials running now (here or elsewhere)."""
        by_id = {t.id: t for t in plan.trials}
        total = 0.0
        for tid, rec in snap.trials.items():
            if rec.finished:
                continue
            here = tid in self.running
            if here or state.TrialLock(self.paths.lock(tid)).is_held_elsewhere():
                t = by_id.get(tid)
                model, epochs = (t.model, t.epochs) if t else (rec.spec["model"], rec.spec["epochs"])
                total += cm.remaining_hours(model, epochs, rec.trainer_hours, **(t.work() if t else _work(rec)))
        return total

    def launch_ready(self, ex, plan: planner.Plan, snap: ledger.Snapshot, cm: costmodel.CostModel) -> tuple[int, int]:
        """Launch what can run now. Returns (launched, waiting_elsewhere)."""
        launched = waiting = 0
        for t in plan.trials:
            if not ex.can_launch():
                break
            rec = snap.trials.get(t.id)
            if t.id in self.running or t.id in self.given_up or t.id in self.stopped_for_budget:
                continue
            if rec is not None and rec.finished:
                continue
            lock = state.TrialLock(self.paths.lock(t.id))
            if lock.is_held_elsewhere():
                waiting += 1
                continue
            if t.init_from:  # a WSD stem segment or branch: its stem segment must have finished
                stem = snap.trials.get(t.init_from)
                if stem is None or not stem.finished:
                    waiting += state.TrialLock(self.paths.lock(t.init_from)).is_held_elsewhere()
                    continue
                if stem.status != "stem":
                    self._cannot_run(t, f"its stem {t.init_from} ended {stem.status}")
                    continue
            lr = self._lr_for(t, snap)
            if lr is None:
                deps = lrrule.deps(t.lr_rule)
                if any(state.TrialLock(self.paths.lock(d)).is_held_elsewhere() for d in deps):
                    waiting += 1
                continue
            with state.study_lock(self.paths.root):
                snap2 = ledger.snapshot(self.paths)
                need = cm.remaining_hours(t.model, t.epochs, snap2.trials[t.id].trainer_hours, **t.work()) \
                    if t.id in snap2.trials else cm.trial_hours(t.model, t.epochs, **t.work())
                projected = snap2.total + self._in_flight_hours(snap2, cm, plan) + need
                if projected > self.opts.budget:
                    continue
                if not lock.acquire():
                    waiting += 1
                    continue
            rec = ledger.trial_record(self.paths, t.id)
            if rec.finished:  # someone finished it since our snapshot
                lock.release()
                continue
            self._start(ex, t, lr, lock, rec, cm)
            launched += 1
        return launched, waiting

    def _executor_options(self, platform: str) -> dict:
        """The slurm executor's options: its job folder in the workdir, the resources of a one-device trial."""
        if self.opts.executor != "slurm":
            return {}
        o = self.opts.slurm
        params = {k: o[k] for k in ("partition", "account") if o.get(k)}
        res = executors.Resources(gpus_per_node=1 if platform == "gpu" else 0, timeout_min=o.get("time_min", 24 * 60))
        return dict(folder=self.paths.root / "submitit", cluster=o.get("cluster"), resources=res,
                    max_jobs=o.get("max_jobs", 8), slurm_parameters=params)

    def _start(self, ex, t: planner.Trial, lr: float, lock: state.TrialLock, rec: ledger.TrialRecord, cm) -> None:
        d = self.paths.trial_dir(t.id)
        d.mkdir(parents=True, exist_ok=True)
        if not rec.spec:
            spec = dict(id=t.id, family=t.family, model=t.model, epochs=t.epochs, seed=t.seed, role=t.role,
                        lr=lr, lr_rule=t.lr_rule, trial=t.to_json(),
                        config=train_config(self.cfg, t, lr, self.paths.run_dir, self.warmups.get(t.family)))
            state.write_json(self.paths.trial_json(t.id), spec)
            state.write_json(d / "train_config.json", spec["config"])
        seg = uuid.uuid4().hex[:12]
        acct_before = ledger.trainer_hours(self.paths, t.id)
        est = cm.startup() * cm.devices / 3600.0
        state.append_jsonl(self.paths.segments(t.id), dict(
            event="start", seg=seg, time=time.time(), acct_before=acct_before,
            est_overhead_hours=est, executor=ex.name,
        ))
        cmd = [sys.executable, "-m", "scaling.train", "--config", str(d / "train_config.json"),
               "--workdir", str(self.paths.run_dir(t.id)), "--quiet"]
        h = ex.launch(t.id, cmd, d / "train.log", lock.fd)
        self.running[t.id] = Running(t, h, lock, seg, time.monotonic(), acct_before, est)
        self.progress.log(f"start  {t.id}  lr={lr:.4g}  predicted {progress.fmt_hours(t.predicted_hours)}")

    def _cannot_run(self, t: planner.Trial, why: str) -> None:
        self.given_up.add(t.id)
        self.progress.log(f"skip   {t.id}: {why}")

    def finish(self, tid: str, rc: int, devices: int) -> None:
        r = self.running.pop(tid)
        wall = time.monotonic() - r.t0
        after = ledger.trainer_hours(self.paths, tid)
        overhead = max(wall * devices / 3600.0 - (after - r.acct_before), 0.0)
        stopped = tid in self.stopped_for_budget
        state.append_jsonl(self.paths.segments(tid), dict(
            event="end", seg=r.seg, time=time.time(), rc=rc, wall_seconds=wall, acct_after=after,
            overhead_hours=overhead, devices=devices, stopped=stopped,
        ))
        rec = ledger.trial_record(self.paths, tid)
        if rc == 2 and not rec.finished:
            r.lock.release()
            raise UserError(f"trial {tid} was refused by the trainer: {_last_line(self.paths.trial_dir(tid) / 'train.log')}")
        if not rec.finished and not stopped:
            self.given_up.add(tid)
            if rec.crashes >= MAX_CRASHES:
                state.write_json(self.paths.trial_dir(tid) / "failed.json",
                                 {"reason": f"crashed {rec.crashes} times", "last_log": _last_line(
                                     self.paths.trial_dir(tid) / "train.log")})
        r.lock.release()
        what = rec.status if rec.finished else ("stopped" if stopped else f"crashed (rc={rc})")
        vl = rec.result.get("val_loss") if rec.result else None
        self.progress.log(f"end    {tid}  {what}  {progress.fmt_hours(rec.hours)}"
                          + (f"  val_loss={vl:.4f}" if isinstance(vl, float) else ""))

    def guard_budget(self, ex, snap: ledger.Snapshot, devices: int) -> None:
        """Interrupt our newest running trial if the spend would pass the budget.

        The records lag a running trial (its accounting is flushed every log
        step), so its live cost is taken from the wall-clock since launch.
        """
        if not self.running:
            return
        unrecorded = 0.0
        for tid, r in self.running.items():
            rec = snap.trials.get(tid)
            live = r.acct_before + (time.monotonic() - r.t0) * devices / 3600.0
            recorded = (rec.trainer_hours if rec else 0.0) + r.est_overhead
            unrecorded += max(live - recorded, 0.0)
        if snap.total + unrecorded > self.opts.budget:
            for tid, r in sorted(self.running.items(), key=lambda kv: -kv[1].t0):
                if tid not in self.stopped_for_budget:
                    self.stopped_for_budget.add(tid)
                    self.progress.log(f"budget reached: stopping {tid}")
                    ex.interrupt(r.handle)
                    break

    # ---- the whole run -----------------------------------------------------------------

    def run(self) -> dict:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        state.claim_workdir(self.paths.root, self.cfg.identity(), self.cfg.to_json())
        self.session = ledger.Session(self.paths)
        self.session.tick(busy=False)
        try:
            return self._run()
        finally:
            self.session.tick(busy=False)
            self.session.flush()
            self.progress.close()

    def _run(self) -> dict:
        opts = self.opts
        calib = self.calibrate()
        platform = calib["data"].get("platform", "cpu")
        snap = ledger.snapshot(self.paths)
        plan, cm = self.replan(calib, snap)
        self.write_plan(plan, snap)
        started_any = any(snap.trials)
        if not plan.feasible and not started_any:
            raise UserError(
                f"budget {opts.budget:g} accelerator-hours is too small for a minimal study "
                f"(two cells of different compute per family); it needs at least {plan.minimum_budget:.4g} "
                f"(calibration already spent {snap.calibration_hours:.4g})"
            )
        if opts.dry_run:
            out = self.plan_report(plan, snap)
            if opts.design:  # the simulation trains nothing: its time is not the study's spend
                self.session.tick(busy=True)
                out["design"] = self.design(calib, snap, cm)
                self.session.tick(busy=False)
            return out

        ex = executors.make(opts.executor, platform, opts.ray_address, **self._executor_options(platform))
        devices = cm.devices if opts.executor == "local" and platform != "gpu" else 1
        last_line = 0.0
        try:
            last_plan, waiting = -math.inf, 0
            while True:
                finished = ex.poll()
                for h, rc in finished:
                    self.finish(h.trial_id, rc, devices)
                now = time.monotonic()
                if finished or now - last_plan > REPLAN_SECONDS or not self.running:
                    # Re-read the records and re-plan: after every finished trial, and
                    # now and then to see other sweep processes' progress.
                    snap = ledger.snapshot(self.paths)
                    plan, cm = self.replan(calib, snap)
                    _, waiting = self.launch_ready(ex, plan, snap, cm)
                    self.write_plan(plan, snap)
                    last_plan = now
                    if not self.running and waiting == 0:
                        break
                self.guard_budget(ex, snap, devices)
                self.session.tick(busy=bool(self.running) or waiting > 0)
                if now - last_line > (10 if not sys.stderr.isatty() else 1):
                    last_line = now
                    line = self.status_line(plan, snap, cm, ex)
                    if not sys.stderr.isatty():
                        self.progress.log(line)
                time.sleep(POLL_SECONDS if self.running else REPLAN_SECONDS / 2)
        except KeyboardInterrupt:
            for tid, r in self.running.items():
                self.stopped_for_budget.add(tid)  # stopped on purpose: not a crash
                ex.interrupt(r.handle)
            deadline = time.monotonic() + 30
            while self.running and time.monotonic() < deadline:
                for h, rc in ex.poll():
                    self.finish(h.trial_id, rc, devices)
                time.sleep(POLL_SECONDS)
            raise
        finally:
            ex.close()
        self.session.tick(busy=False)
        self.session.flush()
        snap = ledger.snapshot(self.paths)
        return self.summary(snap, plan)

    def status_line(self, plan, snap, cm, ex) -> str:
        ids = {t.id for t in plan.trials}
        done = sum(1 for i in ids if i in snap.trials and snap.trials[i].finished)
        remaining = plan.predicted_future
        slots = getattr(ex, "slots", 1)
        eta = remaining * 3600 / max(cm.devices, 1) / max(slots, 1)
        return self.progress.update(done, len(ids), snap.total, eta, sorted(self.running))

    # ---- reports -----------------------------------------------------------------------

    def plan_report(self, plan: planner.Plan, snap: ledger.Snapshot) -> dict:
        rows = []
        for t in plan.trials:
            rec = snap.trials.get(t.id)
            rule = t.lr_rule
            lr = f"{rule['lr']:.4g}" if rule["kind"] == "fixed" else (
                f"best({len(rule['deps'])})x{rule['mult']:g}")
            rows.append(dict(id=t.id, role=t.role, lr=lr, train_flops=t.train_flops,
                             predicted_hours=t.predicted_hours, state=rec.status if rec else "planned"))
        out = plan.to_json()
        out.update(calibration_hours=snap.calibration_hours, spent=snap.total, dry_run=True,
                   workdir=str(self.paths.root))
        if not self.opts.json:
            print(progress.table(rows, progress.PLAN_COLUMNS))
            print(f"\n{len(plan.trials)} trials; " + "; ".join(plan.notes))
            print(f"spent so far {snap.total:.5f} h (calibration {snap.calibration_hours:.5f} h); "
                  f"planned {plan.predicted_future:.5f} h; predicted total {plan.predicted_total:.5f} h "
                  f"of budget {plan.budget:g} h ({100 * plan.predicted_total / plan.budget:.0f}%)")
            print(f"plan written to {self.paths.plan}")
        return out

    def design(self, calib: dict, snap: ledger.Snapshot, cm: costmodel.CostModel) -> dict:
        """Simulate the planned study (scaling.sweep.design); print its two lines unless --json."""
        from scaling.sweep import design

        t0 = time.monotonic()
        ctx = self.context(calib, snap, cm, lambda i: None)
        st = design.setting(ctx, ctx.results)
        fresh = dataclasses.replace(ctx, results={}, adapt_hours=0.0)
        spent0 = snap.calibration_hours + snap.session_hours
        train_size = float(calib["data"]["train_size"])

        seen: dict[float, dict] = {}

        def evaluate(b: float) -> dict:
            if b not in seen:
                seen[b] = design.predict(fresh, b, spent0, st, train_size=train_size)
            return seen[b]

        out = {"prediction": evaluate(self.opts.budget), "law": st.laws, "law_source": st.law_source,
               "noise": st.noise, "noise_source": st.noise_source,
               "assumptions": {"lr_curvature": design.LR_CURVATURE, "lr_opt": st.lr_opt, "n_boot": design.N_BOOT}}
        target = accel = None
        if self.opts.target_width is not None:
            target = design.budget_for_width(self.opts.target_width, evaluate, self.opts.budget)
            out["target"] = target
            if self.opts.accelerator and target["reachable"]:
                name, peak = design.accelerator_peak(self.opts.accelerator)
                mfu = self.opts.mfu or design.DEFAULT_MFU
                res = design.simulate(fresh, target["budget"], spent0, st, np.random.default_rng([0, 0]), train_size)
                trials = [planner.Trial(**r["trial"]) for r in res.values()]
                p = planner.Plan(True, target["budget"], target["budget"], 0.0, trials, {}, 0.0)
                accel = {"name": name, "peak": peak, "mfu": mfu, "hours": design.accelerator_hours(p, cm, peak, mfu)}
                out["accelerator"] = accel
        device = calib["data"].get("device_kind", "machine")
        out["lines"] = design.lines(out["prediction"], st, target, accel, device)
        out["seconds"] = round(time.monotonic() - t0, 1)
        if not self.opts.json:
            print()
            for line in out["lines"]:
                print(line)
        return out

    def summary(self, snap: ledger.Snapshot, plan: planner.Plan) -> dict:
        rows = []
        pred = {t.id: t for t in plan.trials}
        for tid, rec in sorted(snap.trials.items(), key=lambda kv: (kv[1].spec.get("family", ""),
                                                                    kv[1].spec.get("trial", {}).get("train_flops", 0))):
            r = rec.result or {}
            t = pred.get(tid)
            rows.append(dict(
                id=tid, status=rec.status, lr=rec.spec.get("lr"), val_loss=r.get("val_loss"),
                val_accuracy=r.get("val_accuracy"), test_accuracy=r.get("test_accuracy"),
                train_flops=r.get("train_flops"), hours=rec.hours,
                predicted_hours=(rec.spec.get("trial") or {}).get("predicted_hours") if t is None or rec.finished
                else t.predicted_hours,
            ))
        out = dict(
            workdir=str(self.paths.root), budget=self.opts.budget, spent=snap.total,
            spent_fraction=snap.total / self.opts.budget, calibration_hours=snap.calibration_hours,
            trial_hours=snap.trial_hours, sweep_overhead_hours=snap.session_hours,
            trials_finished=sum(1 for r in snap.trials.values() if r.finished), trials_total=len(snap.trials),
            complete=all(r.finished for r in snap.trials.values()), trials=rows,
        )
        state.write_json(self.paths.summary, out)
        if not self.opts.json and not self.opts.quiet:
            print(progress.table(rows, progress.SUMMARY_COLUMNS))
            print(f"\nspent {snap.total:.5f} of {self.opts.budget:g} accelerator-hours "
                  f"({100 * out['spent_fraction']:.1f}%): calibration {snap.calibration_hours:.5f}, "
                  f"trials {snap.trial_hours:.5f}, sweep overhead {snap.session_hours:.5f}")
            print(f"{out['trials_finished']}/{out['trials_total']} trials finished; summary in {self.paths.summary}")
        return out


def _work(rec: ledger.TrialRecord) -> dict:
    """The cost model's keywords for a recorded trial (a WSD stem segment's or branch's steps)."""
    return planner.Trial(**rec.spec["trial"]).work() if rec.spec.get("trial") else {}


def _own_breakdown(run_dir: Path, result: dict) -> dict[str, float]:
    """Seconds x devices per accounting part that the run spent itself (a WSD branch's
    inherited stem segments left out), from its accounting, else its result."""
    acct = state.read_json(run_dir / "accounting.json")
    if acct and acct.get("segments"):
        own = [s for s in acct["segments"] if not s.get("inherited")]
        return {k: sum(s.get(k, 0.0) * s.get("devices", 1) for s in own) for k in costmodel.PARTS}
    return {k: v * 3600 for k, v in result["accelerator_hours_breakdown"].items()}


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        return "no log"
    return lines[-1] if lines else "no output"


def dumps(obj: dict) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=lambda x: None if isinstance(x, float) and math.isnan(x) else str(x))
