"""Does a sweep spend what it was given? Runs fresh studies at several budgets.

    flock /tmp/scaling-cpu.lock python experiments/check_budget_adherence.py \
        [--budgets 0.02 0.05 0.1] [--config cifar10_cnn] [--data PATH] [--out workdirs/adherence]

Each budget gets a fresh study workdir (so its calibration is paid again) and
runs ``python -m scaling.sweep`` to completion. The table reports the spend
recomputed from the study's records (calibration + trials + sweep overhead)
and, as an independent check, the sweep command's own wall-clock (on a
CPU-only machine, one device), both as fractions of the budget. The target is
0.85-1.05. Writes ``adherence.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "cifar10" / "cifar10-jpeg.zip"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budgets", type=float, nargs="+", default=[0.02, 0.05, 0.1])
    p.add_argument("--config", default="cifar10_cnn")
    p.add_argument("--data", default=os.environ.get("SCALING_CIFAR10") or str(DEFAULT_DATA))
    p.add_argument("--out", default=str(REPO / "workdirs" / "adherence"))
    p.add_argument("--keep", action="store_true", help="resume existing workdirs instead of starting fresh")
    args = p.parse_args()
    out = Path(args.out)
    rows = []
    for b in args.budgets:
        work = out / f"budget-{b:g}"
        if work.exists() and not args.keep:
            shutil.rmtree(work)
        cmd = [sys.executable, "-m", "scaling.sweep", "--config", args.config, "--budget", f"{b:g}",
               "--workdir", str(work), "--data", args.data, "--json", "--quiet"]
        t = time.monotonic()
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        wall = time.monotonic() - t
        if r.returncode != 0:
            print(f"budget {b:g}: sweep failed: {r.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            rows.append(dict(budget=b, error=r.stderr.strip()[-500:]))
            continue
        s = json.loads(r.stdout)
        rows.append(dict(
            budget=b, spent=s["spent"], spent_fraction=s["spent"] / b, wall_hours=wall / 3600,
            wall_fraction=wall / 3600 / b, calibration_hours=s["calibration_hours"],
            trial_hours=s["trial_hours"], overhead_hours=s["sweep_overhead_hours"],
            trials=s["trials_total"], finished=s["trials_finished"], command=" ".join(cmd),
        ))
        print(f"budget {b:g}: spent {s['spent']:.5f} ({s['spent'] / b:.3f}), wall {wall / 3600:.5f} h, "
              f"{s['trials_finished']}/{s['trials_total']} trials", file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "adherence.json").write_text(json.dumps(rows, indent=2))
    head = f"{'budget h':>9} {'spent h':>9} {'spent/B':>8} {'wall h':>9} {'wall/B':>7} {'calib h':>8} {'trials':>7}"
    print(head)
    print("-" * len(head))
    ok = True
    for r in rows:
        if "error" in r:
            print(f"{r['budget']:>9g}  failed")
            ok = False
            continue
        print(f"{r['budget']:>9g} {r['spent']:>9.5f} {r['spent_fraction']:>8.3f} {r['wall_hours']:>9.5f} "
              f"{r['wall_fraction']:>7.3f} {r['calibration_hours']:>8.5f} {r['finished']:>3}/{r['trials']:<3}")
        ok &= 0.85 <= r["spent_fraction"] <= 1.05
    print("within 0.85-1.05 of budget" if ok else "OUTSIDE 0.85-1.05 for some budget")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
