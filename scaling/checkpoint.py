"""Orbax checkpoints of the whole training state, keyed by step."""

from __future__ import annotations

from pathlib import Path

import orbax.checkpoint as ocp


class Checkpointer:
    """Keeps the latest two checkpoints; each save is atomic (Orbax renames a temp dir)."""

    def __init__(self, directory: str | Path):
        self._mngr = ocp.CheckpointManager(
            Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False),
        )

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def save(self, step: int, state) -> None:
        """Save ``state`` as ``step``; a step that is already saved is left as it is."""
        if self._mngr.latest_step() == step:
            return
        self._mngr.save(step, args=ocp.args.StandardSave(state), force=True)
        self._mngr.wait_until_finished()

    def restore(self, step: int, abstract_state):
        return self._mngr.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def close(self) -> None:
        self._mngr.close()
