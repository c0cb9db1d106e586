"""Host memory of a streaming run over data far above the memory cap:
``python -m scaling.data.memory_check CIFAR10_ZIP [--images N] [--cap-gb G]``.

Builds, in a temporary folder, ``N`` real images from the ZIP re-saved at
160-320 px per side and converted to ArrayRecord (so their decoded size is
well above ``--cap-gb``), trains ``cnn-xs`` on them through ``scaling.train``
(``auto`` must pick streaming) and samples the run's resident memory (the
trainer and any worker processes) once a second. Prints RSS at the start of
training, at its end and the peak: a streaming run's memory should not grow
with the data read. Everything it writes is deleted at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from scaling.platform.entrypoint import entrypoint


def build(zip_path: str, root: Path, n: int, seed: int = 0) -> int:
    """``n`` train and ``n // 10`` test images at random 160-320 px sizes; their decoded bytes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    decoded = 0
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(x for x in zf.namelist() if x.count("/") == 2 and not x.endswith("/"))
        for split, k in (("train", n), ("test", max(n // 10, 10))):
            for x in [m for m in names if m.startswith(split + "/")][:k]:
                out = root / x
                out.parent.mkdir(parents=True, exist_ok=True)
                w, h = (int(v) for v in rng.integers(160, 321, 2))
                Image.open(io.BytesIO(zf.read(x))).convert("RGB").resize((w, h)).save(out, quality=90)
                decoded += w * h * 3
    return decoded


@entrypoint
def main(argv: list[str] | None = None) -> int:
    import psutil

    from scaling.data import convert

    p = argparse.ArgumentParser(prog="python -m scaling.data.memory_check", description=__doc__.split("\n\n")[0])
    p.add_argument("zip", help="the CIFAR-10 JPEG ZIP (or any <split>/<class>/<file> ZIP)")
    p.add_argument("--images", type=int, default=4000, help="training images to build (default %(default)s)")
    p.add_argument("--cap-gb", type=float, default=0.05, help="--memory-cap-gb of the run (default %(default)s)")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        decoded = build(args.zip, tmp / "images", args.images)
        convert.convert(tmp / "images", tmp / "records", progress=False)
        cmd = [sys.executable, "-m", "scaling.train", "--model", "cnn-xs", "--data", str(tmp / "records"),
               "--image-size", "64", "--memory-cap-gb", str(args.cap_gb), "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--log-every", "10", "--workdir", str(tmp / "run"), "--json",
               "--quiet"]
        env = {**os.environ, "SCALING_RESTART_AFTER_COMPILE": "off"}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        me = psutil.Process(proc.pid)
        samples = []  # (seconds, rss bytes, steps logged so far)
        metrics = tmp / "run" / "metrics.jsonl"
        t0 = time.monotonic()
        while proc.poll() is None:
            try:
                rss = sum(q.memory_info().rss for q in [me] + me.children(recursive=True))
            except psutil.Error:
                break
            logged = len(metrics.read_text().splitlines()) if metrics.exists() else 0
            samples.append((time.monotonic() - t0, rss, logged))
            time.sleep(1.0)
        out, err = proc.communicate()
        if proc.returncode != 0:
            print(err[-2000:], file=sys.stderr)
            return 1
        result = json.loads(out)
    training = [s for s in samples if s[2] > 0]  # once the first steps are logged
    mib = lambda b: b / 2**20  # noqa: E731
    report = dict(
        decoded_gib=decoded / 2**30, cap_gib=args.cap_gb, ratio=decoded / (args.cap_gb * 2**30),
        pipeline=result["data_pipeline"], reason=result["data_pipeline_reason"], steps=result["steps"],
        examples=result["examples_seen"], train_size=result["train_size"],
        rss_start_mib=mib(training[0][1]) if training else None, rss_end_mib=mib(training[-1][1]) if training else None,
        rss_peak_mib=mib(max(s[1] for s in samples)),
        # RSS at each tenth of the training samples: flat, or still growing?
        rss_trace_mib=[round(mib(training[int(i * (len(training) - 1) / 10)][1])) for i in range(11)] if training else [],
    )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
