"""Where trials run: ``local`` subprocesses, ``ray`` tasks or ``slurm`` jobs (submitit).

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
- ``slurm``: each trial is one submitit job (``sbatch`` on a SLURM cluster, or
  submitit's local executor), its resources from the trial (``Resources``:
  nodes, GPUs per node, CPUs, time limit); the workdir must be on shared
  storage. Preemption and time-outs: submitit's signal makes the job
  interrupt the trainer (SIGINT: it checkpoints) and requeue itself, and the
  requeued job resumes the trial from that checkpoint. A trainer killed
  outright (SIGKILL, the OOM killer, a lost node) ends its job with a
  negative status; the executor then submits the trial again, up to
  ``requeues`` times, and that job resumes from the last checkpoint.
  submitit is an optional extra (``vision-scaling[slurm]``), imported lazily.

Children get ``PR_SET_PDEATHSIG = SIGKILL`` (Linux): if the sweep is killed,
its trials die with it instead of training on unsupervised (a re-run resumes
them from their checkpoints). Local children also inherit the trial's lock fd,
so the trial stays locked until the child is really gone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import dataclasses
import math
import subprocess
import sys
import time
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


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one trial's job asks the scheduler for: one task (one JAX process) per node."""

    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    timeout_min: int = 24 * 60
    mem_gb: float | None = None

    @classmethod
    def for_devices(cls, devices: int, gpus_per_node: int, **kw) -> "Resources":
        """A trial whose mesh has ``devices`` GPUs, on nodes of ``gpus_per_node`` GPUs
        (0: a CPU trial on one node)."""
        if gpus_per_node <= 0:
            return cls(nodes=1, gpus_per_node=0, **kw)
        nodes = math.ceil(devices / gpus_per_node)
        return cls(nodes=nodes, gpus_per_node=min(devices, gpus_per_node), **kw)


class TrialJob:
    """What one submitit job runs: the trainer command as a child process.

    Duck-typed as submitit's ``Checkpointable`` (it has ``checkpoint``), so that
    this module imports without submitit. On a multi-node job every task runs
    the trainer (JAX's cluster detection joins them); task 0 writes ``log_path``.
    """

    POLL_SECONDS = 0.5
    GRACE_SECONDS = 120  # how long the trainer may take to checkpoint on SIGINT

    def __init__(self, cmd: list[str], log_path: str):
        self.cmd, self.log_path = list(cmd), str(log_path)
        self._proc: subprocess.Popen | None = None

    def __getstate__(self):
        return {"cmd": self.cmd, "log_path": self.log_path}

    def __setstate__(self, d):
        self.__init__(d["cmd"], d["log_path"])

    def __call__(self) -> int:
        log_path = self.log_path
        try:
            import submitit

            rank = submitit.JobEnvironment().global_rank
            if rank:
                log_path = f"{log_path}.task{rank}"
        except (ImportError, RuntimeError):
            pass
        with open(log_path, "ab") as log:
            self._proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, preexec_fn=child_preexec)
        try:
            while self._proc.poll() is None:  # poll, not wait(): a signal handler may reap it (checkpoint)
                time.sleep(self.POLL_SECONDS)
        except KeyboardInterrupt:  # the job was cancelled: let the trainer checkpoint first
            self._stop_trainer()
            raise
        return self._proc.returncode

    def _stop_trainer(self) -> None:
        """SIGINT the trainer (it checkpoints and flushes its accounting) and wait for it, then SIGKILL."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        try:
            proc.send_signal(signal.SIGINT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + self.GRACE_SECONDS
        while time.monotonic() < deadline:
            try:  # os.waitpid, not Popen.wait: this may run inside a signal handler during a poll()
                pid, _ = os.waitpid(proc.pid, os.WNOHANG)
            except ChildProcessError:
                return
            if pid:
                return
            time.sleep(0.2)
        proc.kill()

    def checkpoint(self, *args, **kwargs):
        """Preempted or timed out (submitit calls this on the scheduler's signal): stop the
        trainer at a checkpoint and requeue this same trial; the next job resumes it."""
        from submitit.helpers import DelayedSubmission

        self._stop_trainer()
        return DelayedSubmission(TrialJob(self.cmd, self.log_path))


class SlurmExecutor:
    """One submitit job per trial; see the module docstring.

    ``cluster``: ``"slurm"``, ``"local"`` (submitit's local executor: tests, one
    machine) or None (submitit picks: SLURM where ``sbatch`` exists).
    ``resources``: the default request; ``launch`` takes a trial's own.
    ``slurm_parameters``: passed to submitit as ``slurm_<key>`` (partition,
    account, qos, constraint, additional_parameters, ...).
    """

    name = "slurm"

    def __init__(self, folder: str | Path, platform: str, cluster: str | None = None,
                 resources: Resources | None = None, max_jobs: int = 8, requeues: int = 2,
                 slurm_parameters: dict | None = None):
        try:
            import submitit
        except ImportError:
            raise UserError("--executor slurm needs submitit: pip install 'vision-scaling[slurm]'") from None
        self.submitit = submitit
        self.folder = Path(folder)
        self.executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=cluster)
        self.cluster = self.executor.cluster
        self.resources = resources or Resources(gpus_per_node=1 if platform == "gpu" else 0)
        self.slots = max_jobs
        self.requeues = requeues
        self.slurm_parameters = dict(slurm_parameters or {})
        self.running: list[Handle] = []

    def can_launch(self) -> bool:
        return len(self.running) < self.slots

    def _submit(self, trial_id: str, cmd: list[str], log_path: Path, res: Resources):
        params = dict(name=f"trial:{trial_id}", timeout_min=res.timeout_min, nodes=res.nodes, tasks_per_node=1,
                      cpus_per_task=res.cpus_per_task, gpus_per_node=res.gpus_per_node)
        if res.mem_gb is not None:
            params["mem_gb"] = res.mem_gb
        if self.cluster == "slurm":
            params.update({f"slurm_{k}": v for k, v in self.slurm_parameters.items()})
        self.executor.update_parameters(**params)
        return self.executor.submit(TrialJob(cmd, str(log_path)))

    def launch(self, trial_id: str, cmd: list[str], log_path: Path, lock_fd: int | None,
               resources: Resources | None = None) -> Handle:
        """Submit the trial's job. The trial's lock stays with the sweep (a job may run on another node)."""
        res = resources or self.resources
        h = Handle(trial_id, len(self.running), self._submit(trial_id, cmd, log_path, res))
        h.cmd, h.log_path, h.resources, h.requeued = list(cmd), Path(log_path), res, 0
        self.running.append(h)
        return h

    def poll(self) -> list[tuple[Handle, int]]:
        done = []
        for h in list(self.running):
            if not h.obj.done():
                continue
            try:
                rc = int(h.obj.result())
            except Exception:  # the job failed, was cancelled or never produced a result
                rc = -1
            if rc < 0 and h.requeued < self.requeues and not getattr(h, "stopping", False):
                # Killed (a signal): submit the trial again; the trainer resumes from its checkpoint.
                h.requeued += 1
                with open(h.log_path, "a") as log:
                    log.write(f"[slurm executor] job {h.obj.job_id} ended with {rc}; requeued "
                              f"({h.requeued} of {self.requeues})\n")
                h.obj = self._submit(h.trial_id, h.cmd, h.log_path, h.resources)
                continue
            done.append((h, rc))
            self.running.remove(h)
        return done

    def interrupt(self, h: Handle) -> None:
        """Stop a trial at a checkpoint: SIGINT to the job's processes (SLURM), or cancel
        (submitit's local executor, whose job passes SIGINT on to the trainer)."""
        h.stopping = True
        if self.cluster == "slurm":
            subprocess.run(["scancel", "--signal=INT", str(h.obj.job_id)], capture_output=True, timeout=60)
        else:
            h.obj.cancel(check=False)

    def kill(self, h: Handle) -> None:
        h.stopping = True
        h.obj.cancel(check=False)

    def close(self) -> None:
        pass


def make(kind: str, platform: str, ray_address: str | None = None, **options):
    """``options`` go to the executor (``slurm``: folder, cluster, resources, max_jobs, ...)."""
    if kind == "local":
        return LocalExecutor(platform)
    if kind == "ray":
        return RayExecutor(ray_address, platform)
    if kind == "slurm":
        return SlurmExecutor(options.pop("folder", Path.cwd() / "submitit"), platform, **options)
    raise UserError(f"unknown executor {kind!r}; choose local, ray or slurm")
