"""Fair step-time comparisons: interleaved timing and a step served by a child process.

For benchmarks against another framework (``experiments/bench_*_timm.py``):
contenders alternate in blocks of consecutive steps so machine drift hits both,
and the other framework runs in a child process with its own best allocator.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time



def interleaved_medians(steps: dict, rounds: int, warmup: int = 2, block: int = 4) -> dict:
    """Median seconds per step of each callable, run in alternating blocks.

    For comparing frameworks in one process (``experiments/bench_*_timm.py``).
    Alternating the contenders makes the ratio robust to other load on a
    shared machine (each sees the same background on average). Each turn runs
    one untimed step, then ``block`` timed ones: the first step after the
    other framework ran is slow for reasons outside either (thread wake-up,
    memory re-faulted after the other's allocations). Switching on every step
    measured ours at 7.1 s/step against 4.7-4.9 s in consecutive steps.
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps}
    for _ in range(max(1, -(-rounds // block))):
        for name, step in steps.items():
            step()
            for _ in range(block):
                t0 = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def restart_if_compiled(compiled: bool) -> None:
    """For benchmark CLIs: if this process compiled the step itself (a
    persistent-cache miss, see ``scaling.runtime.CacheMisses``), restart once
    so that the step is timed as the trainer runs it, loaded from the cache
    (``scaling.platform.restart`` says why that is faster on XLA:CPU)."""
    import jax

    if compiled and jax.default_backend() == "cpu":
        from scaling.platform import restart

        restart.restart_clean("compiled in this process: restarting once to time the cached program")


class ChildStep:
    """A training step that runs in a child process, called like a local one.

    For comparing against another framework fairly: the child starts with the
    platform's default malloc (``scaling.platform.malloc.default_environ``), so PyTorch does
    not run under the settings tuned for XLA:CPU (measured slower for it:
    timm's NFNet-F0 step 1727 ms default vs 1822 ms tuned, in one session).
    ``argv`` must start a program that calls ``serve_steps``.
    """

    def __init__(self, argv: list[str], env: dict | None = None):
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info = self._reply()

    def _reply(self) -> str:
        while True:
            line = self._proc.stdout.readline()
            if not line:
                raise RuntimeError(f"benchmark child {self._proc.args!r} exited with status {self._proc.wait()}")
            if line.startswith(_REPLY):
                return line[len(_REPLY) :].strip()
            sys.stderr.write(line)  # the child's own output, passed on

    def __call__(self) -> str:
        self._proc.stdin.write("step\n")
        self._proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        self._proc.stdin.close()
        self._proc.wait()


_REPLY = "@scaling.interleave.reply "


def serve_steps(step, info: str = "ready") -> None:
    """The child's side of ``ChildStep``: announce ``info``, then run ``step`` once per request."""
    print(_REPLY + info.replace("\n", " "), flush=True)
    for _ in sys.stdin:
        print(f"{_REPLY}{step()}", flush=True)
