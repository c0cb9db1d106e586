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
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: one trial per accelerator (sequential on CPU); ray: one Ray task per trial")
    p.add_argument("--ray-address", help="existing Ray cluster (default: $RAY_ADDRESS, else 'auto')")
    p.add_argument("--dry-run", action="store_true", help="calibrate and print the plan; train nothing")
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

    from scaling.sweep import runner, study

    cfg = study.apply_overrides(
        study.load(args.config), families=args.families, batch_size=args.batch_size, seed=args.seed, data=args.data
    ).validate()
    from scaling.data import check_source
    from scaling.sweep import state

    study.check_models(cfg)
    check_source(cfg.dataset, cfg.data_source)
    state.check_workdir(Path(args.workdir))  # every input checked: only now may the study claim it
    opts = runner.Options(
        budget=budget, workdir=Path(args.workdir), executor=args.executor, ray_address=args.ray_address,
        dry_run=args.dry_run, json=args.json, quiet=args.quiet,
    )
    out = runner.Sweep(cfg, opts).run()
    if args.json:
        print(runner.dumps(out))
    if not args.dry_run and not out.get("complete", True):
        print("some trials did not finish; re-run the same command to resume", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
