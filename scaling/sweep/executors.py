"""Where trials run: ``local`` subprocesses or ``ray`` tasks.

Every trial is a separate training process (``python -m scaling.train
--config ... --workdir ...``): isolation, a clean accelerator per trial, and a
process that can be killed at any time and resumed from its checkpoint.

- ``local``: one trial per local NVIDIA GPU (``CUDA_VISIBLE_DEVICES`` set per
  slot), else one trial at a time using every local device (CPU, or a TPU
  host's chips).
- ``ray``: each trial is a Ray task with its resource request (1 GPU, or
  ``cpus_per_trial`` CPUs) on an existing cluster (``--ray-address``); the task
  runs the same subprocess on whichever node Ray picks, so the study workdir
  must be on storage that node sees. Ray is an optional extra, imported lazily.

Children get ``PR_SET_PDEATHSIG = SIGKILL`` (Linux): if the sweep is killed,
its trials die with it instead of training on unsupervised (a re-run resumes
them from their checkpoints). Local children also inherit the trial's lock fd,
so the trial stays locked until the child is really gone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from scaling.errors import UserError

_PR_SET_PDEATHSIG = 1


def child_preexec() -> None:
    """In the child: die when the parent dies (Linux only; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except OSError:
            pass


def gpu_ids() -> list[str]:
    """The NVIDIA GPUs this process may use: $CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [x.strip() for x in env.split(",") if x.strip() and x.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def one_device_env() -> dict[str, str]:
    """Environment for a process that should see one accelerator (calibration)."""
    env = dict(os.environ)
    ids = gpu_ids()
    if ids:
        env["CUDA_VISIBLE_DEVICES"] = ids[0]
    return env


class Handle:
    def __init__(self, trial_id: str, slot: int, obj: Any):
        self.trial_id, self.slot, self.obj = trial_id, slot, obj


class LocalExecutor:
    name = "local"

    def __init__(self, platform: str):
        self.gpus = gpu_ids() if platform == "gpu" else []
        self.slots = max(len(self.gpus), 1)
        self.free = list(range(self.slots))
        self.running: list[Handle] = []

    def can_launch(self) -> bool:
        return bool(self.free)

    def launch(self, trial_id: str, cmd: list[str], log_path: Path, lock_fd: int | None) -> Handle:
        slot = self.free.pop(0)
        env = dict(os.environ)
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot]
        log = open(log_path, "ab")
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            pass_fds=(lock_fd,) if lock_fd is not None else (), preexec_fn=child_preexec,
        )
        log.close()
        h = Handle(trial_id, slot, proc)
        self.running.append(h)
        return h

    def poll(self) -> list[tuple[Handle, int]]:
        done = []
        for h in list(self.running):
            rc = h.obj.poll()
            if rc is not None:
                done.append((h, rc))
                self.running.remove(h)
                self.free.append(h.slot)
        return done

    def interrupt(self, h: Handle) -> None:
        """Ask a trial to stop (SIGINT: the trainer checkpoints and flushes its accounting)."""
        if h.obj.poll() is None:
            h.obj.send_signal(signal.SIGINT)

    def kill(self, h: Handle) -> None:
        if h.obj.poll() is None:
            h.obj.kill()

    def close(self) -> None:
        pass


def _ray_trial(cmd: list[str], log_path: str) -> int:
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=child_preexec)
        try:
            return proc.wait()
        except BaseException:
            proc.kill()
            raise


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None, platform: str, cpus_per_trial: int = 1):
        try:
            import ray
        except ImportError:
            raise UserError("--executor ray needs Ray: pip install 'vision-scaling[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            try:
                ray.init(address=address or os.environ.get("RAY_ADDRESS") or "auto",
                         log_to_driver=False, include_dashboard=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = address or os.environ.get("RAY_ADDRESS") or "auto"
                raise UserError(f"cannot connect to the Ray cluster at {where!r}: {str(e).splitlines()[0]}") from None
        res = ray.cluster_resources()
        self.gpu = platform == "gpu" and res.get("GPU", 0) >= 1
        if self.gpu:
            self.options = dict(num_gpus=1, num_cpus=1)
            self.slots = int(res["GPU"])
        else:
            self.options = dict(num_cpus=cpus_per_trial)
            self.slots = max(1, int(res.get("CPU", 1) // cpus_per_trial))
        self.remote = ray.remote(max_retries=0)(_ray_trial)
        self.running: list[Handle] = []

    def can_launch(self) -> bool:
        return len(self.running) < self.slots

    def launch(self, trial_id: str, cmd: list[str], log_path: Path, lock_fd: int | None) -> Handle:
        ref = self.remote.options(**self.options, name=f"trial:{trial_id}").remote(cmd, str(log_path))
        h = Handle(trial_id, len(self.running), ref)
        self.running.append(h)
        return h

    def poll(self) -> list[tuple[Handle, int]]:
        if not self.running:
            return []
        refs = [h.obj for h in self.running]
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        done = []
        for h in [h for h in self.running if h.obj in ready]:
            try:
                rc = self.ray.get(h.obj)
            except Exception:  # the task or its worker died
                rc = -1
            done.append((h, rc))
            self.running.remove(h)
        return done

    def interrupt(self, h: Handle) -> None:
        self.ray.cancel(h.obj, force=True)

    def kill(self, h: Handle) -> None:
        self.ray.cancel(h.obj, force=True)

    def close(self) -> None:
        pass


def make(kind: str, platform: str, ray_address: str | None = None):
    if kind == "local":
        return LocalExecutor(platform)
    if kind == "ray":
        return RayExecutor(ray_address, platform)
    raise UserError(f"unknown executor {kind!r}; choose local or ray")
