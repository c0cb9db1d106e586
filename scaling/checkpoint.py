"""Orbax checkpoints of the whole training state and the data loader's position, keyed by step.

Each checkpoint holds two items: ``state`` (the train state) and ``data`` (the
batch source's JSON state, ``BatchSource.loader_state``), saved together, so a
resumed run continues the batch sequence exactly where the model left it.
Checkpoints of the older one-item layout (``default``, no data state) still restore.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orbax.checkpoint as ocp


class Checkpointer:
    """Keeps the latest two checkpoints; each save is atomic (Orbax renames a temp dir).

    ``restore_latest`` verifies each checkpoint by restoring it: one that does
    not restore (truncated or damaged files) is reported in one line and moved
    to ``<directory>-corrupt/`` (kept for inspection, not deleted), and the next
    older one is tried, so a damaged newest checkpoint costs the steps since
    the one before it, not the run.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory).absolute()
        self._mngr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False),
        )

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def save(self, step: int, state, data_state: dict | None = None) -> None:
        """Save ``state`` (and the loader's ``data_state``) as ``step``; a step already saved is left as it is."""
        if self._mngr.latest_step() == step:
            return
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state or {}))
        self._mngr.save(step, args=args, force=True)
        self._mngr.wait_until_finished()

    def restore(self, step: int, abstract_state) -> tuple[object, dict | None]:
        """(state, data state or None) of checkpoint ``step``."""
        if (self.directory / str(step) / "default").is_dir():  # the one-item layout of older versions
            legacy = ocp.CheckpointManager(self.directory, options=ocp.CheckpointManagerOptions(read_only=True))
            try:
                return legacy.restore(step, args=ocp.args.StandardRestore(abstract_state)), None
            finally:
                legacy.close()
        out = self._mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                               data=ocp.args.JsonRestore()))
        return out["state"], (out["data"] or None)

    def restore_latest(self, abstract_state) -> tuple[int, object | None, dict | None]:
        """(step, state, data state) of the newest checkpoint that restores; (0, None, None) if none does."""
        for step in sorted(self._mngr.all_steps(), reverse=True):
            try:
                return (step, *self.restore(step, abstract_state))
            except Exception as e:  # noqa: BLE001 - any failure to read means this one is unusable
                self._set_aside(step, e)
        return 0, None, None

    def _set_aside(self, step: int, error: Exception) -> None:
        aside = self.directory.with_name(self.directory.name + "-corrupt")
        aside.mkdir(exist_ok=True)
        target = aside / str(step)
        n = 1
        while target.exists():
            target, n = aside / f"{step}.{n}", n + 1
        (self.directory / str(step)).rename(target)
        self._mngr.reload()
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        print(f"warning: checkpoint {step} does not restore ({type(error).__name__}: {reason}); "
              f"moved to {target}, resuming from an older one", file=sys.stderr)

    def close(self) -> None:
        self._mngr.close()
