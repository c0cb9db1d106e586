"""Compute of an epoch ladder as WSD branches vs separate cosine runs (issue 23).

    python -m scaling.sweep --config wsd_ladder:cosine --budget 2 --workdir workdirs/ladder-cosine
    python -m scaling.sweep --config wsd_ladder:wsd --budget 2 --workdir workdirs/ladder-wsd

One model (cnn-xs), one fixed lr, epochs 1, 2, 4, 8, 16 on CIFAR-10: the cosine
study trains 31 epochs, the WSD study one stem to 12.8 epochs plus cooldowns of
6.2 (20%). Variants: ``cosine``, ``wsd`` (20% 1-sqrt cooldown), ``wsd0.1``
(10%); ``:<variant>,small`` uses the ladder 0.25 .. 4 instead.
"""


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
