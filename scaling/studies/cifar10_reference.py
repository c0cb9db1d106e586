"""Reference study: NFNet vs ViT ladders on CIFAR-10, about one hour of a 2-core CPU.

    python -m scaling.sweep --config cifar10_reference --budget 1 --workdir workdirs/cifar10_reference
    python -m scaling.fit workdirs/cifar10_reference --out experiments/cifar10_reference/fit

The small-scale analogue of P23 Fig. 2: each family's four smallest ladder
models, epoch budgets 0.25..4 (factor 2; 8 epochs of even the smallest model
would take a quarter of the budget), the learning rate tuned per epoch budget
on the smallest model (P23's factor-2 rule), and the planner's diagonal band of
(size, epochs) cells where the compute-optimal frontier is expected. The
committed results are in experiments/cifar10_reference/ (see its README).
"""


def get_config(arg=None):
    if arg is not None:
        raise ValueError(f"unknown variant {arg!r}")
    return dict(
        name="cifar10_reference",
        dataset="cifar10",
        families=["nfnet", "vit"],
        ladders={
            "nfnet": ["nfnet-f0-w0.125", "nfnet-f1-w0.125", "nfnet-f0-w0.25", "nfnet-f1-w0.25"],
            "vit": ["vit-c0/4", "vit-c1/4", "vit-c2/4", "vit-c3/4"],
        },
        epochs=[0.125, 0.25, 0.5, 1, 2, 4],
        batch_size=128,
        seeds=[0],
        lr_strategy="tune",
        # Short budgets favour the high end: start at 4x, 2x and 1x the family
        # recipe's lr (NFNet 0.2 / 0.1 / 0.05, ViT 2.8e-3 / 1.4e-3 / 7.1e-4 at
        # batch 128; one-epoch probes put the optimum near 0.2 and 2e-3).
        lr_first_multipliers=[4.0, 2.0, 1.0],
        lr_size_factor=1.0,
        band_width=1.0,
        min_sizes=4,  # issue 7: at least 4 sizes x 3 epoch budgets per family
        min_epoch_budgets=3,
        plan_fraction=0.95,
    )
