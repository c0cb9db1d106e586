"""Compute of an epoch ladder as WSD branches vs separate cosine runs (issue 23).

    python -m scaling.sweep --config wsd_ladder:cosine --budget 2 --workdir workdirs/ladder-cosine
    python -m scaling.sweep --config wsd_ladder:wsd --budget 2 --workdir workdirs/ladder-wsd

One model (cnn-xs), one fixed lr, epochs 1, 2, 4, 8, 16 on CIFAR-10: the cosine
study trains 31 epochs, the WSD study one stem to 12.8 epochs plus cooldowns of
6.2 (20%). Variants: ``cosine``, ``wsd`` (20% 1-sqrt cooldown), ``wsd0.1``
(10%); ``:<variant>,small`` uses the ladder 0.25 .. 4 instead.

    python experiments/wsd_ladder.py workdirs/ladder-cosine workdirs/ladder-wsd

compares two finished studies from their records: accelerator-hours spent
(every trial process, calibration and sweep overhead apart), steps trained,
the fixed costs (compile, evaluation, set-up, process start-up) and the
saving, measured; and what the hours would be at one common step time (the
machine's load changes the step time between and within studies).
"""

import json
import sys
from pathlib import Path


def get_config(arg=None):
    variant, _, size = (arg or "wsd").partition(",")
    cfg = dict(
        name=f"wsd_ladder_{variant}{'_' + size if size else ''}",
        dataset="cifar10",
        families=["cnn"],
        ladders={"cnn": ["cnn-xs"]},
        epochs=[0.25, 0.5, 1, 2, 4] if size == "small" else [1, 2, 4, 8, 16],
        batch_size=128,
        seeds=[0],
        lr_strategy="fixed",
        fill_replicates=False,
        min_sizes=1,
    )
    if variant == "wsd":
        cfg.update(schedule="wsd", cooldown_fraction=0.2)
    elif variant == "wsd0.1":
        cfg.update(schedule="wsd", cooldown_fraction=0.1)
    elif variant != "cosine":
        raise ValueError(f"unknown variant {variant!r} (known: cosine, wsd, wsd0.1)")
    return cfg


def _measure(workdir: str) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from scaling.sweep import ledger, state

    paths = state.Paths(Path(workdir))
    snap = ledger.snapshot(paths)
    parts = dict.fromkeys(("compile", "train", "eval", "other"), 0.0)
    steps = 0
    for tid, rec in snap.trials.items():
        acct = state.read_json(paths.run_dir(tid) / "accounting.json") or {}
        for seg in acct.get("segments", []):
            if not seg.get("inherited"):
                for k in parts:
                    parts[k] += seg[k] * seg["devices"]
        r = rec.result or {}
        steps += r.get("steps", 0) - (r.get("stem") or {}).get("step", 0)
    overhead = sum(rec.overhead_hours for rec in snap.trials.values()) * 3600
    return dict(trial_hours=snap.trial_hours, total_hours=snap.total, steps=steps, trials=len(snap.trials),
                complete=all(r.finished for r in snap.trials.values()),
                fixed_seconds=parts["compile"] + parts["eval"] + parts["other"] + overhead,
                seconds_per_step=parts["train"] / max(steps, 1))


def compare(cosine_dir: str, wsd_dir: str) -> dict:
    cos, wsd = _measure(cosine_dir), _measure(wsd_dir)
    step = (cos["seconds_per_step"] + wsd["seconds_per_step"]) / 2
    at_common = {k: (m["steps"] * step + m["fixed_seconds"]) / 3600 for k, m in (("cosine", cos), ("wsd", wsd))}
    return dict(cosine=cos, wsd=wsd, saving_measured=1 - wsd["trial_hours"] / cos["trial_hours"],
                saving_steps=1 - wsd["steps"] / cos["steps"], common_seconds_per_step=step,
                hours_at_common_step=at_common, saving_at_common_step=1 - at_common["wsd"] / at_common["cosine"])


if __name__ == "__main__":
    print(json.dumps(compare(*sys.argv[1:3]), indent=2))
