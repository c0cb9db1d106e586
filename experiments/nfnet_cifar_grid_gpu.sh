#!/bin/bash
# Hyperparameter grid for a ladder NFNet on real CIFAR-10, many runs side by side on one GPU.
#
# Why: the 2-core CPU trains nfnet-f0-w0.125 for ~15 epochs in 30 minutes, one run at a
# time; one H100 runs ten such 15-epoch runs concurrently in ~8 minutes, so the
# learning rate / weight decay / stem choices are explored here and only the best one is
# confirmed on the CPU. Same trainer, same data; GPU convs differ from the CPU's only in
# rounding.
#
#   SCALING_CIFAR10=path/to/cifar10-jpeg.zip bash experiments/nfnet_cifar_grid_gpu.sh [OUTDIR]
#
# Prints one line per run (test / val accuracy, wall seconds, val accuracy every 3 epochs).
set -u
OUTDIR=${1:-${OUT:-/tmp}/nfnet_grid}
mkdir -p "$OUTDIR"
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.08
Z=${SCALING_CIFAR10:?set SCALING_CIFAR10 to the CIFAR-10 ZIP}
python -c "from scaling.data import load; load('cifar10', '$Z')"  # decode once, cached for every run
run() {
  name=$1; shift
  timeout "${GRID_TIMEOUT:-560}" python -m scaling.train --workdir "$OUTDIR/$name" --data "$Z" \
    --model nfnet-f0-w0.125 --batch-size 128 --quiet --json "$@" > "$OUTDIR/$name.json" 2> "$OUTDIR/$name.err" &
}
S16='{"stem_widths":[16,16,16]}'
run lr0.2            --epochs 15 --lr 0.2
run lr0.4            --epochs 15 --lr 0.4
run lr0.2-wd5e-4     --epochs 15 --lr 0.2 --weight-decay 5e-4
run lr0.4-wd1e-4     --epochs 15 --lr 0.4 --weight-decay 1e-4
run lr0.2-agc-off    --epochs 15 --lr 0.2 --agc-clip 0
run lr0.2-bf16       --epochs 15 --lr 0.2 --dtype bfloat16
run lr0.2-wd5e-4-e20 --epochs 20 --lr 0.2 --weight-decay 5e-4
run stem16-lr0.4     --epochs 15 --lr 0.4 --model-kwargs "$S16"
run stem16-lr0.3-wd2e-4 --epochs 15 --lr 0.3 --weight-decay 2e-4 --model-kwargs "$S16"
run b64-lr0.1        --epochs 15 --lr 0.1 --batch-size 64
wait
python - "$OUTDIR" <<'PY'
import json, pathlib, sys
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    try:
        r = json.loads(f.read_text())
    except ValueError:
        print(f"{f.stem:22s} no result: {f.with_suffix('.err').read_text()[-200:]}")
        continue
    m = f.with_suffix("") / "metrics.jsonl"
    ev = [json.loads(x) for x in m.read_text().splitlines() if '"val_accuracy"' in x] if m.exists() else []
    curve = " ".join(f"{e['epoch']:.0f}:{e['val_accuracy']:.3f}" for e in ev if e.get("val_accuracy") is not None)
    print(f"{f.stem:22s} test {r.get('test_accuracy')} val {r.get('val_accuracy')} "
          f"wall {r.get('wall_seconds') or 0:.0f}s  val by epoch {curve}")
PY
