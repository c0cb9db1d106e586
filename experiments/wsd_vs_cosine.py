"""Do WSD cooldown branches match separate cosine runs? (issue 23's validation)

    flock /tmp/scaling-cpu.lock python experiments/wsd_vs_cosine.py --workdir workdirs/wsd-vs-cosine \
        [--models nfnet-f0-w0.125,vit-c1/4] [--epochs 1,2,4,8] [--cooldowns 0.2:1-sqrt,0.1:1-sqrt,0.2:linear]
        [--lr MODEL=LR ...] [--data PATH] [--batch-size 128] [--json]

For each model, at its recipe lr (or ``--lr``): one cosine run per epoch
budget, and one constant-lr stem whose segments end at every branch point
that any cooldown in ``--cooldowns`` needs, with a cooldown branch per
(budget, cooldown) (``scaling.branching``). Prints validation loss and test
accuracy per budget, WSD vs cosine, the relative validation-loss difference
(target: at most 1.5% from 2 epochs on), and the accelerator-hours each way
(the stem counted once). Each run has its own directory under ``--workdir``
and the trainer resumes it, so re-running the same command resumes the
experiment and finished runs are not trained again. ``--epoch-steps N``
makes an "epoch" N steps (quick checks and tests).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scaling.schedules import cooldown_start  # noqa: E402
from scaling.errors import UserError  # noqa: E402

TARGET = 0.015  # |WSD - cosine| / cosine validation loss, budgets of >= 2 epochs


def _cooldowns(text: str) -> list[tuple[float, str]]:
    out = []
    for item in text.split(","):
        frac, _, shape = item.partition(":")
        try:
            f = float(frac)
        except ValueError:
            raise UserError(f"--cooldowns: {item!r} is not FRACTION:SHAPE") from None
        if not (0 < f <= 1) or shape not in ("1-sqrt", "linear"):
            raise UserError(f"--cooldowns: {item!r} needs a fraction in (0, 1] and shape 1-sqrt or linear")
        out.append((f, shape))
    return out


def _train(workdir: Path, args: list[str], log) -> dict:
    """One run through the trainer's CLI (a process of its own; resumed if it exists)."""
    if (workdir / "result.json").exists():
        rec = json.loads((workdir / "result.json").read_text())
        if rec.get("status") != "failed":
            return rec
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "scaling.train", "--workdir", str(workdir), "--quiet", *args]
    log(f"train {workdir.relative_to(workdir.parents[1])}")
    with open(workdir.parent / f"{workdir.name}.log", "ab") as out:
        r = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise SystemExit(f"run {workdir} failed (exit {r.returncode}); see {workdir.parent / (workdir.name + '.log')}")
    return json.loads((workdir / "result.json").read_text())


def plan_model(model: str, epochs: list[float], cooldowns, train_size: int, batch: int, warmup_fraction: float,
               epoch_steps: int | None) -> dict:
    """Steps of every run of one model: cosine totals, stem segment ends, each branch's start."""
    totals = {e: (max(1, round(e * epoch_steps)) if epoch_steps else math.ceil(e * train_size / batch)) for e in epochs}
    warmup = int(round(warmup_fraction * totals[min(epochs)]))
    starts = {(e, c): cooldown_start(totals[e], c[0], min(warmup, totals[e] - 1)) for e in epochs for c in cooldowns}
    return dict(totals=totals, warmup=warmup, starts=starts, segments=sorted(set(starts.values())))


def run_model(model: str, args, cooldowns, train_size: int, log) -> list[dict]:
    from scaling.config import TrainConfig, resolve

    base = resolve(TrainConfig(model=model, batch_size=args.batch_size))
    lr = args.lr.get(model, base.lr)
    p = plan_model(model, args.epochs, cooldowns, train_size, args.batch_size, base.warmup_fraction, args.epoch_steps)
    root = Path(args.workdir) / model.replace("/", "_")
    common = ["--model", model, "--batch-size", str(args.batch_size), "--lr", repr(lr)]
    if args.data:
        common += ["--data", args.data]
    if args.seed is not None:
        common += ["--seed", str(args.seed)]
    length = lambda e: (["--steps", str(p["totals"][e])] if args.epoch_steps else ["--epochs", repr(e)])  # noqa: E731

    cosine = {e: _train(root / f"cosine-e{e:g}", common + length(e), log) for e in args.epochs}
    stems, prev = {}, None
    for end in p["segments"]:
        extra = ["--init-from", str(root / f"stem-{prev}")] if prev is not None else []
        stems[end] = _train(root / f"stem-{end}", common + ["--steps", str(end), "--schedule", "constant",
                                                            "--warmup-steps", str(p["warmup"]),
                                                            "--eval-every", str(end)] + extra, log)
        prev = end
    rows = []
    for e in args.epochs:
        cos = cosine[e]
        row = dict(model=model, epochs=e, lr=lr, steps=p["totals"][e], cosine_val_loss=cos["val_loss"],
                   cosine_test_accuracy=cos["test_accuracy"], cosine_hours=cos["accelerator_hours"], wsd={})
        for frac, shape in cooldowns:
            start = p["starts"][(e, (frac, shape))]
            b = _train(root / f"wsd-e{e:g}-c{frac:g}-{shape}", common + length(e) + [
                "--schedule", "wsd", "--cooldown-fraction", repr(frac), "--cooldown-shape", shape,
                "--warmup-steps", str(p["warmup"]), "--init-from", str(root / f"stem-{start}")], log)
            diff = (b["val_loss"] - cos["val_loss"]) / cos["val_loss"] if b["val_loss"] and cos["val_loss"] else None
            row["wsd"][f"{frac:g}:{shape}"] = dict(
                val_loss=b["val_loss"], test_accuracy=b["test_accuracy"], relative_val_loss_diff=diff,
                branch_step=start, study_hours=b["study_accelerator_hours"],
                standalone_hours=b["accelerator_hours"])
        rows.append(row)
    stem_hours = sum(s["study_accelerator_hours"] for s in stems.values())
    for r in rows:
        r["stem_hours_total"] = stem_hours
    return rows


def table(rows: list[dict], cooldowns) -> str:
    keys = [f"{f:g}:{s}" for f, s in cooldowns]
    head = f"{'model':18s} {'epochs':>6s} {'cos val':>8s} {'cos acc':>7s}" + "".join(
        f" | {k + ' val':>16s} {'diff':>7s}  {'acc':>6s}" for k in keys)
    lines = [head, "-" * len(head)]
    for r in rows:
        line = f"{r['model']:18s} {r['epochs']:6g} {r['cosine_val_loss']:8.4f} {r['cosine_test_accuracy']:7.2%}"
        for k in keys:
            w = r["wsd"][k]
            mark = "*" if r["epochs"] >= 2 and abs(w["relative_val_loss_diff"]) > TARGET else " "
            line += f" | {w['val_loss']:16.4f} {w['relative_val_loss_diff']:+7.2%}{mark} {w['test_accuracy']:6.2%}"
        lines.append(line)
    lines.append(f"(* = |diff| above {TARGET:.1%} of the cosine loss at >= 2 epochs)")
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        cos = sum(r["cosine_hours"] for r in mine)
        wsd = mine[0]["stem_hours_total"] + sum(w["study_hours"] for r in mine for w in r["wsd"].values())
        lines.append(f"{model}: cosine runs {cos:.4f} h; WSD stem + {len(keys)} cooldown set(s) {wsd:.4f} h")
    return "\n".join(lines)


def best_cooldown(rows: list[dict]) -> dict:
    """Per cooldown: the largest |relative diff| over budgets >= 2 epochs (lower is better)."""
    out: dict[str, float] = {}
    for r in rows:
        if r["epochs"] >= 2:
            for k, w in r["wsd"].items():
                out[k] = max(out.get(k, 0.0), abs(w["relative_val_loss_diff"]))
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--models", default="nfnet-f0-w0.125,vit-c1/4")
    p.add_argument("--epochs", default="1,2,4,8")
    p.add_argument("--cooldowns", default="0.2:1-sqrt,0.1:1-sqrt,0.2:linear", help="FRACTION:SHAPE,...")
    p.add_argument("--lr", action="append", default=[], metavar="MODEL=LR", help="lr per model (default: recipe)")
    p.add_argument("--data", help="data source (default: $SCALING_CIFAR10, else TFDS)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int)
    p.add_argument("--epoch-steps", type=int, help="an epoch is this many steps (quick checks)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except UserError as e:  # a mistake in the command: one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    try:
        args.epochs = sorted(float(e) for e in args.epochs.split(","))
    except ValueError:
        raise UserError(f"--epochs must be comma-separated numbers, got {args.epochs!r}") from None
    if not args.epochs or min(args.epochs) <= 0:
        raise UserError("--epochs must be positive")
    lrs = {}
    for item in args.lr:
        model, _, value = item.partition("=")
        try:
            lrs[model] = float(value)
        except ValueError:
            raise UserError(f"--lr {item!r} is not MODEL=LR") from None
    args.lr = lrs
    cooldowns = _cooldowns(args.cooldowns)
    from scaling.data import load

    train_size = load("cifar10", args.data).train_size
    log = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    rows = []
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        rows += run_model(model, args, cooldowns, train_size, log)
    out = dict(rows=rows, worst_relative_diff_from_2_epochs=best_cooldown(rows))
    Path(args.workdir, "wsd_vs_cosine.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2) if args.json else table(rows, cooldowns))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
