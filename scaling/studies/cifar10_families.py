"""All-family plumbing study: NFNet, ViT, ResNet, CCT, DeiT, Swin and MobileViT on CIFAR-10.

    python -m scaling.sweep --config cifar10_families --budget 1 --workdir workdirs/families
    python -m scaling.fit workdirs/families

Every family's three smallest CIFAR ladder models (about 11-500 MFLOPs a
forward pass at 32 px), the short epoch budgets of ``cifar10_cnn``, the lr
tuned per epoch budget on each family's smallest model from its recipe's lr.
It checks that every family plans, trains, is priced and fitted side by side
on a CPU; the budget is that of ``cifar10_cnn`` scaled to seven families of
heavier models. ``:tiny`` keeps two models a family and two epoch budgets.
"""

LADDERS = {
    "nfnet": ["nfnet-f0-w0.125", "nfnet-f1-w0.125", "nfnet-f0-w0.25"],
    "vit": ["vit-c0/4", "vit-c1/4", "vit-c2/4"],
    "resnet": ["resnet-c0", "resnet-c1", "resnet-c2"],
    "cct": ["cct-2/3x2", "cct-4/3x2", "cct-6/3x2"],
    "deit": ["deit-c0/4", "deit-c1/4", "deit-c2/4"],
    "swin": ["swin-c0", "swin-c1", "swin-c2"],
    "mobilevit": ["mobilevit-c0", "mobilevit-c1", "mobilevit-c2"],
}


def get_config(arg=None):
    cfg = dict(
        name="cifar10_families",
        dataset="cifar10",
        families=list(LADDERS),
        ladders={f: list(m) for f, m in LADDERS.items()},
        epochs=[0.125, 0.25, 0.5, 1, 2],
        batch_size=128,
        seeds=[0],
        lr_strategy="tune",
        plan_fraction=0.95,
    )
    if arg == "tiny":
        cfg.update(name="cifar10_families_tiny", ladders={f: m[:2] for f, m in LADDERS.items()},
                   epochs=[0.125, 0.25], min_sizes=2, min_epoch_budgets=2)
    elif arg is not None:
        raise ValueError(f"unknown variant {arg!r} (known: tiny)")
    return cfg
