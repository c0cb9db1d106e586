"""Default study: NFNets vs ViTs on CIFAR-10, the method of Smith et al. 2023 at small scale.

    python -m scaling.sweep --config cifar10_small --budget 2 --workdir workdirs/cifar10_small

Epoch budgets 0.25..8 (factor 2, as in P23 Fig. 3); lr tuned per epoch budget
on a factor-2 grid, 2 trials per budget on each family's smallest model, reused
by the larger models. The planner picks sizes and epochs along the diagonal
where the compute-optimal frontier is expected.
"""


def get_config(arg=None):
    return dict(
        name="cifar10_small",
        dataset="cifar10",
        families=["nfnet", "vit"],
        epochs=[0.25, 0.5, 1, 2, 4, 8],
        batch_size=128,
        seeds=[0],
        lr_strategy="tune",
        lr_first_multipliers=[1.0, 0.5],
        lr_size_factor=1.0,
        band_width=1.0,
        plan_fraction=0.95,
    )
