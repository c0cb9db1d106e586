"""Plumbing study: the small plain-CNN ladder on CIFAR-10 (minutes on a CPU).

    python -m scaling.sweep --config cifar10_cnn --budget 0.05 --workdir workdirs/cnn

Used by experiments/check_budget_adherence.py and the sweep tests
(``--data synthetic``). ``:tiny`` keeps the two smallest models and three short
epoch budgets, for fast tests.
"""


def get_config(arg=None):
    cfg = dict(
        name="cifar10_cnn",
        dataset="cifar10",
        families=["cnn"],
        # P23's 0.25..8 plus 0.125: at 0.02 accelerator-hours (72 s) the minimal
        # study (two epoch budgets of cnn-xs) only fits from 1/8 epoch.
        epochs=[0.125, 0.25, 0.5, 1, 2, 4, 8],
        batch_size=128,
        seeds=[0],
        lr_strategy="tune",
        plan_fraction=0.95,
    )
    if arg == "tiny":
        cfg.update(name="cifar10_cnn_tiny", ladders={"cnn": ["cnn-xs", "cnn-s"]}, epochs=[0.25, 0.5, 1],
                   batch_size=64)
    elif arg is not None:
        raise ValueError(f"unknown variant {arg!r} (known: tiny)")
    return cfg
