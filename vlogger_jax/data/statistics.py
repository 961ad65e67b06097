"""What a dataset knows about itself, written beside its records: motion statistics, clip summary.

In the dataset's version folder, each written atomically (fileio):
  motion_stats.json           motion.Stats of relative motion vectors over the train split:
                              STATS_WINDOWS_PER_CLIP random windows per clip, drawn and packed as
                              the motion pipeline does (relative to each window's first frame)
  motion_stats_absolute.json  the same windows packed with absolute=True
  clip_summary.json           per split: number of clips, shortest and longest clip, resolutions
motion_stats.json is written last and marks a finished dataset (builders.is_finished).
"""

from __future__ import annotations

import os

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from vlogger_jax import contracts
from vlogger_jax import fileio
from vlogger_jax import motion
from vlogger_jax.data import windows

STATS_FILE = "motion_stats.json"
ABSOLUTE_STATS_FILE = "motion_stats_absolute.json"
SUMMARY_FILE = "clip_summary.json"
STATS_WINDOWS_PER_CLIP = 8


def motion_window_vectors(clip: dict, rng: np.random.Generator, count: int,
                          absolute: bool = False) -> np.ndarray:
  """Motion vectors [N, 223] of `count` windows of the motion pipeline's lengths (windows.draw,
  one after another from `rng`), each relative to its first frame; N = their total length."""
  t = int(clip["num_frames"])
  out = []
  for _ in range(count):
    start, length = windows.draw(t, windows.MIN_FRAMES, windows.MAX_FRAMES, rng)
    out.append(windows.window_motion(clip, start, length, absolute))
  return np.concatenate(out).astype(np.float64)


def write_statistics(version_dir: str, seed: int = 0) -> None:
  """Motion statistics over the train split and the per-split clip summary, beside the records."""
  builder = tfds.builder_from_directory(version_dir)
  summary = {}
  sums = {False: np.zeros((3, contracts.MOTION_DIM)), True: np.zeros((3, contracts.MOTION_DIM))}
  rng = np.random.default_rng(seed)
  for split, info in builder.info.splits.items():
    source = builder.as_data_source(split)
    lengths, resolutions = [], set()
    for i in range(len(source)):
      try:
        clip = source[i]
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("Statistics skip record %d of split %s in %s: %s", i, split,
                        version_dir, e)
        continue
      lengths.append(int(clip["num_frames"]))
      resolutions.add(int(clip["resolution"]))
      if split == "train":
        state = rng.bit_generator.state
        for absolute in (False, True):
          rng.bit_generator.state = state  # The same windows for both kinds.
          v = motion_window_vectors(clip, rng, STATS_WINDOWS_PER_CLIP, absolute)
          sums[absolute] += [np.full(v.shape[1], v.shape[0]), v.sum(0), np.square(v).sum(0)]
      if (i + 1) % 100 == 0:
        logging.info("Statistics: %d / %d clips of split %s", i + 1, info.num_examples, split)
    summary[split] = {"num_clips": len(lengths), "min_frames": min(lengths, default=0),
                      "max_frames": max(lengths, default=0), "resolutions": sorted(resolutions)}
  if sums[False][0, 0] == 0:
    raise ValueError(f"dataset {version_dir} has no readable train clip; expected at least one "
                     "to compute motion statistics.")
  fileio.write_json(os.path.join(version_dir, SUMMARY_FILE), summary)
  for absolute, name in ((True, ABSOLUTE_STATS_FILE), (False, STATS_FILE)):
    n, s, s2 = sums[absolute]
    mean = s / n
    std = np.sqrt(np.maximum(s2 / n - mean ** 2, 0.0))
    motion.Stats(mean, std).save(os.path.join(version_dir, name))
