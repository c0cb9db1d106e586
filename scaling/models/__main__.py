"""``python -m scaling.models``: the registry with parameters and training FLOPs."""

from __future__ import annotations

import json
import sys

from scaling.errors import OneLineParser
from scaling.platform.entrypoint import entrypoint


def rows(family: str | None = None, num_classes: int = 10) -> list[dict]:
    import jax
    import numpy as np

    from scaling.compute import train_flops_per_example
    from scaling.models import all_specs

    out = []
    for spec in all_specs():
        if family and spec.family != family:
            continue
        size = spec.default_image_size
        model = spec.build(num_classes=num_classes, image_size=size)
        x = jax.ShapeDtypeStruct((1, size, size, 3), np.float32)
        shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
        params = int(sum(np.prod(s.shape) for s in jax.tree_util.tree_leaves(shapes)))
        out.append(
            dict(
                name=spec.name,
                family=spec.family,
                ladder_rank=spec.ladder_rank,
                params=params,
                image_size=size,
                train_flops_per_example=train_flops_per_example(spec, size, num_classes),
                description=spec.description,
            )
        )
    return out


@entrypoint
def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(
        prog="python -m scaling.models",
        description="List registered models: parameters and training FLOPs per example "
        "(FLOP = 2 x MAC, forward + backward) at each model's default resolution.",
    )
    p.add_argument("--family", help="only this family")
    p.add_argument("--num-classes", type=int, default=10, help="classifier size (default 10, CIFAR-10)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    table = rows(args.family, args.num_classes)
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    print(f"{'name':<28} {'family':<9} {'ladder':>6} {'params':>14} {'px':>4} {'train GFLOP/ex':>15}")
    for r in table:
        rank = "" if r["ladder_rank"] is None else str(r["ladder_rank"])
        print(f"{r['name']:<28} {r['family']:<9} {rank:>6} {r['params']:>14,} {r['image_size']:>4} "
              f"{r['train_flops_per_example'] / 1e9:>15.4f}")
    print(f"({len(table)} models, {args.num_classes}-class head; FLOP = 2 x MAC, training = forward + backward)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
