"""grain input pipelines over the datasets of builders.py: motion windows, video clips, images,
frame windows (super-resolution).

Every pipeline returns a grain DatasetIterator of host-local batches (dicts of numpy arrays with a
leading batch dimension) that is infinite (each epoch reshuffled), deterministic for a seed and
process layout, sharded by process (process p reads records p, p + P, ... of the split), and
checkpointable: get_state() is a JSON-able dict and set_state(state) continues with exactly the
batch that would have come next, with or without worker processes. Records that fail to decode are
skipped, each named in one warning. No JAX runs here (worker processes stay accelerator-free).

Batch dicts (B = host-local batch, L = max_frames, N = num_frames, R = resolution), float32 unless
marked:
  motion_pipeline  mel [B, L, 256], motion [B, L, 223] (normalised), mask [B, L],
                   ref_head_pose [B, 9], ref_body_keypoints [B, 75, 2], shape [B, 64], fov [B]
  video_pipeline   frames uint8 [B, N, R, R, 3], ref_frame uint8 [B, R, R, 3], shape [B, 64],
                   fov [B], expression [B, N, 64], head_pose [B, N, 9],
                   body_keypoints [B, N, 75, 2], body_visibility [B, N, 75], ref_expression [B, 64],
                   ref_head_pose [B, 9], ref_body_keypoints [B, 75, 2], ref_body_visibility [B, 75]
  image_pipeline   video_pipeline with N = 1 (samples_per_clip > 1: that many frame/reference
                   pairs from each clip read, B / samples_per_clip clips per batch)
  frames_pipeline  frames uint8 [B, N, R, R, 3], shape [B, 64], fov [B], expression [B, N, 64],
                   head_pose [B, N, 9], body_keypoints [B, N, 75, 2], body_visibility [B, N, 75]
                   (video_pipeline without the reference)
"""

from __future__ import annotations

import io
import json
import os
import threading
from typing import Any, Callable

from absl import flags
from absl import logging
import grain
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from vlogger_jax import contracts
from vlogger_jax import motion as motion_lib
from vlogger_jax.data import builders
from vlogger_jax.data import paths
from vlogger_jax.data import statistics
from vlogger_jax.data import windows

# Reading threads per process (or per worker): decoding is PNG and memcpy, which release the GIL.
READ_THREADS = 4
# Records read ahead per process (or per worker). A record is a whole clip (every frame's PNG,
# about 4 MB at 128 px); reading 2 x batch_size ahead, as before, was no faster (BENCHMARKS.md).
READ_BUFFER = 64


class Records:
  """Decoded records of one split, as a grain source; unreadable records come back as None."""

  def __init__(self, version_dir: str | None, split: str, source: Any = None):
    self.version_dir, self.split = version_dir, split
    self._source = source
    self._lock = threading.Lock()
    self._length = len(self._open())
    self.skipped = 0              # failed reads (a record read twice counts twice)
    self.unreadable = set()       # indices of the records that failed, each warned about once
    self._failures_in_a_row = 0
    self._any_read = False        # some record decoded: the split is not wholly unreadable

  def _open(self):
    with self._lock:  # grain's reading threads arrive together in a fresh worker.
      if self._source is None:
        builder = tfds.builder_from_directory(self.version_dir)
        if self.split not in builder.info.splits:
          raise ValueError(f"dataset {self.version_dir} has no split '{self.split}'; expected "
                           f"one of {', '.join(builder.info.splits)}.")
        self._source = builder.as_data_source(self.split)
      return self._source

  def __getstate__(self):
    state = dict(self.__dict__)
    del state["_lock"]
    if self.version_dir is not None:
      state["_source"] = None  # Worker processes open their own readers.
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> dict | None:
    try:
      record = self._open()[index]
      self._failures_in_a_row = 0
      self._any_read = True
      return record
    except Exception as e:  # pylint: disable=broad-except
      # A corrupt record must not end a long run. It is read again every epoch (and by each
      # reading thread), so it is named once; the count shows how common they are.
      with self._lock:
        first = index not in self.unreadable
        self.unreadable.add(index)
        self.skipped += 1
        self._failures_in_a_row += 1
        # Every record is unreadable: each index has failed, or more reads than there are
        # records failed before any record decoded. (Failures in a row alone are no sign once
        # something decoded: reading threads meet the one bad record of a small split several
        # times in a row by chance.)
        every = len(self.unreadable) >= self._length or (
            not self._any_read and self._failures_in_a_row > self._length)
      if every:
        rebuild = ("a readable data source" if self.version_dir is None else
                   f"readable records: build it again with "
                   f"`{builders.rebuild_command(self.version_dir)}`")
        raise ValueError(f"every record of split {self.split} in {self.version_dir} failed to "
                         f"decode ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                         f"expected {rebuild}.") from None
      if first:
        logging.warning("Skipped unreadable record %d of split %s in %s (%s: %s); %d of its %d "
                        "records skipped so far in this process, each named once.", index,
                        self.split, self.version_dir, type(e).__name__,
                        str(e).splitlines()[0][:200], len(self.unreadable), self._length)
      return None


def open_records(data_dir_or_source: Any, split: str) -> Records:
  """Records of `split` from a dataset folder (paths.resolve) or a decoded-record sequence."""
  if isinstance(data_dir_or_source, (str, os.PathLike)):
    return Records(paths.resolve(data_dir_or_source), split)
  if isinstance(data_dir_or_source, Records):
    return data_dir_or_source
  if not hasattr(data_dir_or_source, "__getitem__") or not hasattr(data_dir_or_source, "__len__"):
    raise ValueError(f"data source {data_dir_or_source!r} is neither a dataset folder nor a "
                     "sequence of records; expected a path from launch/build_dataset.py.")
  return Records(None, split, data_dir_or_source)


def load_stats(stats: Any, records: Records, absolute: bool = False):
  """motion.Stats from a Stats, a JSON path, or (None) the file beside the dataset."""
  if isinstance(stats, motion_lib.Stats):
    return stats
  if stats is None:
    if records.version_dir is None:
      raise ValueError("motion_pipeline needs `stats` when reading from a data source object; "
                       "expected a motion.Stats or the path of a motion_stats.json.")
    name = statistics.ABSOLUTE_STATS_FILE if absolute else statistics.STATS_FILE
    stats = os.path.join(records.version_dir, name)
  return motion_lib.Stats.load(os.fspath(stats))


def _summary(records: Records) -> dict | None:
  if records.version_dir is None:
    return None
  path = os.path.join(records.version_dir, statistics.SUMMARY_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f).get(records.split)


# ---------------------------------------------------------------------------------------------
# Per-example transforms (picklable: they travel to worker processes).


class MotionWindow:
  """A record -> one random window of min_frames..max_frames (windows.draw), padded to
  max_frames."""

  def __init__(self, mean, std, min_frames: int, max_frames: int, absolute: bool):
    self.mean = np.asarray(mean, np.float32)
    self.std = np.asarray(std, np.float32)
    self.min_frames, self.max_frames, self.absolute = min_frames, max_frames, absolute

  def __call__(self, record: dict | None, rng: np.random.Generator) -> dict | None:
    if record is None:
      return None
    s, length = windows.draw(int(record["num_frames"]), self.min_frames, self.max_frames, rng)
    vectors = windows.window_motion(record, s, length, self.absolute)
    pad = self.max_frames - length
    motion = np.zeros((self.max_frames, contracts.MOTION_DIM), np.float32)
    motion[:length] = (vectors - self.mean) / self.std
    mel = np.zeros((self.max_frames, contracts.MEL_BINS), np.float32)
    mel[:length] = record["mel"][s:s + length]
    return {
        "mel": mel,
        "motion": motion,
        "mask": np.concatenate([np.ones(length, np.float32), np.zeros(pad, np.float32)]),
        "ref_head_pose": np.asarray(record["head_pose"][s], np.float32),
        "ref_body_keypoints": np.asarray(record["body_keypoints"][s], np.float32),
        "shape": np.asarray(record["shape"], np.float32),
        "fov": np.asarray(record["fov"], np.float32),
    }


def decode_frame(png: bytes, resolution: int) -> np.ndarray:
  """PNG bytes -> uint8 [resolution, resolution, 3]; box filter down, bilinear up."""
  with Image.open(io.BytesIO(png)) as image:
    image = image.convert("RGB")
    if image.size != (resolution, resolution):
      down = image.width > resolution
      image = image.resize((resolution, resolution),
                           Image.Resampling.BOX if down else Image.Resampling.BILINEAR)
    return np.asarray(image, np.uint8)


def sample_window_and_reference(num_frames: int, window: int, min_distance: int,
                                rng: np.random.Generator) -> tuple[int, int] | None:
  """(start, reference): a uniform start among those that admit a reference at least
  `min_distance` frames from every window frame, then a uniform such reference; None if none."""
  starts = np.arange(max(0, num_frames - window + 1))
  before = np.maximum(0, starts - min_distance + 1)  # references 0 .. s - D
  after = np.maximum(0, num_frames - (starts + window - 1 + min_distance))  # s + N - 1 + D ..
  valid = np.flatnonzero(before + after > 0)
  if valid.size == 0:
    return None
  s = int(starts[valid[rng.integers(valid.size)]])
  k = int(rng.integers(before[s] + after[s]))
  return s, (k if k < before[s] else s + window - 1 + min_distance + (k - before[s]))


def window_frames(record: dict, start: int, num_frames: int, resolution: int) -> dict:
  """Frames start .. start + num_frames - 1 of a record, decoded (only those) and resized to
  `resolution`, with the clip's shape and fov and the frames' parameters (float32)."""
  w = slice(start, start + num_frames)
  png = record["frames"]
  return {
      "frames": np.stack([decode_frame(png[i], resolution) for i in range(w.start, w.stop)]),
      "shape": np.asarray(record["shape"], np.float32),
      "fov": np.asarray(record["fov"], np.float32),
      "expression": np.asarray(record["expression"][w], np.float32),
      "head_pose": np.asarray(record["head_pose"][w], np.float32),
      "body_keypoints": np.asarray(record["body_keypoints"][w], np.float32),
      "body_visibility": np.asarray(record["body_visibility"][w], np.float32),
  }


class FramesWindow:
  """A record -> num_frames consecutive frames from a uniform start and their parameters."""

  def __init__(self, resolution: int, num_frames: int):
    self.resolution, self.num_frames = resolution, num_frames

  def __call__(self, record: dict | None, rng: np.random.Generator) -> dict | None:
    if record is None:
      return None
    t = int(record["num_frames"])
    if t < self.num_frames:
      logging.log_first_n(logging.WARNING, "Skipped a clip of %d frames: too short for %d-frame "
                          "windows.", 5, t, self.num_frames)
      return None
    start = int(rng.integers(t - self.num_frames + 1))
    return window_frames(record, start, self.num_frames, self.resolution)


class VideoWindow:
  """A record -> num_frames consecutive frames, a distant reference frame and their parameters;
  with `samples` > 1, that many independent such draws from the one record, stacked on a leading
  axis (the record is read once: at 128 px reading a 240-frame record costs about ten times
  decoding one frame, so the image pipeline was reading, not decoding)."""

  def __init__(self, resolution: int, num_frames: int, min_ref_distance: int, samples: int = 1):
    self.resolution, self.num_frames, self.min_ref_distance = (resolution, num_frames,
                                                               min_ref_distance)
    self.samples = samples

  def _one(self, record: dict, t: int, rng: np.random.Generator) -> dict | None:
    pick = sample_window_and_reference(t, self.num_frames, self.min_ref_distance, rng)
    if pick is None:
      logging.log_first_n(logging.WARNING, "Skipped a clip of %d frames: too short for %d-frame "
                          "windows with a reference %d frames away.", 5, t, self.num_frames,
                          self.min_ref_distance)
      return None
    s, r = pick
    example = window_frames(record, s, self.num_frames, self.resolution)
    example["ref_frame"] = decode_frame(record["frames"][r], self.resolution)
    for key in ("expression", "head_pose", "body_keypoints", "body_visibility"):
      example["ref_" + key] = np.asarray(record[key][r], np.float32)
    return example

  def __call__(self, record: dict | None, rng: np.random.Generator) -> dict | None:
    if record is None:
      return None
    t = int(record["num_frames"])
    if self.samples == 1:
      return self._one(record, t, rng)
    draws = [self._one(record, t, rng) for _ in range(self.samples)]
    if draws[0] is None:
      return None
    return {k: np.stack([d[k] for d in draws]) for k in draws[0]}


def _merge_leading(batch: dict) -> dict:
  """[b, k, ...] -> [b * k, ...] for every array of a batch."""
  return {k: v.reshape((-1,) + v.shape[2:]) for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------
# Pipelines.


def _iterator(records: Records, transform: Callable, batch_size: int, seed: int,
              process_index: int, process_count: int, num_workers: int,
              samples_per_record: int = 1) -> grain.DatasetIterator:
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in [0, {process_count}); expected "
                     "0 <= process_index < process_count.")
  if len(records) < process_count:
    raise ValueError(f"split {records.split} has {len(records)} clips for {process_count} "
                     "processes; expected at least one clip per process.")
  if batch_size < 1:
    raise ValueError(f"batch_size is {batch_size}; expected a positive host-local batch size.")
  ds = grain.MapDataset.source(records)[process_index::process_count]
  # Shuffling after sharding keeps shards disjoint; repeat after shuffle reshuffles every epoch.
  ds = ds.shuffle(seed=seed % 2**32).repeat()
  ds = ds.random_map(transform, seed=(seed * 7919 + process_index) % 2**32)
  read = grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=READ_BUFFER)
  # A transform that draws several examples from one record stacks them: batch records, then
  # merge the two leading axes.
  it = ds.to_iter_dataset(read).batch(batch_size // samples_per_record, drop_remainder=True)
  if samples_per_record > 1:
    it = it.map(_merge_leading)
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():
      # grain reads its own absl flags when it starts workers; outside an absl app (a library
      # user, pytest) nobody parsed them, and their defaults are what we want.
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                     per_worker_buffer_size=2))
  return iter(it)


def motion_pipeline(data_dir_or_source: Any, split: str, batch_size: int, seed: int,
                    process_index: int = 0, process_count: int = 1, stats: Any = None,
                    num_workers: int = 0, min_frames: int = windows.MIN_FRAMES,
                    max_frames: int = windows.MAX_FRAMES,
                    absolute: bool = False) -> grain.DatasetIterator:
  """Audio-to-motion batches: random 72-240 frame windows padded to max_frames (module doc).

  Motion is motion.pack relative to the window's first frame, normalised by `stats` (a
  motion.Stats, a JSON path, or None for the dataset's own motion_stats[_absolute].json).
  A clip shorter than min_frames gives one window of the whole clip.
  """
  windows.check_lengths(min_frames, max_frames)
  records = open_records(data_dir_or_source, split)
  s = load_stats(stats, records, absolute)
  transform = MotionWindow(s.mean, s.std, min_frames, max_frames, absolute)
  return _iterator(records, transform, batch_size, seed, process_index, process_count,
                   num_workers)


def _check_longest_clip(records: Records, needed: int, what: str) -> None:
  """ValueError in one sentence if the split's clip summary says no clip has `needed` frames."""
  summary = _summary(records)
  if summary is not None and summary["max_frames"] < needed:
    raise ValueError(f"split {records.split} of {records.version_dir} has clips of at most "
                     f"{summary['max_frames']} frames; expected at least {needed} for {what}.")


def video_pipeline(data_dir_or_source: Any, split: str, batch_size: int, seed: int,
                   process_index: int = 0, process_count: int = 1, *, resolution: int,
                   num_workers: int = 0, num_frames: int = 8,
                   min_ref_distance: int = 72) -> grain.DatasetIterator:
  """Video-model batches: num_frames-frame windows and a reference frame at least
  min_ref_distance frames from each of them (Supp. C.2), resized to `resolution` (module doc)."""
  records = open_records(data_dir_or_source, split)
  _check_longest_clip(records, num_frames + min_ref_distance,
                      f"{num_frames}-frame windows with a reference {min_ref_distance} frames away")
  transform = VideoWindow(resolution, num_frames, min_ref_distance)
  return _iterator(records, transform, batch_size, seed, process_index, process_count,
                   num_workers)


def image_pipeline(data_dir_or_source: Any, split: str, batch_size: int, seed: int,
                   process_index: int = 0, process_count: int = 1, *, resolution: int,
                   num_workers: int = 0, min_ref_distance: int = 72,
                   samples_per_clip: int = 1) -> grain.DatasetIterator:
  """Image pre-training batches: video_pipeline with one frame, frames uint8 [B, 1, R, R, 3].

  samples_per_clip > 1 takes that many independent frame/reference pairs from each clip read
  (a batch then holds B / samples_per_clip clips): several times the examples per second where
  reading whole-clip records sets the pace (docs/data.md).
  """
  if samples_per_clip < 1 or batch_size % samples_per_clip:
    raise ValueError(f"samples_per_clip is {samples_per_clip} for a batch of {batch_size}; "
                     "expected a positive divisor of the host-local batch size.")
  records = open_records(data_dir_or_source, split)
  _check_longest_clip(records, 1 + min_ref_distance,
                      f"images with a reference {min_ref_distance} frames away")
  transform = VideoWindow(resolution, 1, min_ref_distance, samples=samples_per_clip)
  return _iterator(records, transform, batch_size, seed, process_index, process_count,
                   num_workers, samples_per_record=samples_per_clip)


def frames_pipeline(data_dir_or_source: Any, split: str, batch_size: int, seed: int,
                    process_index: int = 0, process_count: int = 1, *, resolution: int,
                    num_frames: int, num_workers: int = 0) -> grain.DatasetIterator:
  """Super-resolution batches: num_frames consecutive frames from a uniform start in
  [0, T - num_frames], resized to `resolution`, and their parameters; no reference (module doc).

  Only the window's frames are decoded. Clips shorter than num_frames are skipped (a warning).
  """
  if num_frames < 1:
    raise ValueError(f"num_frames is {num_frames}; expected at least one frame per window.")
  records = open_records(data_dir_or_source, split)
  _check_longest_clip(records, num_frames, f"{num_frames}-frame windows")
  return _iterator(records, FramesWindow(resolution, num_frames), batch_size, seed, process_index,
                   process_count, num_workers)
