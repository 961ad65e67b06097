"""Orbax checkpoints: the train state, the config (JSON) and every process's data-iterator state.

Saves are asynchronous and atomic (Orbax writes to a temporary directory and renames it when the
save is complete), so a run killed at any moment leaves only whole checkpoints. Restoring takes
abstract arrays with target shardings, so a checkpoint restores onto any mesh. Training restores
the whole state (`Checkpointer.restore`); using a model restores only its weights
(`CheckpointReader.restore_subtree`: the EMA or trainable parameters and the frozen ones, no
optimizer state), which is what vlogger_jax/models/loading.py does; the reader opens a run
without a CheckpointManager and changes nothing on disk.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be restored into this run (with a one-sentence reason)."""


def _encode(state: Any) -> Any:
  # grain's DataLoader iterators report bytes; JSON needs text.
  return {"bytes": state.decode()} if isinstance(state, bytes) else state


def _decode(state: Any) -> Any:
  return state["bytes"].encode() if isinstance(state, dict) and set(state) == {"bytes"} else state


def gather_process_states(local_state: Any) -> dict[str, Any]:
  """{process_index: JSON-able iterator state} of all processes, identical on every process."""
  if jax.process_count() == 1:
    return {"0": _encode(local_state)}
  blob = np.frombuffer(json.dumps(_encode(local_state)).encode(), np.uint8)
  sizes = multihost_utils.process_allgather(np.array([blob.size], np.int32))
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:blob.size] = blob
  blobs = multihost_utils.process_allgather(padded)
  return {str(i): json.loads(bytes(blobs[i][:int(sizes[i][0])]).decode())
          for i in range(jax.process_count())}


class Checkpointer:
  """Keep-N, async checkpoints under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, keep: int, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, cleanup_tmp_directories=True,
        enable_async_checkpointing=async_save)
    self._mngr = ocp.CheckpointManager(self.directory, options=options,
                                       item_names=("state", "config", "data"))

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._mngr.all_steps())

  def save(self, step: int, state: Any, config_dict: dict, data_state: Any,
           force: bool = False) -> bool:
    """Starts saving (async); returns whether a save was started."""
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(config_dict),
        data=ocp.args.JsonSave(gather_process_states(data_state)))
    return self._mngr.save(step, args=args, force=force)

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, Any]:
    """(state placed by the shardings of `abstract_state`, this process's iterator state)."""
    try:
      restored = self._mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointError(
          f"checkpoint step {step} in {self.directory} does not fit this run's model or "
          f"optimizer ({type(e).__name__}: {str(e).splitlines()[0][:200]}); use a new --workdir "
          "or the config it was written with.") from e
    data = restored.data or {}
    local = data.get(str(jax.process_index()))
    if local is not None and len(data) != jax.process_count():
      local = None  # another process layout: every process restarts its own data order
    return restored.state, _decode(local) if local is not None else None

  def read_config(self, step: int) -> dict:
    return self._mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config

  def reached_preemption(self, step: int) -> bool:
    return self._mngr.reached_preemption(step)

  def wait(self) -> None:
    self._mngr.wait_until_finished()

  def close(self) -> None:
    self._mngr.close()


class CheckpointReader:
  """Reads the checkpoints of `<workdir>/checkpoints` without changing anything on disk (no
  folder is created, no temporary directory cleaned): for loading weights and for checks that
  must leave a workdir as it was."""

  def __init__(self, workdir: str):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")

  def all_steps(self) -> list[int]:
    """Steps of the committed checkpoints (Orbax gives a step its plain number only when the
    save is complete), oldest first."""
    if not os.path.isdir(self.directory):
      return []
    return sorted(int(n) for n in os.listdir(self.directory)
                  if n.isdigit() and os.path.isdir(os.path.join(self.directory, n)))

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def read_config(self, step: int) -> dict:
    """The config (as a dict) saved with checkpoint `step`."""
    path = os.path.join(self.directory, str(step), "config")
    if not os.path.isdir(path):
      raise CheckpointError(f"checkpoint step {step} in {self.directory} has no config; "
                            "expected a checkpoint written by launch/train.py.")
    with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as reader:
      return reader.restore(path)

  def restore_subtree(self, step: int, abstract: dict) -> dict:
    """Only the state fields named by `abstract` ({field: tree of abstract arrays with their
    target shardings}, e.g. {'ema': ..., 'frozen': ...}), read from checkpoint `step`: a partial
    Orbax restore that never reads the optimizer state."""
    path = os.path.join(self.directory, str(step), "state")
    if not os.path.isdir(path):
      raise CheckpointError(f"checkpoint step {step} in {self.directory} has no state; expected "
                            "a checkpoint written by launch/train.py.")
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract)
    try:
      with ocp.PyTreeCheckpointer() as reader:
        return reader.restore(path, args=ocp.args.PyTreeRestore(
            item=abstract, restore_args=restore_args, partial_restore=True))
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointError(
          f"checkpoint step {step} in {self.directory} does not hold the weights its own config "
          f"describes ({type(e).__name__}: {str(e).splitlines()[0][:200]}); it was written by "
          "an incompatible version of vlogger_jax.") from e

