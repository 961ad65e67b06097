"""In-memory audio-to-motion batches: the clips' parameters and mel held in RAM, windows gathered
for the whole batch at once.

The motion model reads a few hundred floats per frame, while a record also holds the clip's
frames and audio; decoding records and packing windows one example at a time (grain workers,
pipelines.motion_pipeline) is what bounds a motion step on an accelerator (BENCHMARKS.md, issue 4
and 5). A MotionBank reads the split once (the frames and audio are dropped) and
MotionBatchIterator draws each batch with a few vectorised NumPy gathers: same batch layout, same
window distribution as pipelines.MotionWindow (checked by tests/test_motion_bank.py), so the
task may use either.

Memory: 1.9 KB per frame (64 + 9 + 150 parameters and 256 mel bins, float32), 0.29 GB for the
640-clip `motion` set and 1.8 GB per host for the 4000-clip `large` set, each process holding
only its own shard of the split.

Order: examples run through a fresh permutation of the shard every epoch (like the grain
pipeline's shuffle + repeat), and each batch's windows come from a generator seeded by
(seed, process_index, step), so batch k is a pure function of k: the iterator's state is the
number of batches taken, and set_state resumes exactly. Batches are made `prefetch` ahead on
`threads` threads (default min(8, CPUs); NumPy releases the GIL in the gathers and arithmetic).
A batch of 128 windows of 240 frames took 38 ms in one thread of the 2-core development machine
(32 ms per batch with the prefetch threads; measured on the tiny set's 48-frame clips, padded).
"""

from __future__ import annotations

import collections
import concurrent.futures
import os

from absl import logging
import numpy as np

from vlogger_jax import motion as motion_lib
from vlogger_jax.data import builders
from vlogger_jax.data import pipelines
from vlogger_jax.data import windows

_FRAME_FIELDS = ("expression", "head_pose", "body_keypoints", "mel")


class MotionBank:
  """The motion fields of one process's shard of a split, frames of all clips in flat arrays.

  Frame f of clip c is row c * max_frames + f of expression [R, 64], head_pose [R, 9],
  body_keypoints [R, 75, 2] and mel [R, 256] (float32), where R = C * max_frames + 1: the last row
  (`pad_row`) is what padded window frames read (zeros, an identity head rotation). Per clip:
  shape [C, 64], fov [C], num_frames [C] int32. Unreadable records are left out (`skipped`).
  """

  def __init__(self, data_dir_or_source, split: str, process_index: int = 0,
               process_count: int = 1, threads: int = 8):
    records = pipelines.open_records(data_dir_or_source, split)
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index {process_index} is not in [0, {process_count}); expected "
                       "0 <= process_index < process_count.")
    indices = range(process_index, len(records), process_count)

    def read(i):
      r = records[i]
      if r is None:
        return None
      return {k: np.asarray(r[k]) for k in _FRAME_FIELDS + ("shape", "fov")}

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
      clips = [c for c in pool.map(read, indices) if c is not None]
    self.skipped = len(indices) - len(clips)
    if not clips and len(indices) and records.version_dir is not None:
      raise ValueError(f"none of the {len(indices)} records of split {split} in "
                       f"{records.version_dir} that process {process_index} of {process_count} "
                       "reads can be decoded; expected readable records: build it again with "
                       f"`{builders.rebuild_command(records.version_dir)}`.")
    if not clips:
      raise ValueError(f"split {split} has no readable clip for process {process_index} of "
                       f"{process_count}; expected at least one clip per process.")
    lengths = np.array([len(c["expression"]) for c in clips], np.int32)
    if lengths.min() < 1:
      raise ValueError(f"split {split} holds a clip of no frames; expected every clip to have "
                       "at least one (rebuild the dataset).")
    self.max_frames, self.num_frames = int(lengths.max()), lengths
    self.pad_row = len(clips) * self.max_frames
    for k in _FRAME_FIELDS:
      tail = clips[0][k].shape[1:]
      out = np.zeros((self.pad_row + 1,) + tail, np.float32)
      for i, clip in enumerate(clips):
        out[i * self.max_frames:i * self.max_frames + lengths[i]] = clip[k]
      setattr(self, k, out)
    self.head_pose[self.pad_row, :6] = (1, 0, 0, 0, 1, 0)  # 6-D identity rotation
    self.shape = np.stack([np.asarray(x["shape"], np.float32) for x in clips])
    self.fov = np.array([x["fov"] for x in clips], np.float32)
    if self.skipped:
      logging.warning("MotionBank left out %d unreadable records of split %s.", self.skipped,
                      split)

  def __len__(self) -> int:
    return len(self.num_frames)

  def frames(self, clip: int) -> dict:
    """{field: [num_frames, ...]} of one clip."""
    rows = slice(clip * self.max_frames, clip * self.max_frames + self.num_frames[clip])
    return {k: getattr(self, k)[rows] for k in _FRAME_FIELDS}

  @property
  def nbytes(self) -> int:
    return sum(getattr(self, k).nbytes for k in _FRAME_FIELDS + ("shape", "fov", "num_frames"))


class MotionBatchIterator:
  """Infinite motion batches from a MotionBank: the batch dict of pipelines.motion_pipeline."""

  def __init__(self, bank: MotionBank, stats, batch_size: int, seed: int, process_index: int = 0,
               min_frames: int = windows.MIN_FRAMES, max_frames: int = windows.MAX_FRAMES,
               absolute: bool = False, prefetch: int = 8, threads: int = 0):
    windows.check_lengths(min_frames, max_frames)
    if batch_size < 1:
      raise ValueError(f"batch_size is {batch_size}; expected a positive host-local batch size.")
    self.bank, self.batch_size = bank, batch_size
    self.mean = np.asarray(stats.mean, np.float32)
    self.std = np.asarray(stats.std, np.float32)
    self.seed, self.process_index = seed, process_index
    self.min_frames, self.max_frames, self.absolute = min_frames, max_frames, absolute
    self._prefetch = max(prefetch, 0)
    threads = threads or min(8, os.cpu_count() or 1)
    self._pool = (concurrent.futures.ThreadPoolExecutor(threads)
                  if self._prefetch else None)
    self._pending = collections.deque()
    self._step = 0
    self._perms = {}

  # --- the pure function of the step ---

  def _permutation(self, epoch: int) -> np.ndarray:
    # Called from the prefetch threads: a permutation is a pure function of the epoch, so a race
    # costs at most recomputing one; the cache keeps the last two epochs.
    perm = self._perms.get(epoch)
    if perm is None:
      rng = np.random.default_rng([self.seed % 2**32, self.process_index, 0, epoch])
      perm = rng.permutation(len(self.bank))
      self._perms = {epoch: perm, **{e: p for e, p in self._perms.items() if e >= epoch - 1}}
    return perm

  def clips_of(self, step: int) -> np.ndarray:
    """Bank indices [B] of batch `step`: examples step*B .. step*B+B-1 of the epoch order."""
    c = len(self.bank)
    k = step * self.batch_size + np.arange(self.batch_size)
    out = np.empty(self.batch_size, np.int64)
    for epoch in np.unique(k // c):
      sel = k // c == epoch
      out[sel] = self._permutation(int(epoch))[k[sel] % c]
    return out

  def windows_of(self, step: int, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start [B], length [B]) of batch `step`'s windows (windows.draw_batch: the distribution of
    pipelines.MotionWindow)."""
    rng = np.random.default_rng([self.seed % 2**32, self.process_index, 1, step])
    return windows.draw_batch(self.bank.num_frames[clips], self.min_frames, self.max_frames, rng)

  def make_batch(self, clips: np.ndarray, start: np.ndarray, length: np.ndarray) -> dict:
    """The batch of windows [start, start + length) of bank clips `clips`, padded to max_frames."""
    b, n = self.bank, len(clips)
    offsets = np.arange(self.max_frames)
    valid = offsets[None] < length[:, None]                                    # [B, L]
    first = clips * b.max_frames + start                                       # [B]
    rows = np.where(valid, first[:, None] + offsets[None], b.pad_row).ravel()
    take = lambda a: np.take(a, rows, axis=0).reshape((n, self.max_frames) + a.shape[1:])
    ref_head_pose, ref_keypoints = b.head_pose[first], b.body_keypoints[first]
    motion = motion_lib.pack(take(b.expression), take(b.head_pose), take(b.body_keypoints),
                             ref_head_pose, ref_keypoints, self.absolute)
    mask = valid.astype(np.float32)
    motion -= self.mean
    motion /= self.std
    motion *= mask[..., None]
    return {"mel": take(b.mel), "motion": motion, "mask": mask, "ref_head_pose": ref_head_pose,
            "ref_body_keypoints": ref_keypoints, "shape": b.shape[clips], "fov": b.fov[clips]}

  def batch(self, step: int) -> dict:
    clips = self.clips_of(step)
    return self.make_batch(clips, *self.windows_of(step, clips))

  # --- the iterator ---

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if not self._prefetch:
      out = self.batch(self._step)
    else:
      # Keep `prefetch` batches in flight; futures are made and consumed in step order.
      while len(self._pending) < self._prefetch:
        ahead = self._step + len(self._pending)
        self._pending.append(self._pool.submit(self.batch, ahead))
      out = self._pending.popleft().result()
    self._step += 1
    return out

  def get_state(self) -> dict:
    return {"step": self._step, "seed": self.seed, "process_index": self.process_index,
            "batch_size": self.batch_size, "clips": len(self.bank)}

  def set_state(self, state: dict) -> None:
    mine = self.get_state()
    for key in ("seed", "process_index", "batch_size", "clips"):
      if key in state and state[key] != mine[key]:
        raise ValueError(f"motion iterator state has {key}={state[key]}, this run {mine[key]}; "
                         "expected to resume with the same seed, process layout, batch size and "
                         "dataset.")
    for f in self._pending:
      f.cancel()
    self._pending.clear()
    self._step = int(state["step"])

  def close(self) -> None:
    for f in self._pending:
      f.cancel()
    self._pending.clear()
    if self._pool is not None:
      self._pool.shutdown(wait=False, cancel_futures=True)


def motion_batches(data_dir_or_source, split: str, batch_size: int, seed: int,
                   process_index: int = 0, process_count: int = 1, stats=None,
                   min_frames: int = windows.MIN_FRAMES, max_frames: int = windows.MAX_FRAMES,
                   absolute: bool = False, prefetch: int = 8) -> MotionBatchIterator:
  """pipelines.motion_pipeline's batches from an in-memory MotionBank (module doc)."""
  records = pipelines.open_records(data_dir_or_source, split)
  bank = MotionBank(records, split, process_index, process_count)
  s = pipelines.load_stats(stats, records, absolute)
  logging.info("MotionBank: %d clips of split %s, %.0f MB in memory.", len(bank), split,
               bank.nbytes / 2**20)
  return MotionBatchIterator(bank, s, batch_size, seed, process_index, min_frames, max_frames,
                             absolute, prefetch)
