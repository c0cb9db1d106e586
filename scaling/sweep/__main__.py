"""``python -m scaling.sweep --budget HOURS --workdir DIR``: a budgeted study.

Plans a study of the config's model families x sizes x epoch budgets that fits
HOURS accelerator-hours (calibration and compilation included), runs it, and
resumes it when the same command is run again. ``--dry-run`` prints the plan.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from pathlib import Path

from scaling.errors import OneLineParser, UserError
from scaling.platform.entrypoint import entrypoint


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m scaling.sweep",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
        epilog="Study configs: scaling/studies/*.py (packaged; --config NAME) or any PATH.py define get_config() -> dict of StudyConfig fields "
        "(scaling/sweep/study.py). Spend = calibration + every trial's accelerator-hours + sweep overhead, "
        "recomputed from the records in --workdir.",
    )
    p.add_argument("--budget", required=True, help="accelerator-hours to spend (wall-clock x devices), e.g. 0.05")
    p.add_argument("--workdir", required=True, help="study directory (created; re-running resumes it)")
    p.add_argument("--config", default="cifar10_small",
                   help="study config: NAME (scaling/studies/NAME.py), PATH.py or PATH.py:ARG (default: %(default)s)")
    p.add_argument("--families", help="comma-separated model families (overrides the config)")
    p.add_argument("--batch-size", type=int, help="global batch size (overrides the config)")
    p.add_argument("--seed", type=int, help="run a single seed (overrides the config's seeds)")
    p.add_argument("--data", help="data source: ZIP/folder path, 'tfds' or 'synthetic' (overrides the config)")
    p.add_argument("--executor", choices=["local", "ray", "slurm"], default="local",
                   help="local: one trial per accelerator (sequential on CPU); ray: one Ray task per trial; "
                        "slurm: one submitit job per trial (preempted jobs requeue and resume)")
    p.add_argument("--ray-address", help="existing Ray cluster (default: $RAY_ADDRESS, else 'auto')")
    p.add_argument("--slurm-partition", help="slurm: the partition to submit to")
    p.add_argument("--slurm-account", help="slurm: the account to charge")
    p.add_argument("--slurm-time-min", type=int, default=24 * 60, help="slurm: a job's time limit in minutes")
    p.add_argument("--slurm-max-jobs", type=int, default=8, help="slurm: trials queued or running at once")
    p.add_argument("--dry-run", action="store_true",
                   help="calibrate and print the plan, then simulate it (the design tool): expected 95%% interval "
                        "widths of the N* and epochs* exponents; train nothing")
    p.add_argument("--no-design", action="store_true", help="with --dry-run: print the plan only, no simulation")
    p.add_argument("--target-width", help="with --dry-run: the budget whose expected N* exponent interval width "
                                          "is at most this (e.g. 0.2), on this machine")
    p.add_argument("--accelerator", help="with --target-width: also price that study on this accelerator "
                                         "(peak-FLOP table in scaling/compute.py, e.g. h100, a100, tpu-v5p)")
    p.add_argument("--mfu", help="with --accelerator: model FLOP utilisation assumed there (default 0.01: the tiny "
                                 "CIFAR ladders are launch-bound on a GPU)")
    p.add_argument("--placement", choices=["band", "adaptive"], help="where the budget goes (overrides the config)")
    p.add_argument("--json", action="store_true", help="print the plan / summary as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def parse_budget(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"--budget must be a number of accelerator-hours, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"--budget must be a positive number of accelerator-hours, got {text!r}")
    return value


def parse_fraction(text: str | None, flag: str, upper: float | None = None) -> float | None:
    """A positive finite number (at most ``upper``), or None when the flag was not given."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{flag} must be a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0 or (upper is not None and value > upper):
        bound = f" at most {upper:g}" if upper is not None else ""
        raise UserError(f"{flag} must be a positive number{bound}, got {text!r}")
    return value


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM (e.g. preemption): stop trials cleanly, like Ctrl-C


@entrypoint
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if argv is None:
        signal.signal(signal.SIGTERM, _terminate)
    budget = parse_budget(args.budget)
    if args.batch_size is not None and args.batch_size <= 0:
        raise UserError(f"--batch-size must be a positive integer, got {args.batch_size}")
    target_width = parse_fraction(args.target_width, "--target-width")
    mfu = parse_fraction(args.mfu, "--mfu", upper=1.0)
    for flag, given in (("--target-width", target_width), ("--accelerator", args.accelerator), ("--mfu", mfu)):
        if given is not None and not args.dry_run:
            raise UserError(f"{flag} is a question for the design tool: add --dry-run")
    if (args.accelerator is not None or mfu is not None) and target_width is None:
        raise UserError("--accelerator and --mfu price the study of --target-width: add --target-width")
    if target_width is not None and args.no_design:
        raise UserError("--target-width needs the design tool: drop --no-design")
    if args.accelerator is not None:
        from scaling.sweep.design import accelerator_peak

        accelerator_peak(args.accelerator)

    if args.executor == "slurm":
        if args.slurm_time_min < 1 or args.slurm_max_jobs < 1:
            raise UserError("--slurm-time-min and --slurm-max-jobs must be positive")
        import importlib.util

        if importlib.util.find_spec("submitit") is None:
            raise UserError("--executor slurm needs submitit: pip install 'vision-scaling[slurm]'")

    from scaling.sweep import runner, study

    cfg = study.apply_overrides(
        study.load(args.config), families=args.families, batch_size=args.batch_size, seed=args.seed, data=args.data
    )
    if args.placement is not None:
        cfg.placement = args.placement
    cfg = cfg.validate()
    from scaling.data import check_source
    from scaling.sweep import state

    study.check_models(cfg)
    check_source(cfg.dataset, cfg.data_source)
    state.check_workdir(Path(args.workdir))  # every input checked: only now may the study claim it
    opts = runner.Options(
        budget=budget, workdir=Path(args.workdir), executor=args.executor, ray_address=args.ray_address,
        slurm={"partition": args.slurm_partition, "account": args.slurm_account, "time_min": args.slurm_time_min,
               "max_jobs": args.slurm_max_jobs},
        dry_run=args.dry_run, json=args.json, quiet=args.quiet,
        design=not args.no_design, target_width=target_width, accelerator=args.accelerator, mfu=mfu,
    )
    out = runner.Sweep(cfg, opts).run()
    if args.json:
        print(runner.dumps(out))
    if not args.dry_run and not out.get("complete", True):
        print("some trials did not finish; re-run the same command to resume", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
