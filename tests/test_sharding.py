"""FSDP sharding (scaling.sharding): the rule, the mesh checks, and FSDP == data-parallel on real data.

The 4-device runs happen in a child process started with
``--xla_force_host_platform_device_count=4`` (the flag must be set before
JAX starts, and this pytest process may already have started it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from scaling import sharding
from scaling.errors import UserError

from conftest import REPO

STEPS = 20

CHILD = textwrap.dedent("""
    import io, json, sys, zipfile
    import numpy as np
    from PIL import Image
    import jax
    from scaling import optim, sharding
    from scaling.config import TrainConfig, resolve

    zip_path, steps, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    # A real CIFAR-10 slice: the first images of every class, shuffled with a fixed seed.
    with zipfile.ZipFile(zip_path) as z:
        names = sorted(n for n in z.namelist() if n.startswith("train/") and n.endswith(".jpg"))
        classes = sorted({n.split("/")[1] for n in names})
        per = steps * batch // len(classes) + 1
        picked = [n for c in classes for n in [m for m in names if m.split("/")[1] == c][:per]]
        images = np.stack([np.asarray(Image.open(io.BytesIO(z.read(n))).convert("RGB")) for n in picked])
        labels = np.array([classes.index(n.split("/")[1]) for n in picked], np.int32)
    order = np.random.default_rng(0).permutation(len(picked))[: steps * batch]
    x = ((images[order] / 255.0 - 0.5) / 0.25).astype(np.float32)
    y = labels[order]

    cfg = resolve(TrainConfig(model="cnn-xs", batch_size=batch, lr=0.4))
    out = {}
    for name in ["data=4", "fsdp=4"]:
        mesh = sharding.make_mesh(sharding.parse_mesh(name, jax.device_count()))
        s = sharding.build(cfg, mesh, num_classes=10, image_size=32)
        state = s.init_state(jax.random.PRNGKey(0))
        leaves = []
        for path, p in jax.tree_util.tree_leaves_with_path(state["params"]):
            shards = [sh.data.shape for sh in p.addressable_shards]
            leaves.append(dict(path=jax.tree_util.keystr(path), shape=list(p.shape),
                               spec=str(p.sharding.spec), shards=[list(t) for t in shards],
                               devices=sorted(sh.device.id for sh in p.addressable_shards)))
        opt = [dict(shape=list(o.shape), shards=[list(sh.data.shape) for sh in o.addressable_shards])
               for o in jax.tree_util.tree_leaves(state["opt_state"])]
        args = optim.schedule_args(cfg, steps)
        key = jax.random.PRNGKey(1)
        losses = []
        for i in range(steps):
            sl = slice(i * batch, (i + 1) * batch)
            state, m = s.train_step(state, jax.device_put(x[sl], s.batch), jax.device_put(y[sl], s.batch), key, args)
            losses.append(float(m["loss"]))
        out[name] = dict(losses=losses, params=leaves, opt=opt,
                         fraction=sharding.shard_fraction(state["params"]))
    print("RESULT " + json.dumps(out))
""")


DIST_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from scaling import sharding
    from scaling.errors import UserError

    mode, steps = sys.argv[1], int(sys.argv[2])
    if mode == "multi":  # one of 2 processes, 1 CPU device each
        try:
            sharding.init_distributed(sys.argv[3], 2, int(sys.argv[4]), timeout_s=int(sys.argv[5]))
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    import jax
    from scaling import optim
    from scaling.config import TrainConfig, resolve

    batch = 32
    rng = np.random.default_rng(0)  # the same global batches in every process
    x = rng.normal(size=(steps, batch, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, size=(steps, batch)).astype(np.int32)
    cfg = resolve(TrainConfig(model="cnn-xs", batch_size=batch, lr=0.4))
    mesh = sharding.make_mesh(sharding.parse_mesh("fsdp=2", jax.device_count()))
    s = sharding.build(cfg, mesh, num_classes=10, image_size=32)
    state = s.init_state(jax.device_put(jax.random.PRNGKey(0), s.replicated))
    key = jax.device_put(jax.random.PRNGKey(1), s.replicated)
    args = optim.schedule_args(cfg, steps)
    n, p = jax.process_count(), jax.process_index()
    rows = slice(p * batch // n, (p + 1) * batch // n)  # this process's slice of the global batch
    losses = []
    for i in range(steps):
        xb, yb = sharding.global_batch(x[i, rows], s.batch), sharding.global_batch(y[i, rows], s.batch)
        state, m = s.train_step(state, xb, yb, key, args)
        losses.append(float(m["loss"]))
    if p == 0:
        print("RESULT " + json.dumps(dict(losses=losses, processes=n, devices=jax.device_count())))
""")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _result(stdout: str) -> dict:
    return json.loads([ln for ln in stdout.splitlines() if ln.startswith("RESULT ")][-1][len("RESULT "):])


def test_two_processes_equal_one_process_with_two_devices():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    one = subprocess.run([sys.executable, "-c", DIST_CHILD, "single", str(STEPS)], capture_output=True, text=True,
                         env={**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}, cwd=REPO, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    coord = f"127.0.0.1:{_free_port()}"
    procs = [subprocess.Popen([sys.executable, "-c", DIST_CHILD, "multi", str(STEPS), coord, str(i), "60"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
             for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    a, b = _result(one.stdout), _result(outs[0][0])
    assert (a["processes"], a["devices"], b["processes"], b["devices"]) == (1, 2, 2, 2)
    assert "RESULT" not in outs[1][0]  # only process 0 reports
    print(f"2 processes vs 1 process x 2 devices, fsdp=2, {STEPS} steps: max relative difference "
          f"{np.max(np.abs(np.array(b['losses']) / np.array(a['losses']) - 1)):.2e}")
    np.testing.assert_allclose(b["losses"], a["losses"], rtol=1e-5, atol=0)


def test_bad_distributed_input_is_one_line():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", DIST_CHILD, "multi", "1", f"127.0.0.1:{_free_port()}", "1", "5"],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert p.returncode == 2 and time.monotonic() - t0 < 60
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot be reached within 5 s" in lines[0], p.stderr
    with pytest.raises(UserError, match="out of range for 2 processes"):
        sharding.init_distributed("127.0.0.1:1234", 2, 2)
    with pytest.raises(UserError, match="go together"):
        sharding.init_distributed("127.0.0.1:1234", None, 0)


@pytest.fixture(scope="module")
def runs(cifar10_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    p = subprocess.run([sys.executable, "-c", CHILD, cifar10_path, str(STEPS), "32"], capture_output=True,
                       text=True, env=env, cwd=REPO, timeout=800)
    assert p.returncode == 0, p.stderr[-3000:]
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_fsdp_equals_data_parallel(runs):
    dp, fsdp = np.array(runs["data=4"]["losses"]), np.array(runs["fsdp=4"]["losses"])
    assert len(dp) == STEPS and np.all(np.isfinite(dp))
    assert dp[-1] < dp[0]  # it trains (the lr is high enough to move in 20 steps)
    print(f"fsdp=4 vs data=4 over {STEPS} steps: loss {dp[0]:.4f} -> {dp[-1]:.4f}, "
          f"max relative difference {np.max(np.abs(fsdp / dp - 1)):.2e}")
    np.testing.assert_allclose(fsdp, dp, rtol=1e-5, atol=0)


def test_each_device_holds_a_quarter(runs):
    sharded_bytes = total = 0
    for leaf in runs["fsdp=4"]["params"]:
        n = int(np.prod(leaf["shape"]))
        total += n
        assert leaf["devices"] == [0, 1, 2, 3]
        if "fsdp" in leaf["spec"]:
            sharded_bytes += n
            for shard in leaf["shards"]:  # 1/4 of the array on each of the 4 devices
                assert int(np.prod(shard)) * 4 == n
        else:  # replicated only because small or indivisible (the rule)
            assert n < sharding.MIN_SHARD_ELEMENTS or all(d % 4 for d in leaf["shape"])
            assert all(shard == leaf["shape"] for shard in leaf["shards"])
    assert sharded_bytes / total > 0.9  # the convolutions: almost all of cnn-xs
    # Optimizer moments mirror their parameters' placement.
    shapes = {tuple(leaf["shape"]): leaf["shards"] for leaf in runs["fsdp=4"]["params"]}
    for o in runs["fsdp=4"]["opt"]:
        if tuple(o["shape"]) in shapes:
            assert o["shards"] == shapes[tuple(o["shape"])]
    # Data-parallel replicates everything.
    assert runs["data=4"]["fraction"] == 1.0
    assert runs["fsdp=4"]["fraction"] < 0.3


def test_param_rule():
    from jax.sharding import PartitionSpec as P

    assert sharding.param_spec((3, 3, 64, 128), 4) == P(None, None, None, "fsdp")
    assert sharding.param_spec((768, 3072), 8) == P(None, "fsdp")
    assert sharding.param_spec((3072, 768), 8) == P("fsdp", None)
    assert sharding.param_spec((1000, 7), 3) == P()  # no dimension divisible by 3: replicated
    assert sharding.param_spec((768,), 4) == P()  # small: replicated
    assert sharding.param_spec((4096, 4096), 1) == P()  # no fsdp axis


def test_mesh_parsing_and_bad_meshes():
    assert sharding.parse_mesh("data=2,fsdp=4", 8) == sharding.MeshSpec(2, 4)
    assert sharding.parse_mesh("fsdp=8") == sharding.MeshSpec(1, 8)
    assert sharding.parse_mesh(None, 4) == sharding.MeshSpec(4, 1)
    for bad, why in [("data=2,fsdp=4", "has 8 devices but this run has 4"), ("tensor=4", "unknown axis"),
                     ("fsdp=0", "positive"), ("fsdp:4", "AXIS=SIZE"), ("fsdp=2,fsdp=2", "twice")]:
        with pytest.raises(UserError, match=why) as e:
            sharding.parse_mesh(bad, 4)
        assert "\n" not in str(e.value)
