"""The CLIs re-run themselves once with glibc's malloc tuned for XLA:CPU, and
that removes the page faults XLA:CPU's per-step temporaries otherwise cost."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO
from scaling.platform import malloc

pytestmark = pytest.mark.skipif(not malloc.wanted({}), reason="needs Linux with glibc")

# Prints its pid and argv, re-executes like a CLI entry point, prints the environment it ended with.
PROBE = """
import os, sys
print("start", os.getpid(), sys.argv[1:], flush=True)
from scaling.platform.malloc import reexec_with_tuned_malloc
reexec_with_tuned_malloc()
print("tunables", os.environ.get("GLIBC_TUNABLES"), os.getpid(), flush=True)
"""

# A jitted backward pass whose temporaries (64 MiB each) are freed after every call.
FAULTS = """
import resource, sys
from scaling.platform.malloc import reexec_with_tuned_malloc
reexec_with_tuned_malloc()
import jax, jax.numpy as jnp
x = jnp.ones((8192, 256)); w1 = jnp.ones((256, 2048)) * 0.01; w2 = jnp.ones((2048, 256)) * 0.01
f = jax.jit(jax.grad(lambda w1, w2: jnp.sum(jnp.tanh(jnp.tanh(x @ w1) @ w2)), argnums=(0, 1)))
for _ in range(15):
    jax.block_until_ready(f(w1, w2))
windows = []  # the least of three windows: a stray allocation elsewhere in the process is not the step's
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        jax.block_until_ready(f(w1, w2))
    windows.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5 * 4096 / 2**20)
print(min(windows))
"""


def _run(code: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "SCALING_MALLOC")}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env={**base, **env},
                          capture_output=True, text=True, timeout=300)


def test_reexecs_once_same_pid_and_arguments():
    r = _run(PROBE, "--model", "x y")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3, lines  # started twice (before and after the exec), finished once
    assert lines[0] == lines[1] and "['--model', 'x y']" in lines[0]
    pid = lines[0].split()[1]
    assert lines[2] == f"tunables {malloc.TUNABLES} {pid}"


@pytest.mark.parametrize("env", [{"SCALING_MALLOC": "off"}, {"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}])
def test_user_choice_is_respected(env):
    r = _run(PROBE, **env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("start"), lines  # no re-exec
    assert lines[1].split()[1] == env.get("GLIBC_TUNABLES", "None")


@pytest.mark.slow
def test_tuned_malloc_removes_page_faults_of_xla_temporaries():
    tuned, untuned = _run(FAULTS), _run(FAULTS, SCALING_MALLOC="off")
    assert tuned.returncode == 0 and untuned.returncode == 0, tuned.stderr + untuned.stderr
    mib_tuned, mib_untuned = float(tuned.stdout.split()[-1]), float(untuned.stdout.split()[-1])
    assert mib_untuned > 32, mib_untuned  # glibc's default: the temporaries are faulted in every call
    assert mib_tuned < 1, mib_tuned


def test_default_environ_drops_only_our_settings():
    env = malloc.default_environ({"GLIBC_TUNABLES": malloc.TUNABLES, "PATH": "/bin"})
    assert "GLIBC_TUNABLES" not in env and env["SCALING_MALLOC"] == "off" and env["PATH"] == "/bin"
    mine = malloc.default_environ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert mine["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"  # a user's own choice is kept


def test_child_step_runs_steps_in_a_child_with_default_malloc():
    """The timm benchmarks run PyTorch this way: one request, one step, in order."""
    from scaling.interleave import ChildStep

    program = (
        "import os, itertools; from scaling.interleave import serve_steps; n = itertools.count(1); "
        "print('noise on stdout must not break the protocol'); "
        "serve_steps(lambda: next(n), os.environ.get('GLIBC_TUNABLES', 'default'))"
    )
    env = malloc.default_environ(dict(os.environ, GLIBC_TUNABLES=malloc.TUNABLES))
    child = ChildStep([sys.executable, "-c", program], env)
    assert child.info == "default"
    assert [child() for _ in range(3)] == ["1", "2", "3"]
    child.close()
    broken = ChildStep.__new__(ChildStep)
    broken._proc = subprocess.Popen([sys.executable, "-c", "pass"], stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
    with pytest.raises(RuntimeError, match="exited with status 0"):
        broken._reply()


def test_console_script_behaves_like_python_m(tmp_path):
    """``scaling-train`` (the console script) goes through the same entrypoint as
    ``python -m scaling.train``: the same malloc re-exec, the same exit codes."""
    import json
    import shutil

    script = shutil.which("scaling-train", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the package is not installed (no scaling-train console script)")
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    results = {}
    for name, cmd in {"module": [sys.executable, "-m", "scaling.train"], "script": [script]}.items():
        bad = subprocess.run([*cmd, "--model", "cnn-xs", "--log-every", "0", "--workdir", str(tmp_path / "bad")],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        good = subprocess.run([*cmd, "--model", "cnn-xs", "--data", "synthetic", "--steps", "2", "--batch-size", "32",
                               "--workdir", str(tmp_path / name), "--quiet"], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=300)
        assert good.returncode == 0, good.stderr
        results[name] = json.loads((tmp_path / name / "result.json").read_text())
    assert results["script"]["host_malloc"] == results["module"]["host_malloc"] == malloc.describe({"GLIBC_TUNABLES": malloc.TUNABLES})
    assert not (tmp_path / "bad").exists()
