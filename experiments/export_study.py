"""Copy a sweep workdir's records, without checkpoints or locks, for committing.

    python experiments/export_study.py workdirs/cifar10_reference experiments/cifar10_reference/results

Keeps the study's plan, calibration, summary and every trial's config.json,
result.json, metrics.jsonl and accounting.json: what ``python -m scaling.fit``
and the notebooks read. Checkpoints are large and derived from training, so
they stay out of the repository.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

SKIP_DIRS = {"checkpoints"}
SKIP_SUFFIXES = {".lock", ".tmp"}


def export(src: Path, dst: Path) -> int:
    n = 0
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if path.is_dir() or SKIP_DIRS & set(rel.parts) or path.suffix in SKIP_SUFFIXES:
            continue
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, out)
        n += 1
    return n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workdir", type=Path)
    p.add_argument("out", type=Path)
    args = p.parse_args()
    if not (args.workdir / "study.json").is_file():
        print(f"error: {args.workdir} is not a sweep workdir (no study.json)", file=sys.stderr)
        return 2
    if args.out.exists():
        shutil.rmtree(args.out)
    print(f"copied {export(args.workdir, args.out)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
