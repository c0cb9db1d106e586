"""One training run: ``python -m scaling.train --model NAME --epochs E --workdir DIR``.

The run's workdir holds ``config.json`` (everything needed to re-run it),
``metrics.jsonl`` (one JSON object per logged step or evaluation),
``checkpoints/`` (Orbax), ``accounting.json`` (time spent so far, across
interruptions) and, at the end, ``result.json``. Running the same command on
the same workdir resumes from the last checkpoint and ends with the same
result as an uninterrupted run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from scaling import __version__, evaluation
from scaling.config import TrainConfig, check_fields, check_length, parse_crop_scale, resolve
from scaling.errors import OneLineParser, UserError
from scaling.paths import atomic_write_bytes, atomic_write_json, read_json
from scaling.platform import restart
from scaling.platform.entrypoint import entrypoint

RESULT_SCHEMA = 1


class Accounting:
    """Wall-clock seconds per part, per process segment, persisted atomically.

    Accelerator-hours = wall-clock x devices, summed over every segment of the
    run (an interrupted run's earlier segments included), each part recorded.
    """

    PARTS = ("compile", "train", "eval", "other")

    def __init__(self, path: Path, device_count: int, seconds_before: float = 0.0):
        """``seconds_before``: time this segment spent before it was created
        (a clean restart's hand-over, see ``RestartAfterCompile``), as ``other``."""
        self.path, self.device_count = path, device_count
        self.previous = read_json(path)["segments"] if path.exists() else []
        self.seconds = {k: 0.0 for k in self.PARTS}
        self.t0 = time.monotonic() - seconds_before
        # runtime.compiles_so_far() once the steps are loaded: later compiles
        # are recorded as ``late_compiles`` (they slow XLA:CPU; should stay 0).
        self.compiles_at_load: int | None = None

    def add(self, part: str, seconds: float) -> None:
        self.seconds[part] += seconds

    def segment(self) -> dict:
        from scaling import runtime

        wall = time.monotonic() - self.t0
        late = 0 if self.compiles_at_load is None else runtime.compiles_so_far() - self.compiles_at_load
        known = sum(self.seconds[k] for k in ("compile", "train", "eval"))
        return {**self.seconds, "other": max(wall - known, 0.0), "wall": wall, "devices": self.device_count,
                "late_compiles": late}

    def totals(self) -> dict:
        segs = self.previous + [self.segment()]
        hours = {k: sum(s[k] * s["devices"] for s in segs) / 3600 for k in self.PARTS}
        return dict(
            segments=segs,
            accelerator_hours=sum(s["wall"] * s["devices"] for s in segs) / 3600,
            accelerator_hours_breakdown=hours,
            wall_seconds=sum(s["wall"] for s in segs),
            compile_seconds=sum(s["compile"] for s in segs),
        )

    def flush(self) -> dict:
        totals = self.totals()
        atomic_write_json(self.path, totals)
        return totals


def _check_workdir(workdir: Path) -> None:
    """Create the run directory (inputs are validated by now) or say why it cannot be one."""
    if workdir.exists() and not workdir.is_dir():
        raise UserError(f"workdir {workdir} is a file, not a directory")
    if (workdir / "study.json").exists():
        raise UserError(f"workdir {workdir} holds a sweep study; use a new --workdir for a single run")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"workdir {workdir} is not writable ({e.strerror})") from None


def _claim_config(workdir: Path, cfg: TrainConfig) -> None:
    """Write config.json, or check that the workdir's existing run is this one."""
    path = workdir / "config.json"
    mine = cfg.to_json()
    if path.exists():
        theirs = read_json(path)
        if isinstance(theirs, dict) and set(theirs) <= set(mine):  # written before a field existed: its default
            theirs = TrainConfig.from_json(theirs).to_json()
        if theirs != json.loads(json.dumps(mine)):
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise UserError(
                f"workdir {workdir} holds a different run (differs in {', '.join(diff[:4])}); "
                "use a new --workdir"
            )
    else:
        atomic_write_json(path, mine)


def _rewind_metrics(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint we resume from)."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    atomic_write_bytes(path, ("\n".join(keep) + "\n" if keep else "").encode())


class RestartAfterCompile(Exception):
    """This process compiled the steps itself; the CLI restarts once to train in
    a process that loads them from the persistent cache (see
    ``scaling.platform.restart``: 30-50% faster steps on XLA:CPU)."""


def run(cfg: TrainConfig, workdir: str | os.PathLike, *, progress: bool = True,
        restart_after_compile: float | None = None) -> dict:
    """Train (or resume) ``cfg`` in ``workdir``; return the contents of ``result.json``.

    Every input is validated (config, data, run length, workdir) before the
    workdir is claimed, so a mistake leaves the filesystem as it was. A crash
    that is not the user's mistake (out of memory, a bug) is recorded as
    ``status: failed`` with the error, so a sweep sees it and moves on; the
    same command then retries it from its last checkpoint, the failed
    attempt's time charged once. ``restart_after_compile`` (CLIs only): raise
    ``RestartAfterCompile`` when, on a CPU, this process compiled the steps
    itself (persistent-cache miss) for at least that many seconds; None: never.
    """
    from scaling import runtime

    runtime.setup()
    from scaling import compute
    from scaling.data import batch_sources, selection

    if not str(workdir).strip():
        raise UserError("--workdir must be a directory path, got ''")
    cfg = resolve(cfg)
    from scaling import branching

    if cfg.init_from is not None:  # a WSD branch or stem segment: its stem must fit it (before any write)
        branching.check_stem(cfg)
    workdir = Path(workdir)
    devices = compute.device_info()
    choice = selection.choose(cfg)
    data = batch_sources.open_source(cfg, choice)  # validated: nothing written yet
    if progress:
        print(f"data pipeline: {choice.pipeline} ({choice.reason})", file=sys.stderr)
    total_steps = check_length(cfg, data.train_size, devices["device_count"])
    data.channel_stats()  # streaming: decodes up to 1,000 training images (memoised), before any write
    _check_workdir(workdir)
    _claim_config(workdir, cfg)
    previous = _previous_result(workdir)
    if previous is not None:
        return previous
    # WSD hook (scaling.branching): a run with init_from starts from its stem's checkpoint; stems'
    # and branches' records get their stem and study-spend fields.
    return branching.run(cfg, workdir, lambda: _train(cfg, workdir, data, devices, total_steps, progress=progress,
                                                      restart_after_compile=restart_after_compile))


def _previous_result(workdir: Path) -> dict | None:
    """A finished run's result; a ``failed`` one is set aside (``attempts/``) to be retried."""
    path = workdir / "result.json"
    if not path.exists():
        return None
    result = read_json(path)
    if result.get("status") != "failed":
        return result
    attempts = workdir / "attempts"
    attempts.mkdir(exist_ok=True)
    os.replace(path, attempts / f"failed-{len(list(attempts.glob('failed-*.json'))) + 1}.json")
    return None


def _train(cfg: TrainConfig, workdir: Path, data, devices: dict, total_steps: int, *, progress: bool,
           restart_after_compile: float | None) -> dict:
    handed_over = restart.restarted_at()
    acct = Accounting(workdir / "accounting.json", devices["device_count"],
                      seconds_before=max(time.time() - handed_over, 0.0) if handed_over else 0.0)
    try:
        return _train_accounted(cfg, workdir, data, devices, total_steps, acct, progress=progress,
                                restart_after_compile=restart_after_compile)
    except (UserError, KeyboardInterrupt, RestartAfterCompile):
        raise
    except Exception as e:
        acct.flush()  # the failed attempt's time is charged (once: a retry adds its own segment)
        atomic_write_json(workdir / "result.json", dict(
            schema=RESULT_SCHEMA, version=__version__, status="failed", model=cfg.model,
            error=f"{type(e).__name__}: {e}"[:2000], config=cfg.to_json(),
        ))
        raise


def _train_accounted(cfg: TrainConfig, workdir: Path, data, devices: dict, total_steps: int, acct: Accounting,
                     *, progress: bool, restart_after_compile: float | None) -> dict:
    import jax

    from scaling import compute, faults, runtime, steps
    from scaling.checkpoint import Checkpointer
    from scaling.models import registry
    from scaling.programs import Programs

    spec = registry.get(cfg.model)
    steps_per_epoch = math.ceil(data.train_size / cfg.batch_size)
    eval_every = cfg.eval_every or evaluation.default_eval_every(total_steps, steps_per_epoch)
    progs = Programs(cfg, data, devices["device_count"], total_steps)
    lr_args, step_key = progs.lr_args, progs.step_key
    shard = progs.parts.batch_sharded

    # The newest checkpoint that restores (a damaged one is set aside), before
    # anything compiles; its data-loader state must be this pipeline's.
    ckpt = Checkpointer(workdir / "checkpoints")
    start, restored, loader_state = ckpt.restore_latest(progs.abstract) if ckpt.latest_step() else (0, None, None)
    if loader_state is not None:
        data.check_state(loader_state)
        if int(loader_state["step"]) != start:
            raise RuntimeError(f"checkpoint {start} holds the data-loader state of step {loader_state['step']}")
    progs.compile(with_init=not start)
    train_step = progs.train
    acct.add("compile", progs.compile_seconds)
    if restart.should_restart(progs.fresh, restart_after_compile, jax.default_backend()):
        acct.flush()
        ckpt.close()
        raise RestartAfterCompile
    acct.compiles_at_load = runtime.compiles_so_far()
    flops_xla = compute.xla_flops(train_step)

    state = restored if start else progs.init(progs.init_key)
    n_params = steps.count_params(state["params"])
    metrics_path = workdir / "metrics.jsonl"
    _rewind_metrics(metrics_path, start)
    log = open(metrics_path, "a")

    def write(record: dict) -> None:
        log.write(json.dumps(record) + "\n")
        log.flush()

    def evaluate(params, split: str) -> tuple[float, float]:
        t0 = time.monotonic()
        out = progs.evaluate(params, split)
        acct.add("eval", time.monotonic() - t0)
        return out

    batches = data.train_batches(start, total_steps, shard)
    trace = os.environ.get("SCALING_TRACE_IDS")  # tests: append each step's example ids to this file
    trace_file = open(trace, "a") if trace else None
    bar = _progress(progress, total_steps, start, cfg.model)
    ckpt_every = cfg.checkpoint_every
    last_ckpt_time = time.monotonic()
    pending: list = []
    status, data_seconds, seg_examples = "done", 0.0, 0
    t_train = time.monotonic()
    step = trained = start  # trained: steps whose losses were all finite
    try:
        while step < total_steps:
            td = time.monotonic()
            batch, ids = next(batches)
            data_seconds += time.monotonic() - td
            if trace_file is not None:
                trace_file.write(json.dumps({"step": step, "ids": [int(i) for i in ids]}) + "\n")
                trace_file.flush()
            state, m = train_step(state, *batch, step_key, lr_args)
            pending.append(m)
            step += 1
            seg_examples += cfg.batch_size
            faults.point(f"step-{step}")
            at_log = step % cfg.log_every == 0 or step == total_steps
            at_eval = step % eval_every == 0 and step < total_steps
            ckpt_due = (step % ckpt_every == 0) if ckpt_every else (time.monotonic() - last_ckpt_time > 60)
            if not (at_log or at_eval or ckpt_due):
                continue
            fetched = jax.device_get(pending)
            pending = []
            now = time.monotonic()
            acct.add("train", now - t_train)
            losses = np.array([f["loss"] for f in fetched])
            record = train_record(cfg, data.train_size, step, fetched, seg_examples / max(acct.seconds["train"], 1e-9))
            finite = np.isfinite(losses)
            if not np.all(finite):
                status = "diverged"
                trained = step - len(losses) + int(np.argmin(finite))
                write(record)
                break
            trained = step
            if at_log:
                write(record)
                if bar is not None:
                    bar.update(step - bar.n)
                    bar.set_postfix(loss=f"{record['train_loss']:.3f}")
            if at_eval:
                vl, va = evaluate(_eval_params(state), "val")
                write(dict(step=step, epoch=record["epoch"], val_loss=vl, val_accuracy=va))
            if ckpt_due:
                ckpt.save(step, state, data.loader_state(step))
                last_ckpt_time = time.monotonic()
            acct.flush()
            t_train = time.monotonic()
        else:
            ckpt.save(step, state, data.loader_state(step))
    except KeyboardInterrupt:
        # Keep what was done: checkpoint and account, then stop.
        jax.block_until_ready(state)
        ckpt.save(step, state, data.loader_state(step))
        acct.flush()
        raise
    finally:
        if bar is not None:
            bar.close()
        log.close()
        ckpt.close()
        batches.close()
        data.close()
        if trace_file is not None:
            trace_file.close()

    if status == "done":
        faults.point("final-eval")
        val_loss, val_acc = evaluate(_eval_params(state), "val")
        test_loss, test_acc = evaluate(_eval_params(state), "test")
    else:
        val_loss = val_acc = test_loss = test_acc = float("nan")
    final = _last_train_loss(metrics_path)
    totals = acct.flush()
    result = result_record(cfg, data, devices, spec, progs, totals, status=status, trained=trained,
                           total_steps=total_steps, n_params=n_params, flops_xla=flops_xla,
                           seg_examples=seg_examples, seg_train=acct.seconds["train"], data_seconds=data_seconds,
                           evals=(val_loss, val_acc, test_loss, test_acc), final=final)
    atomic_write_json(workdir / "result.json", result)
    return result


def train_record(cfg: TrainConfig, train_size: int, step: int, fetched: list, images_per_second: float) -> dict:
    """One metrics.jsonl line: the means of the steps' metrics since the last one (shared with ``scaling.packing``)."""
    return dict(
        step=step,
        epoch=step * cfg.batch_size / train_size,
        examples=step * cfg.batch_size,
        train_loss=float(np.mean([f["loss"] for f in fetched])),
        train_accuracy=float(np.mean([f["accuracy"] for f in fetched])),
        grad_norm=float(np.mean([f["grad_norm"] for f in fetched])),
        lr=float(fetched[-1]["lr"]),
        images_per_second=images_per_second,
    )


def result_record(cfg: TrainConfig, data, devices: dict, spec, progs, totals: dict, *, status: str, trained: int,
                  total_steps: int, n_params: int, flops_xla, seg_examples: int, seg_train: float,
                  data_seconds: float, evals: tuple, final) -> dict:
    """The contents of result.json (shared with ``scaling.packing``, whose trials write the same record)."""
    from scaling import compute
    from scaling.platform import malloc

    val_loss, val_acc, test_loss, test_acc = evals
    image_size = data.image_size
    epochs = total_steps * cfg.batch_size / data.train_size
    flops_per_example = compute.train_flops_per_example(spec, image_size, data.num_classes)
    train_hours = totals["accelerator_hours_breakdown"]["train"]
    examples_seen = trained * cfg.batch_size
    ips = seg_examples / seg_train if seg_train > 0 else None
    peak = compute.peak_flops(devices["device_kind"])
    result = dict(
        schema=RESULT_SCHEMA,
        version=__version__,
        status=status,
        model=cfg.model,
        family=spec.family,
        params=n_params,
        dataset=cfg.dataset,
        dataset_hash=data.content_hash,
        image_size=image_size,
        eval_image_size=data.eval_image_size,
        data_pipeline=data.pipeline,
        data_pipeline_reason=data.choice.reason,
        num_classes=data.num_classes,
        train_size=data.train_size,
        epochs=epochs,
        steps=trained,
        planned_steps=total_steps,
        batch_size=cfg.batch_size,
        examples_seen=examples_seen,
        lr=cfg.lr,
        seed=cfg.seed,
        val_loss=_num(val_loss),
        val_accuracy=_num(val_acc),
        test_loss=_num(test_loss),
        test_accuracy=_num(test_acc),
        train_loss=final,
        flops_convention="FLOP = 2 x multiply-accumulate; training = forward + backward (3 x forward)",
        flops_per_example=flops_per_example,
        flops_per_example_xla=flops_xla / cfg.batch_size * devices["device_count"] if flops_xla else None,
        program_fingerprint=progs.fingerprint,
        host_malloc=malloc.describe(),
        train_flops=flops_per_example * examples_seen,
        accelerator_hours=totals["accelerator_hours"],
        accelerator_hours_breakdown=totals["accelerator_hours_breakdown"],
        compile_seconds=totals["compile_seconds"],
        wall_seconds=totals["wall_seconds"],
        segments=len(totals["segments"]),
        device_kind=devices["device_kind"],
        device_count=devices["device_count"],
        images_per_second=ips,
        data_seconds_fraction=data_seconds / seg_train if seg_train > 0 else None,
        peak_flops_per_device=peak,
        peak_flops_source="vendor dense bf16 peak" if peak else "unknown for this device (see scaling.bench --measure-peak)",
        mfu=compute.mfu(flops_per_example * ips, devices["device_kind"], devices["device_count"]) if ips else None,
        train_accelerator_hours=train_hours,
        config=cfg.to_json(),
    )
    return result


def _eval_params(state):
    return state.get("ema", state["params"])


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _last_train_loss(path: Path) -> float | None:
    lines = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    losses = [r["train_loss"] for r in lines if "train_loss" in r]
    return _num(losses[-1]) if losses else None


def _progress(enabled: bool, total: int, start: int, name: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc=name, unit="step", dynamic_ncols=True, file=sys.stderr)


# ----------------------------------------------------------------------------- CLI


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")
    return text == "on"


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m scaling.train",
        description="Train one model; re-running the same command on the same --workdir resumes it.",
    )
    p.add_argument("--workdir", required=True, help="run directory (created; resumed if it exists)")
    p.add_argument("--config", help="a config.json (TrainConfig fields); flags override it")
    p.add_argument("--model", help="registry name (see `python -m scaling.models`)")
    p.add_argument("--dataset", help="cifar10 or any TFDS image-classification name")
    p.add_argument("--data", dest="data_source", help="ZIP/folder path, 'tfds' or 'synthetic'")
    p.add_argument("--val-size", type=int, help="validation images held out of train")
    p.add_argument("--image-size", type=int, help="train resolution: resize (in memory) or crop (streaming) to "
                   "this (default: native in memory, the model's default when streaming)")
    p.add_argument("--data-pipeline", choices=["auto", "memory", "stream"],
                   help="memory: the whole data set decoded on the device (fast, exact; one image size); "
                        "stream: Grain reads and crops from disk (any size, any amount). auto (default): memory "
                        "when the decoded data fits --memory-cap-gb and all images share one size, else stream; "
                        "the run prints and records which and why")
    p.add_argument("--memory-cap-gb", type=float, help="auto: the most decoded data kept in memory "
                   "(default: a quarter of this machine's memory)")
    p.add_argument("--eval-image-size", type=int, help="streaming: eval resolution (resize + centre crop; "
                   "default: the train resolution; NFNet-F0 reference: --image-size 192 --eval-image-size 256)")
    p.add_argument("--crop-scale", type=parse_crop_scale, metavar="MIN,MAX",
                   help="streaming: area range of the random-resized crop, 0 < MIN <= MAX <= 1 (default 0.08,1)")
    dur = p.add_mutually_exclusive_group()
    dur.add_argument("--epochs", type=float, help="training length in epochs (fractional allowed)")
    dur.add_argument("--steps", type=int, help="training length in steps")
    dur.add_argument("--examples", type=int, help="training length in examples")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--optimizer", choices=["sgd", "adamw"])
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--weight-decay-mode", choices=["coupled", "decoupled"],
                   help="coupled: L2 added to the gradient; decoupled: AdamW-style")
    p.add_argument("--warmup-fraction", type=float)
    p.add_argument("--schedule", choices=["cosine", "wsd", "constant"],
                   help="lr schedule: cosine (default); wsd: warmup, constant, cooldown to 0; "
                        "constant: warmup then constant (a WSD stem)")
    p.add_argument("--cooldown-fraction", type=float, help="wsd: share of the run that cools down (default 0.2)")
    p.add_argument("--cooldown-shape", choices=["1-sqrt", "linear"], help="wsd cooldown shape (default 1-sqrt)")
    p.add_argument("--warmup-steps", type=int, help="warmup length in steps (overrides --warmup-fraction)")
    p.add_argument("--init-from", type=lambda s: str(Path(s).absolute()), metavar="RUN_DIR",
                   help="start from the last checkpoint of this finished run (a WSD stem)")
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--agc-clip", type=float, help="AGC lambda (0 disables)")
    p.add_argument("--agc-skip-gains", type=_on_off, metavar="{on,off}",
                   help="AGC also clips SkipInit gains (NF21 reference: on)")
    p.add_argument("--grad-clip-norm", type=float, help="global-norm clip (0 disables)")
    p.add_argument("--mixup-alpha", type=float)
    p.add_argument("--ema-decay", type=float)
    p.add_argument("--no-augment", dest="augment", action="store_false", default=None)
    p.add_argument("--dtype", dest="compute_dtype", choices=["float32", "bfloat16"])
    p.add_argument("--model-kwargs", type=json.loads, help="JSON dict passed to the model builder")
    p.add_argument("--eval-every", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--log-every", type=int)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print result.json to stdout")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    base: dict = {}
    if args.config:
        try:
            base = read_json(args.config)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read --config {args.config}: {e}") from None
        if not isinstance(base, dict):
            raise UserError(f"--config {args.config} must hold a JSON object, got {type(base).__name__}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for key, value in vars(args).items():
        if key in fields and value is not None:
            base[key] = value
    cfg = check_fields(TrainConfig.from_json(base))
    if args.examples is not None:
        if args.examples <= 0:
            raise UserError(f"--examples must be positive, got {args.examples}")
        cfg.steps = math.ceil(args.examples / cfg.batch_size)
    return cfg


@entrypoint
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    cfg = config_from_args(args)
    progress = not args.quiet and not args.json
    try:
        result = run(cfg, args.workdir, progress=progress, restart_after_compile=restart.threshold())
    except RestartAfterCompile:
        restart.restart_clean("compiled in this process: restarting once to train with the cached programs "
                      "(XLA:CPU runs them 30-50% faster in a process that did not compile)")
        result = run(cfg, args.workdir, progress=progress)  # could not restart: train here
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(summary(result))
    return 0


def summary(r: dict) -> str:
    if r.get("status") == "failed":
        return f"{r.get('model', '?')} [failed] {r.get('error', 'no error recorded')}"

    def pct(x):
        return f"{x:.2%}" if x is not None else "n/a"

    vl = f"{r['val_loss']:.4f}" if r.get("val_loss") is not None else "n/a"
    mfu = f"{r['mfu']:.1%}" if r.get("mfu") else "unknown"
    ips = f"{r['images_per_second']:.0f}" if r.get("images_per_second") else "n/a"
    return (
        f"{r['model']} [{r['status']}] {r['epochs']:.3g} epochs, {r['steps']} steps: "
        f"val loss {vl}, val acc {pct(r.get('val_accuracy'))}, test acc {pct(r.get('test_accuracy'))}\n"
        f"  {r['params']:,} params, {r['flops_per_example'] / 1e9:.3f} GFLOP/example (train), "
        f"{r['train_flops']:.3e} FLOP total, {ips} img/s, MFU {mfu}, "
        f"host data time {pct(r.get('data_seconds_fraction'))} of step time\n"
        f"  {r['accelerator_hours']:.4f} accelerator-hours on {r['device_count']} x {r['device_kind']} "
        f"(compile {r['compile_seconds']:.1f} s, wall {r['wall_seconds']:.1f} s)"
    )


if __name__ == "__main__":
    sys.exit(main())
