"""Per-device memory from the compiled sharded step (scaling.memory), on the small cnn-xs.

Each CLI call is its own process: it forces as many XLA:CPU host devices as the mesh has.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli

ARGS = ["--model", "cnn-xs", "--batch-size", "64", "--num-classes", "10"]


def _report(mesh: str, *extra: str) -> dict:
    r = run_cli("scaling.memory", *ARGS, "--mesh", mesh, "--json", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def reports() -> dict:
    return {m: _report(m, "--device-memory-gb", "1") for m in ("data=4", "fsdp=4")}


def _expected_param_bytes(fsdp: int) -> int:
    """cnn-xs's parameter bytes on one device under the sharding rule, from shapes alone."""
    import jax
    import jax.numpy as jnp

    from scaling import sharding
    from scaling.models import registry

    model = registry.get("cnn-xs").build(num_classes=10, image_size=32)
    shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False)["params"],
                            jax.random.PRNGKey(0))
    held = 0
    for x in jax.tree_util.tree_leaves(shapes):
        n = int(np.prod(x.shape)) * x.dtype.itemsize
        held += n // fsdp if "fsdp" in tuple(sharding.param_spec(x.shape, fsdp)) else n
    return held


def test_fsdp_holds_a_quarter_of_the_sharded_params(reports):
    dp, fs = reports["data=4"]["per_device"], reports["fsdp=4"]["per_device"]
    assert dp["params"] == reports["data=4"]["params_total_bytes"] == _expected_param_bytes(1)
    assert fs["params"] == _expected_param_bytes(4) < dp["params"] / 3
    # SGD with momentum: one moment per parameter, placed like its parameter.
    assert fs["opt_state"] == fs["params"] and dp["opt_state"] == dp["params"]
    assert fs["batch"] == dp["batch"] == 16 * (32 * 32 * 3 * 4 + 4)


def test_the_compiled_program_accounts_for_every_byte(reports):
    for r in reports.values():
        d = r["per_device"]
        assert r["compiled"] and r["devices"] == 4 and r["backend"] == "cpu"
        # The step's inputs are exactly the state shards and the batch slice (plus key and lr scalars).
        assert 0 <= d["arguments"] - (d["params"] + d["opt_state"] + d["batch"]) < 1024
        assert d["aliased"] > 0  # the donated state is updated in place
        assert d["temporaries"] > 0
        assert d["peak"] == d["arguments"] + d["outputs"] - d["aliased"] + d["temporaries"]
        assert r["fits"] == (d["peak"] <= 2**30) and r["fits"]


def test_human_report_and_no_compile():
    r = run_cli("scaling.memory", *ARGS, "--mesh", "fsdp=2", "--no-compile", "--device-memory-gb", "80")
    assert r.returncode == 0, r.stderr
    assert "params" in r.stdout and "not compiled" in r.stdout and "per device" in r.stdout


@pytest.mark.parametrize("extra, message", [
    (["--mesh", "data=3"], "not divisible by the mesh's 3 devices"),
    (["--mesh", "tensor=2"], "unknown axis"),
    (["--mesh", "fsdp=2", "--device-memory-gb", "0"], "--device-memory-gb must be positive"),
    (["--mesh", "fsdp=2", "--model-kwargs", "[1]"], "must be a JSON object"),
])
def test_bad_input_is_one_line_exit_2(extra, message):
    r = run_cli("scaling.memory", *ARGS, *extra)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
