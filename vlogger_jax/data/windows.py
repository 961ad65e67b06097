"""The motion-window sampler, defined once: which frames of a clip one motion-model example covers.

A window's length is uniform in [min_frames, max_frames] (72-240 frames, 3-10 s, Supp. C.1), cut
to the clip's length (a clip shorter than the drawn length gives the whole clip), and its start is
uniform among those that keep it inside the clip. Its motion is motion.pack relative to the
window's first frame, the reference.

Three readers draw windows, each from its own generator and in its own order, kept exactly as
they were so that datasets' statistics and the batches of a seed stay the same:
  pipelines.MotionWindow       `draw`: one window per record from grain's per-record generator
  statistics                   `draw`: STATS_WINDOWS_PER_CLIP windows per train clip, in turn
  motion_bank                  `draw_batch`: a whole batch in two vectorised calls
`draw` and `draw_batch` draw the same distribution, but not the same numbers from one generator
(`draw_batch` takes the starts from one rng.random call, `draw` from rng.integers per window).
"""

from __future__ import annotations

import numpy as np

from vlogger_jax import motion

MIN_FRAMES, MAX_FRAMES = 72, 240  # The motion model's window lengths (Supp. C.1).


def check_lengths(min_frames: int, max_frames: int) -> None:
  """ValueError in one sentence unless 0 < min_frames <= max_frames."""
  if not 0 < min_frames <= max_frames:
    raise ValueError(f"window lengths [{min_frames}, {max_frames}] are not a valid range; "
                     "expected 0 < min_frames <= max_frames.")


def draw(num_frames: int, min_frames: int, max_frames: int, rng) -> tuple[int, int]:
  """(start, length) of one window of a clip of `num_frames` frames.

  Two calls, rng.integers(min_frames, max_frames + 1) for the length and then
  rng.integers(0, num_frames - length + 1) for the start (tests script them in this order).
  """
  length = min(num_frames, int(rng.integers(min_frames, max_frames + 1)))
  start = int(rng.integers(0, num_frames - length + 1))
  return start, length


def draw_batch(num_frames: np.ndarray, min_frames: int, max_frames: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """(start [B] int64, length [B]) of one window in each of B clips of num_frames [B] frames."""
  n = len(num_frames)
  length = np.minimum(num_frames, rng.integers(min_frames, max_frames + 1, n))
  start = np.floor(rng.random(n) * (num_frames - length + 1)).astype(np.int64)
  return start, length


def window_motion(clip: dict, start: int, length: int, absolute: bool = False) -> np.ndarray:
  """Motion vectors [length, 223] of frames start .. start + length - 1 of `clip` (a record or a
  clip dict: expression [T, 64], head_pose [T, 9], body_keypoints [T, 75, 2]), relative to
  frame `start` (absolute: motion.pack's absolute variant)."""
  w = slice(start, start + length)
  return motion.pack(clip["expression"][w], clip["head_pose"][w], clip["body_keypoints"][w],
                     np.asarray(clip["head_pose"][start], np.float32),
                     np.asarray(clip["body_keypoints"][start], np.float32), absolute)
