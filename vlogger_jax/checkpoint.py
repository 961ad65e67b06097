"""Orbax checkpoints: the train state, the config (JSON) and every process's data-iterator state.

Saves are asynchronous and atomic (Orbax writes to a temporary directory and renames it when the
save is complete), so a run killed at any moment leaves only whole checkpoints. Once a save is
committed, process 0 writes a checksum manifest into the step's folder (`vlogger_manifest.json`:
the size and sha256 of every file, written through a temporary name); `Checkpointer.poll`, called
at every step, notices both the commit and a failed save, which stops the run at once
(`SaveError`, one sentence with the last checkpoint saved and the space a checkpoint needs; the
failed save's temporary folder is removed). That sentence replaces Orbax's own account of the
failure: once a Checkpointer exists, Orbax's ERROR log records and the 'Event loop is closed'
tracebacks of its writes still in flight are dropped (`quiet_orbax_failures`).

Restoring checks a step before trusting it: its files against its manifest, its arrays' shapes
and dtypes against this run's state (a mismatch is `CheckpointError`: another model, nothing is
changed on disk), then the restore itself. A step that fails the manifest or cannot be read is
damaged: `CheckpointReader.restore_latest` moves it to `checkpoints/damaged/<step>-<time>`
(outside Orbax's view, never deleted), says so in one sentence and falls back to the next older
step. A step without a manifest (written before manifests existed, or the process ended between
the commit and the manifest) is accepted unverified when it restores without error and all its
values are finite; a truncated file is still caught then, bytes changed inside an array are not.

Restoring takes abstract arrays with target shardings, so a checkpoint restores onto any mesh.
Training restores the whole state (`CheckpointReader.restore_latest`); using a model restores
only its weights (`CheckpointReader.restore_subtree`: the EMA or trainable parameters and the
frozen ones, no optimizer state, after the same manifest check), which is what
vlogger_jax/models/loading.py does; the reader opens a run without a CheckpointManager and, but
for moving a damaged step aside during training's restore, changes nothing on disk.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import logging
import os
import shutil
import sys
import threading
import time
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from vlogger_jax import fileio

MANIFEST = "vlogger_manifest.json"   # in each step's folder, written after the commit
DAMAGED = "damaged"                  # checkpoints/damaged/<step>-<time>: damaged steps moved aside
_TMP = ".orbax-checkpoint-tmp"       # Orbax's suffix for a save that has not committed


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be restored into this run (with a one-sentence reason)."""


class DamagedCheckpoint(CheckpointError):
  """A checkpoint whose files are not as they were written (one sentence)."""

  def __init__(self, directory: str, step: int, reason: str):
    super().__init__(f"checkpoint step {step} in {directory} is damaged ({reason})")
    self.step, self.reason = step, reason


class SaveError(CheckpointError):
  """A save that failed (disk full, permissions): the run stops (one sentence)."""


class _OrbaxFailureFilter(logging.Filter):
  """Drops Orbax's ERROR records (each with a traceback, several per failed save) and asyncio's
  reports of Orbax tasks whose exception nobody retrieved: every failure they describe reaches
  the caller as one SaveError or CheckpointError sentence instead."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno < logging.ERROR:
      return True
    if f"{os.sep}orbax{os.sep}" in (record.pathname or ""):
      return False
    return not (record.name == "asyncio" and "orbax" in record.getMessage())


_FILTER = _OrbaxFailureFilter()


def _unraisable_hook(previous):
  def hook(unraisable):
    # TensorStore's callbacks of reads and writes still in flight when Orbax closed the event
    # loop of a failed save or restore: one traceback each, after the failure was reported.
    err = unraisable.exc_value
    if isinstance(err, RuntimeError) and str(err) == "Event loop is closed":
      return
    previous(unraisable)
  hook.vlogger_quiet = True
  return hook


def quiet_orbax_failures(failed: bool = False) -> None:
  """Installs _OrbaxFailureFilter on the loggers Orbax's records go through, and drops the
  'Event loop is closed' tracebacks that follow a failed save or restore (once per process).
  failed: an Orbax operation has just failed and is being reported; then also the warnings, at
  exit, about its coroutines that never ran."""
  for name in ("absl", "asyncio"):
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
      logger.addFilter(_FILTER)
  if not getattr(sys.unraisablehook, "vlogger_quiet", False):
    sys.unraisablehook = _unraisable_hook(sys.unraisablehook)
  if failed:
    warnings.filterwarnings("ignore", message=r"coroutine '.*' was never awaited",
                            category=RuntimeWarning)


def _encode(state: Any) -> Any:
  # grain's DataLoader iterators report bytes; JSON needs text.
  return {"bytes": state.decode()} if isinstance(state, bytes) else state


def _decode(state: Any) -> Any:
  return state["bytes"].encode() if isinstance(state, dict) and set(state) == {"bytes"} else state


def _first_line(err: BaseException, limit: int = 200) -> str:
  """'Type: first line' of the innermost cause of `err` (Orbax wraps TensorStore's errors)."""
  while err.__cause__ is not None:
    err = err.__cause__
  text = str(err).strip().splitlines()
  return f"{type(err).__name__}: {text[0][:limit] if text else ''}".rstrip(": ")


def _megabytes(n: float) -> str:
  return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def folder_bytes(path: str) -> int:
  """Total size of the files under `path`."""
  return sum(os.path.getsize(os.path.join(root, f))
             for root, _, files in os.walk(path) for f in files)


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


def _all_processes_ok(ok: bool) -> bool:
  """Whether `ok` holds on every process (the same answer everywhere)."""
  if jax.process_count() == 1:
    return ok
  return bool(multihost_utils.process_allgather(np.array([int(ok)], np.int32)).min())


def _from_process_0(value: int) -> int:
  if jax.process_count() == 1:
    return value
  return int(multihost_utils.broadcast_one_to_all(np.array(value, np.int32)))


# --- the checksum manifest ---

def _step_files(step_dir: str) -> list[str]:
  """Paths (relative, sorted) of the files of a step folder, the manifest and its temporary
  files left out."""
  out = []
  for root, _, files in os.walk(step_dir):
    for f in files:
      rel = os.path.relpath(os.path.join(root, f), step_dir)
      if not rel.startswith(MANIFEST):
        out.append(rel)
  return sorted(out)


def _sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def write_manifest(step_dir: str) -> str:
  """Writes the size and sha256 of every file of a committed step into `<step_dir>/MANIFEST`
  (through a temporary name); returns its path."""
  files = {rel: [os.path.getsize(os.path.join(step_dir, rel)), _sha256(os.path.join(step_dir, rel))]
           for rel in _step_files(step_dir)}
  return fileio.write_json(os.path.join(step_dir, MANIFEST), {"format": 1, "files": files},
                           indent=None)


def manifest_problem(step_dir: str) -> tuple[bool, str | None]:
  """(whether the step has a manifest, what differs from it or None): sizes first, then the
  sha256 of each file; files added since are ignored."""
  path = os.path.join(step_dir, MANIFEST)
  if not os.path.exists(path):
    return False, None
  try:
    with open(path) as f:
      files = json.load(f)["files"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    return True, f"its checksum manifest cannot be read: {_first_line(e)}"
  for rel, (size, _) in files.items():
    full = os.path.join(step_dir, rel)
    if not os.path.isfile(full):
      return True, f"{rel} is missing"
    if os.path.getsize(full) != size:
      return True, f"{rel} has {os.path.getsize(full)} bytes, {size} were written"
  for rel, (_, digest) in files.items():
    if _sha256(os.path.join(step_dir, rel)) != digest:
      return True, f"{rel} does not match the checksum written with it"
  return True, None


def _flat(tree: Any) -> dict[str, Any]:
  """{'a/b/0': leaf} of a pytree, whatever its node types (dicts, dataclasses, named tuples)."""
  def name(k):
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        return str(getattr(k, attr))
    return str(k)
  return {"/".join(name(k) for k in path): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _all_finite(tree: Any) -> bool:
  leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  if not leaves:
    return True
  return bool(jax.jit(lambda xs: jnp.all(jnp.stack([jnp.isfinite(x).all() for x in xs])))(leaves))


class CheckpointReader:
  """Reads the checkpoints of `<workdir>/checkpoints` without a CheckpointManager (no folder is
  created, no temporary directory cleaned): for loading weights, for checks that must leave a
  workdir as it was, and for training's restore (which alone may move a damaged step aside)."""

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

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _damaged(self, step: int, reason: str) -> DamagedCheckpoint:
    return DamagedCheckpoint(self.directory, step, reason)

  def read_config(self, step: int) -> dict:
    """The config (as a dict) saved with checkpoint `step`."""
    path = os.path.join(self.step_dir(step), "config")
    if not os.path.isdir(path):
      raise CheckpointError(f"checkpoint step {step} in {self.directory} has no config; "
                            "expected a checkpoint written by launch/train.py.")
    try:
      with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as reader:
        return reader.restore(path)
    except Exception as e:  # pylint: disable=broad-except
      raise self._damaged(step, f"its config cannot be read: {_first_line(e)}") from e

  def read_data_states(self, step: int) -> dict:
    """{process index: iterator state} saved with checkpoint `step`."""
    path = os.path.join(self.step_dir(step), "data")
    if not os.path.isdir(path):
      return {}
    try:
      with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as reader:
        return reader.restore(path) or {}
    except Exception as e:  # pylint: disable=broad-except
      raise self._damaged(step, f"its data-iterator state cannot be read: "
                                f"{_first_line(e)}") from e

  def verify(self, step: int) -> bool:
    """Checks a step's files against its manifest: True if they match, False if it has none;
    DamagedCheckpoint if they differ."""
    has, problem = manifest_problem(self.step_dir(step))
    if problem:
      raise self._damaged(step, problem)
    return has

  def check_fits(self, step: int, abstract: Any) -> None:
    """CheckpointError (one sentence) unless the state saved at `step` has exactly the arrays
    (paths, shapes, dtypes) of `abstract`; read from the metadata, no array is read."""
    path = os.path.join(self.step_dir(step), "state")
    if not os.path.isdir(path):
      raise self._damaged(step, "its state folder is missing")
    try:
      # The handler itself: the Checkpointer's metadata() turns an unreadable tree into a
      # warning, and warns that a sub-item has no step metadata of its own.
      handler = ocp.PyTreeCheckpointHandler()
      try:
        saved = _flat(handler.metadata(epath.Path(path)).tree)
      finally:
        handler.close()
    except Exception as e:  # pylint: disable=broad-except
      raise self._damaged(step, f"its state's metadata cannot be read: {_first_line(e)}") from e
    wanted = _flat(abstract)
    describe = lambda a: f"{tuple(a.shape)} {np.dtype(a.dtype).name}"
    diffs = ([f"{k} is missing there" for k in sorted(set(wanted) - set(saved))]
             + [f"{k} is not in this run" for k in sorted(set(saved) - set(wanted))]
             + [f"{k} is {describe(saved[k])} there, {describe(wanted[k])} here"
                for k in sorted(set(saved) & set(wanted))
                if (tuple(saved[k].shape), np.dtype(saved[k].dtype))
                != (tuple(wanted[k].shape), np.dtype(wanted[k].dtype))])
    if diffs:
      more = f"; {len(diffs) - 1} more differ" if len(diffs) > 1 else ""
      raise CheckpointError(
          f"checkpoint step {step} in {self.directory} does not fit this run's model or "
          f"optimizer ({diffs[0]}{more}); use a new --workdir or the config it was written "
          "with.")

  def restore(self, step: int, abstract_state: Any, verified: bool | None = None
              ) -> tuple[Any, Any]:
    """(state placed by the shardings of `abstract_state`, this process's iterator state) of
    checkpoint `step`, checked first (module doc): DamagedCheckpoint if its files are not as
    written, CheckpointError if it holds another model."""
    if verified is None:
      verified = self.verify(step)
    data = self.read_data_states(step)
    self.check_fits(step, abstract_state)
    try:
      with ocp.StandardCheckpointer() as reader:
        state = reader.restore(os.path.join(self.step_dir(step), "state"), abstract_state)
    except Exception as e:  # pylint: disable=broad-except
      quiet_orbax_failures(failed=True)
      if verified:   # the files are as written: not damage, something this run cannot read
        raise CheckpointError(f"checkpoint step {step} in {self.directory} cannot be restored "
                              f"into this run ({_first_line(e)}); use a new --workdir or the "
                              "config it was written with.") from e
      raise self._damaged(step, f"it cannot be read: {_first_line(e)}") from e
    if not verified and not _all_finite(state):
      raise self._damaged(step, "it has no checksum manifest and holds NaN/Inf values")
    local = data.get(str(jax.process_index()))
    if local is not None and len(data) != jax.process_count():
      local = None  # another process layout: every process restarts its own data order
    return state, _decode(local) if local is not None else None

  def move_aside(self, step: int) -> str:
    """Moves checkpoint `step` to checkpoints/damaged/<step>-<time> (process 0; every process
    waits for it); returns where it went."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = os.path.join(self.directory, DAMAGED, f"{step}-{stamp}")
    if jax.process_index() == 0:
      n = 1
      while os.path.exists(target):
        target = os.path.join(self.directory, DAMAGED, f"{step}-{stamp}-{n}")
        n += 1
      os.makedirs(os.path.dirname(target), exist_ok=True)
      os.rename(self.step_dir(step), target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"vlogger_move_aside_{step}")
    return target

  def restore_latest(self, abstract_state: Any, report: Callable[[str], None],
                     check: Callable[[int, dict], None] | None = None
                     ) -> tuple[int, Any, Any, bool] | None:
    """(step, state, this process's iterator state, whether its manifest verified it) of the
    newest good checkpoint, or None when
    there is none. Each damaged step on the way is moved aside and reported in one sentence
    through `report`; `check(step, saved_config)` may refuse a step (it raises) before its state
    is read; an unverified step is reported when it is accepted."""
    for step in reversed(self.all_steps()):
      problem = None
      verified = False
      if jax.process_index() == 0:
        try:
          verified = self.verify(step)
        except DamagedCheckpoint as e:
          problem = e.reason
      code = _from_process_0(0 if problem else 1 if verified else 2)
      verified = code == 1
      try:
        if code == 0:
          raise self._damaged(step, problem or "its files differ from its manifest")
        if check is not None:
          check(step, self.read_config(step))
        state, data = self.restore(step, abstract_state, verified=verified)
        ok = True
      except DamagedCheckpoint as e:
        ok, problem = False, e.reason
      if not _all_processes_ok(ok):
        where = self.move_aside(step)
        older = [s for s in self.all_steps() if s < step]
        then = (f"resuming from step {older[-1]}, the next older one" if older
                else "no older checkpoint remains, so the run starts anew")
        report(f"checkpoint step {step} in {self.directory} is damaged "
               f"({problem or 'on another process'}); moved it to {where} and {then}.")
        continue
      if not verified:
        report(f"checkpoint step {step} has no checksum manifest (written before manifests "
               "existed, or the run ended before writing it); it restored without error and its "
               "values are finite, so it is used unverified.")
      return step, state, data, verified
    return None

  def restore_subtree(self, step: int, abstract: dict) -> dict:
    """Only the state fields named by `abstract` ({field: tree of abstract arrays with their
    target shardings}, e.g. {'ema': ..., 'frozen': ...}), read from checkpoint `step` after its
    manifest check: a partial Orbax restore that never reads the optimizer state."""
    path = os.path.join(self.step_dir(step), "state")
    if not os.path.isdir(path):
      raise CheckpointError(f"checkpoint step {step} in {self.directory} has no state; expected "
                            "a checkpoint written by launch/train.py.")
    verified = self.verify(step)
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract)
    try:
      with ocp.PyTreeCheckpointer() as reader:
        restored = reader.restore(path, args=ocp.args.PyTreeRestore(
            item=abstract, restore_args=restore_args, partial_restore=True))
    except (ValueError, KeyError, TypeError) as e:   # Orbax's own tree and shape checks
      quiet_orbax_failures(failed=True)
      raise CheckpointError(
          f"checkpoint step {step} in {self.directory} does not hold the weights its own "
          f"config describes ({_first_line(e)}); it was written by an incompatible version "
          "of vlogger_jax.") from e
    except Exception as e:  # pylint: disable=broad-except  # TensorStore's read errors
      quiet_orbax_failures(failed=True)
      raise self._damaged(step, f"it cannot be read: {_first_line(e)}") from e
    if not verified and not _all_finite(restored):
      raise self._damaged(step, "it has no checksum manifest and holds NaN/Inf values")
    return restored


class Checkpointer:
  """Keep-N, async checkpoints under `<workdir>/checkpoints`, for training: saves, their commit
  and manifest, and a failed save surfaced as SaveError (module doc)."""

  def __init__(self, workdir: str, keep: int, async_save: bool = True):
    quiet_orbax_failures()
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.reader = CheckpointReader(workdir)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, cleanup_tmp_directories=True,
        enable_async_checkpointing=async_save)
    self._mngr = ocp.CheckpointManager(self.directory, options=options,
                                       item_names=("state", "config", "data"))
    self._pending: int | None = None          # a save started, not yet committed
    self._hashing: tuple[int, threading.Thread, list] | None = None   # manifest being written
    self._state_bytes = 0
    self._failed = False
    self.last_saved: int | None = self._mngr.latest_step()   # committed (and manifest written)

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._mngr.all_steps())

  def save(self, step: int, state: Any, config_dict: dict, data_state: Any,
           force: bool = False) -> bool:
    """Starts saving (async, after the previous save has finished); returns whether a save was
    started. SaveError if this or the previous save failed."""
    self.wait()
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(config_dict),
        data=ocp.args.JsonSave(gather_process_states(data_state)))
    self._state_bytes = sum(x.nbytes for x in jax.tree.leaves(state) if hasattr(x, "nbytes"))
    try:
      started = self._mngr.save(step, args=args, force=force)
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(step, e) from e
    if started:
      self._pending = step
      self.poll()    # a synchronous save has committed already
    return started

  def poll(self) -> int | None:
    """The step whose save has just committed and been checksummed, else None; SaveError if
    the save failed. Cheap while a save is in flight (no I/O, no collective): the loop calls it
    at every step, so a failed save stops the run at the next step boundary."""
    if self._pending is not None and not self._mngr.is_saving_in_progress():
      self._finish_commit()
    if self._hashing is not None and not self._hashing[1].is_alive():
      return self._finish_manifest()
    return None

  def wait(self) -> int | None:
    """Waits for the save in flight and its manifest; returns the step if one committed now."""
    if self._pending is not None:
      self._finish_commit()
    if self._hashing is not None:
      self._hashing[1].join()
      return self._finish_manifest()
    return None

  def _finish_commit(self) -> None:
    step, self._pending = self._pending, None
    try:
      self._mngr.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(step, e) from e
    if jax.process_index() != 0:
      self.last_saved = step
      return
    box: list = []

    def job():
      try:
        write_manifest(os.path.join(self.directory, str(step)))
      except Exception as e:  # pylint: disable=broad-except
        box.append(e)

    thread = threading.Thread(target=job, name=f"manifest_{step}", daemon=True)
    thread.start()
    self._hashing = (step, thread, box)

  def _finish_manifest(self) -> int:
    (step, thread, box), self._hashing = self._hashing, None
    thread.join()
    if box:
      raise self._save_error(step, box[0]) from box[0]
    self.last_saved = step
    return step

  def _remove_tmp(self) -> None:
    """Removes the temporary folders of failed saves (process 0). Writes still in flight may
    recreate one; no reader takes it for a checkpoint, and the next start removes it."""
    if jax.process_index() == 0:
      for tmp in glob.glob(os.path.join(self.directory, f"*{_TMP}*")):
        shutil.rmtree(tmp, ignore_errors=True)

  def _save_error(self, step: int, err: BaseException) -> SaveError:
    """The one-sentence SaveError of a failed save of `step`, after removing what it left."""
    self._failed = True
    quiet_orbax_failures(failed=True)
    self._remove_tmp()
    text = str(err)
    code = getattr(err, "errno", None)
    if code == errno.ENOSPC or "No space left" in text or "RESOURCE_EXHAUSTED" in text:
      why = "the disk is full"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS) or "ermission denied" in text:
      why = "permission was denied"
    else:
      why = _first_line(err)
    last = self.last_saved
    last_bytes = folder_bytes(self.reader.step_dir(last)) if last is not None else 0
    need = max(last_bytes, self._state_bytes)
    try:
      free = _megabytes(shutil.disk_usage(self.directory).free)
    except OSError:
      free = "an unknown amount"
    kept = (f"step {last} ({_megabytes(last_bytes)})" if last is not None else "none")
    return SaveError(f"saving checkpoint step {step} in {self.directory} failed ({why}); the "
                     f"last checkpoint saved is {kept}, and a save needs about "
                     f"{_megabytes(need)} free there ({free} are): make room, then rerun the "
                     f"same command to resume{f' from step {last}' if last is not None else ''}.")

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, Any]:
    """(state placed by the shardings of `abstract_state`, this process's iterator state) of a
    checked checkpoint (CheckpointReader.restore)."""
    return self.reader.restore(step, abstract_state)

  def read_config(self, step: int) -> dict:
    return self.reader.read_config(step)

  def reached_preemption(self, step: int) -> bool:
    return self._mngr.reached_preemption(step)

  def close(self) -> None:
    """Waits for the save in flight (SaveError if it failed) and closes the manager; after a
    failed save, closes without raising again."""
    try:
      if not self._failed:
        self.wait()
    finally:
      try:
        self._mngr.close()
      except Exception:  # pylint: disable=broad-except
        if not self._failed:
          raise
      if self._failed:
        self._remove_tmp()
