"""Packed trials: several small trials of one model trained in one process as one compiled step.

``python -m scaling.packing --config a.json --config b.json ... --workdir-root DIR``
(or ``train_group(configs, workdirs)``). The trials may differ only in ``seed``
and ``lr``: the trainer's own train step (``scaling.steps``) is ``jax.vmap``-ed
over stacked parameters and optimizer states, per-trial RNG keys, per-trial
batches (each trial's data order is its seed's) and per-trial learning-rate
arguments, which are runtime arguments already (``optim.schedule_args``). So a
small model that leaves an accelerator launch-bound fills it with K trials for
the launches of one. ``--mode unrolled`` instead puts K copies of the
single-trial step in the one program: each trial's arithmetic is exactly its
single run's (the vmapped convolutions round differently in the last bit,
which 20 SGD steps of a ReLU net grew to 2.5e-5 relative in the loss on CPU).

Each trial writes its own run directory with the records ``scaling.train``
writes (config.json, metrics.jsonl, checkpoints/, accounting.json,
result.json; built by the trainer's own helpers), so a sweep, the analysis and
a resume see ordinary runs. Accounting: each trial is charged 1/K of the
group's devices for the group's wall time (``devices`` in its segments is
``device_count / K``), so the trials' accelerator-hours sum to the group's
wall time x devices; the group's own record is ``group-accounting.json`` in
the first trial's directory. Re-running the same group resumes every trial
from their common last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from scaling import __version__, evaluation
from scaling.config import TrainConfig, check_length, resolve
from scaling.errors import OneLineParser, UserError
from scaling.paths import atomic_write_json
from scaling.platform.entrypoint import entrypoint
from scaling.train import (RESULT_SCHEMA, Accounting, _check_workdir, _claim_config, _eval_params, _last_train_loss,
                           _previous_result, _rewind_metrics, config_from_args, result_record, train_record)

# What packed trials may differ in; everything else is one program and one data set.
VARYING = ("seed", "lr")


class _GroupClock(Accounting):
    """The group's accounting; ``freeze`` takes one reading that every trial's share uses."""

    frozen: dict = {}

    def freeze(self) -> dict:
        self.frozen = Accounting.segment(self)
        return self.frozen

    def segment(self) -> dict:
        return self.frozen


class _Share(Accounting):
    """A packed trial's accounting: the group's segment with 1/K of its devices."""

    def __init__(self, path: Path, group: _GroupClock, k: int):
        super().__init__(path, group.device_count)
        self.group, self.k = group, k

    def segment(self) -> dict:
        seg = self.group.frozen
        return {**seg, "devices": seg["devices"] / self.k, "packed_trials": self.k}


def check_group(cfgs: list[TrainConfig]) -> None:
    """One-line UserError unless the resolved configs differ only in ``VARYING``."""
    if not cfgs:
        raise UserError("a packed group needs at least one trial config")
    base = {k: v for k, v in cfgs[0].to_json().items() if k not in VARYING}
    for i, cfg in enumerate(cfgs[1:], 1):
        mine = {k: v for k, v in cfg.to_json().items() if k not in VARYING}
        diff = sorted(k for k in base if base[k] != mine.get(k))
        if diff:
            raise UserError(f"packed trials may differ only in {' and '.join(VARYING)}; trial {i} differs from "
                            f"trial 0 in {', '.join(diff[:4])}")
    if cfgs[0].init_from is not None:
        raise UserError("packed trials cannot start from a stem (init_from); train WSD branches one by one")


def _sibling(first, cfg: TrainConfig, choice):
    """Trial ``cfg``'s batch source: the in-memory data shared with ``first`` (one copy on the
    device, this seed's order), or its own streaming pipeline."""
    from scaling.data import batch_sources
    from scaling.data.batch_sources.memory import MemorySource

    if isinstance(first, MemorySource):
        src = MemorySource(first.data, cfg, choice)
        src._stats, src._device = first._stats, first._device
        return src
    src = batch_sources.open_source(cfg, choice)
    src.channel_stats()
    return src


MODES = ("vmap", "unrolled")


def train_group(configs: list[TrainConfig], workdirs: list, *, progress: bool = False,
                mode: str = "vmap") -> list[dict]:
    """Train (or resume) the packed trials ``configs`` in ``workdirs``; return their result.json contents.

    ``mode``: ``vmap`` (the trials batched into one set of larger kernels: the
    throughput mode) or ``unrolled`` (one program holding K copies of the
    single-trial step: each trial's arithmetic is its single run's, bit for bit
    on XLA:CPU; the reference that separates wiring from rounding).

    Validated before anything is written (the group, the data, the run length,
    the workdirs). Trials already finished are returned as they are; the rest
    are trained together.
    """
    from scaling import compute, runtime

    runtime.setup()
    from scaling.data import batch_sources, selection

    if mode not in MODES:
        raise UserError(f"packing mode must be one of {', '.join(MODES)}, got {mode!r}")
    if len(configs) != len(workdirs):
        raise UserError(f"{len(configs)} trial configs but {len(workdirs)} workdirs")
    workdirs = [Path(w) for w in workdirs]
    if any(not str(w).strip() for w in workdirs) or len({w.absolute() for w in workdirs}) != len(workdirs):
        raise UserError("each packed trial needs its own, non-empty workdir")
    cfgs = [resolve(c) for c in configs]
    check_group(cfgs)
    devices = compute.device_info()
    choice = selection.choose(cfgs[0])
    first = batch_sources.open_source(cfgs[0], choice)
    total_steps = check_length(cfgs[0], first.train_size, devices["device_count"])
    first.channel_stats()
    for wd, cfg in zip(workdirs, cfgs):
        _check_workdir(wd)
        _claim_config(wd, cfg)
    results = [_previous_result(wd) for wd in workdirs]
    todo = [i for i, r in enumerate(results) if r is None]
    if todo:
        first.train_spec(cfgs[0].batch_size, _data_sharding())  # in memory: one device copy for every trial
        sources = [first if i == 0 else _sibling(first, cfgs[i], choice) for i in todo]
        try:
            trained = _train([cfgs[i] for i in todo], [workdirs[i] for i in todo], sources, devices, total_steps,
                             progress=progress, mode=mode)
        finally:
            for src in sources[1:]:
                src.close()
        for i, r in zip(todo, trained):
            results[i] = r
    first.close()
    return results


def _data_sharding():
    from jax.sharding import NamedSharding, PartitionSpec as P

    from scaling import steps

    return NamedSharding(steps.make_mesh(), P("data"))


def _train(cfgs, workdirs, sources, devices, total_steps, *, progress, mode):
    k = len(cfgs)
    clock = _GroupClock(workdirs[0] / "group-accounting.json", devices["device_count"])
    shares = [_Share(wd / "accounting.json", clock, k) for wd in workdirs]

    def flush() -> list[dict]:
        clock.freeze()
        out = [s.flush() for s in shares]
        clock.flush()
        return out

    try:
        return _train_accounted(cfgs, workdirs, sources, devices, total_steps, clock, flush, progress=progress,
                                mode=mode)
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as e:
        flush()
        for cfg, wd in zip(cfgs, workdirs):
            atomic_write_json(wd / "result.json", dict(
                schema=RESULT_SCHEMA, version=__version__, status="failed", model=cfg.model,
                error=f"{type(e).__name__}: {e}"[:2000], config=cfg.to_json()))
        raise


def _stack(trees):
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def _take(tree, i: int):
    import jax

    return jax.tree_util.tree_map(lambda x: x[i], tree)


def _train_accounted(cfgs, workdirs, sources, devices, total_steps, clock, flush, *, progress, mode):
    import hashlib
    import types

    import jax

    from scaling import compute, faults, optim, runtime, steps
    from scaling.checkpoint import Checkpointer
    from scaling.models import registry
    from scaling.platform.xla_cpu import compiler_options
    from scaling.programs import Programs

    k, cfg0, data0 = len(cfgs), cfgs[0], sources[0]
    spec = registry.get(cfg0.model)
    eval_every = cfg0.eval_every or evaluation.default_eval_every(
        total_steps, math.ceil(data0.train_size / cfg0.batch_size))
    progs = Programs(cfg0, data0, devices["device_count"], total_steps)  # init, eval steps, the single step
    shard = progs.parts.batch_sharded
    lr_args = {name: np.stack([optim.schedule_args(c, total_steps)[name] for c in cfgs]) for name in progs.lr_args}
    keys = [jax.random.split(jax.random.key(c.seed)) for c in cfgs]  # (init, step) per trial, as Programs splits
    step_keys = _stack([kk[1] for kk in keys])

    # Resume from the newest step every trial has a checkpoint of (saves are made together).
    ckpts = [Checkpointer(wd / "checkpoints") for wd in workdirs]
    restored = [c.restore_latest(progs.abstract) if c.latest_step() else (0, None, None) for c in ckpts]
    start = min(r[0] for r in restored)
    for i, (s, _, _) in enumerate(restored):
        if start and s != start:
            try:
                restored[i] = (start, *ckpts[i].restore(start, progs.abstract))
            except Exception:  # noqa: BLE001 - no common checkpoint: the whole group starts again
                start = 0
    for src, (_, _, loader_state) in zip(sources, restored):
        if start and loader_state is not None:
            src.check_state(loader_state)

    progs.compile(with_init=not start)
    raw_step = progs.parts.train_step.__wrapped__  # the trainer's step, untransformed
    batch_iters = [src.train_batches(start, total_steps, shard) for src in sources]
    firsts = [next(it) for it in batch_iters] if start < total_steps else []
    # A batch array shared by every trial (the in-memory data set) is broadcast, the rest stacked.
    axes = tuple(None if all(f[0][j] is firsts[0][0][j] for f in firsts) else 0
                 for j in range(len(firsts[0][0]))) if firsts else ()

    def packed(states, *args):
        *batch, key, lr = args
        if mode == "vmap":
            return jax.vmap(raw_step, in_axes=(0, *axes, 0, 0))(states, *batch, key, lr)
        outs = [raw_step(_take(states, i), *(b if ax is None else b[i] for b, ax in zip(batch, axes)), key[i],
                         _take(lr, i)) for i in range(k)]
        return _stack([o[0] for o in outs]), _stack([o[1] for o in outs])

    def stack_batch(batches):
        import jax.numpy as jnp

        return tuple(b0 if ax is None else jnp.stack([b[j] for b in batches])
                     for j, (b0, ax) in enumerate(zip(batches[0], axes)))

    t = time.monotonic()
    state = (_stack([r[1] for r in restored]) if start
             else _stack([progs.init(kk[0]) for kk in keys]))
    jitted = jax.jit(packed, donate_argnums=(0,), compiler_options=compiler_options(spec))  # as steps.build
    fingerprint = None
    if firsts:
        lowered = jitted.lower(state, *stack_batch([f[0] for f in firsts]), step_keys, lr_args)
        fingerprint = hashlib.sha256(lowered.as_text().encode()).hexdigest()[:16]
        with runtime.CacheMisses():
            train_step = lowered.compile()
    clock.add("compile", progs.compile_seconds + time.monotonic() - t)
    clock.compiles_at_load = runtime.compiles_so_far()
    flops_xla = compute.xla_flops(train_step) if firsts else None
    n_params = steps.count_params(progs.abstract["params"])

    logs = []
    for wd in workdirs:
        _rewind_metrics(wd / "metrics.jsonl", start)
        logs.append(open(wd / "metrics.jsonl", "a"))

    def write(i: int, record: dict) -> None:
        logs[i].write(json.dumps(record) + "\n")
        logs[i].flush()

    def evaluate(params, split):
        t0 = time.monotonic()
        out = progs.evaluate(params, split)
        clock.add("eval", time.monotonic() - t0)
        return out

    def save(step: int, which) -> None:
        for i in which:
            ckpts[i].save(step, _take(state, i), sources[i].loader_state(step))

    status, trained = ["done"] * k, [start] * k
    pending: list = []
    data_seconds, seg_examples = 0.0, 0
    last_ckpt_time = t_train = time.monotonic()
    step = start
    try:
        while step < total_steps:
            td = time.monotonic()
            got = firsts if firsts else [next(it) for it in batch_iters]
            firsts = []
            batch = stack_batch([g[0] for g in got])
            data_seconds += time.monotonic() - td
            state, m = train_step(state, *batch, step_keys, lr_args)
            pending.append(m)
            step += 1
            seg_examples += cfg0.batch_size
            faults.point(f"step-{step}")
            at_log = step % cfg0.log_every == 0 or step == total_steps
            at_eval = step % eval_every == 0 and step < total_steps
            ckpt_every = cfg0.checkpoint_every
            ckpt_due = (step % ckpt_every == 0) if ckpt_every else (time.monotonic() - last_ckpt_time > 60)
            if not (at_log or at_eval or ckpt_due):
                continue
            fetched = jax.device_get(pending)
            pending = []
            clock.add("train", time.monotonic() - t_train)
            live = [i for i in range(k) if status[i] == "done"]
            for i in live:
                mine = [{name: v[i] for name, v in f.items()} for f in fetched]
                record = train_record(cfgs[i], sources[i].train_size, step, mine,
                                      seg_examples / max(clock.seconds["train"], 1e-9))
                finite = np.isfinite([f["loss"] for f in mine])
                if not np.all(finite):
                    status[i] = "diverged"
                    trained[i] = step - len(mine) + int(np.argmin(finite))
                    write(i, record)
                    continue
                trained[i] = step
                if at_log:
                    write(i, record)
                if at_eval:
                    vl, va = evaluate(_eval_params(_take(state, i)), "val")
                    write(i, dict(step=step, epoch=record["epoch"], val_loss=vl, val_accuracy=va))
            live = [i for i in live if status[i] == "done"]
            if not live:
                break
            if progress:
                print(f"packed x{k}: step {step}/{total_steps}", file=sys.stderr)
            if ckpt_due:
                save(step, live)
                last_ckpt_time = time.monotonic()
            flush()
            t_train = time.monotonic()
        else:
            save(step, [i for i in range(k) if status[i] == "done"])
    except KeyboardInterrupt:
        jax.block_until_ready(state)
        save(step, [i for i in range(k) if status[i] == "done"])
        flush()
        raise
    finally:
        for f in logs:
            f.close()
        for c in ckpts:
            c.close()
        for it in batch_iters:
            it.close()

    finals = []
    for i in range(k):
        if status[i] == "done":
            faults.point("final-eval")
            params = _eval_params(_take(state, i))
            finals.append((*evaluate(params, "val"), *evaluate(params, "test")))
        else:
            finals.append((float("nan"),) * 4)
    totals = flush()
    group_progs = types.SimpleNamespace(fingerprint=fingerprint)
    results = []
    for i, (cfg, wd) in enumerate(zip(cfgs, workdirs)):
        result = result_record(
            cfg, sources[i], devices, spec, group_progs, totals[i], status=status[i], trained=trained[i],
            total_steps=total_steps, n_params=n_params, flops_xla=flops_xla / k if flops_xla else None,
            seg_examples=seg_examples, seg_train=clock.seconds["train"], data_seconds=data_seconds,
            evals=finals[i], final=_last_train_loss(wd / "metrics.jsonl"))
        result.update(packed_trials=k, packing_mode=mode, packed_with=[str(w) for w in workdirs],
                      group_accelerator_hours=clock.totals()["accelerator_hours"])
        atomic_write_json(wd / "result.json", result)
        results.append(result)
    return results


# ----------------------------------------------------------------------------- CLI


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m scaling.packing",
                      description="Train trials that differ only in seed and lr as one packed group; "
                                  "re-running the same command resumes it.")
    p.add_argument("--config", action="append", required=True, help="a trial's config.json (repeat per trial)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--workdir", action="append", help="a trial's run directory (one per --config, in order)")
    where.add_argument("--workdir-root", help="trials go to ROOT/trial-<i>")
    p.add_argument("--mode", choices=MODES, default="vmap",
                   help="vmap (default): the trials batched into larger kernels; unrolled: K copies of the "
                        "single-trial step in one program (each trial's arithmetic exactly its single run's)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true", help="print the results as a JSON list")
    return p


@entrypoint
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    cfgs = [config_from_args(argparse.Namespace(config=c, examples=None)) for c in args.config]
    workdirs = args.workdir or [Path(args.workdir_root) / f"trial-{i}" for i in range(len(cfgs))]
    results = train_group(cfgs, workdirs, progress=not (args.quiet or args.json), mode=args.mode)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        from scaling.train import summary

        print("\n".join(summary(r) for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
