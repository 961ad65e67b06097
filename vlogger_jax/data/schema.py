"""The clip format: what one talking-human clip holds on disk, for real and synthetic data alike.

Values are absolute (per-frame parameters as fitted or generated); the pipelines derive the
paper's residuals relative to a chosen reference frame (vlogger_jax/motion.py).

| field            | dtype   | shape         | meaning                                                 |
|------------------|---------|---------------|---------------------------------------------------------|
| id               | str     | ()            | unique clip id                                          |
| frames           | uint8   | [T, R, R, 3]  | RGB video at 24 fps, square resolution R <= 512         |
| audio            | int16   | [S]           | mono 16 kHz; S = samples covering the T frames          |
| shape            | float32 | [64]          | head shape beta, shared by the clip                     |
| fov              | float32 | ()            | camera diagonal field of view, degrees                  |
| expression       | float32 | [T, 64]       | theta_e per frame                                       |
| head_pose        | float32 | [T, 9]        | 6-D rotation | translation (camera frame, metres)       |
| body_keypoints   | float32 | [T, 75, 2]    | image-plane [0, 1] coordinates, x right, y down         |
| body_visibility  | float32 | [T, 75]       | 1 visible, 0 not                                        |
"""

from __future__ import annotations

import numpy as np

from vlogger_jax import audio as audio_lib
from vlogger_jax import contracts

# The clip format's frame and sample rates (contracts.py), read by launch/make_synthetic_sample.py.
FPS = contracts.FPS
SAMPLE_RATE = contracts.SAMPLE_RATE
MAX_RESOLUTION = 512
CLIP_FRAMES = 240  # 10 s, the paper's clip length (Supp. B)

# name -> (dtype, shape with 'T' for frames, 'S' for samples, 'R' for resolution)
FIELDS = {
    "id": (str, ()),
    "frames": (np.uint8, ("T", "R", "R", 3)),
    "audio": (np.int16, ("S",)),
    "shape": (np.float32, (contracts.NUM_SHAPE,)),
    "fov": (np.float32, ()),
    "expression": (np.float32, ("T", contracts.NUM_EXPRESSION)),
    "head_pose": (np.float32, ("T", contracts.HEAD_POSE_DIM)),
    "body_keypoints": (np.float32, ("T", contracts.NUM_KEYPOINTS, 2)),
    "body_visibility": (np.float32, ("T", contracts.NUM_KEYPOINTS)),
}


def num_samples(num_frames: int) -> int:
  """Audio samples that cover `num_frames` video frames."""
  return audio_lib.num_samples_for_frames(num_frames)


def validate_clip(clip: dict, name: str = "clip") -> None:
  """Raises ValueError naming the field if `clip` does not follow the format above."""
  missing = [k for k in FIELDS if k not in clip]
  if missing:
    raise ValueError(f"{name} lacks the field(s) {', '.join(missing)}; expected all of "
                     f"{', '.join(FIELDS)}.")
  frames = np.asarray(clip["frames"])
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1] != frames.shape[2]:
    raise ValueError(f"{name}: frames have shape {frames.shape}; expected [T, R, R, 3].")
  t, r = frames.shape[0], frames.shape[1]
  if r > MAX_RESOLUTION:
    raise ValueError(f"{name}: frames are {r}x{r}; expected at most {MAX_RESOLUTION}.")
  sizes = {"T": t, "R": r, "S": num_samples(t)}
  for key, (dtype, shape) in FIELDS.items():
    if dtype is str:
      continue
    value = np.asarray(clip[key])
    want = tuple(sizes.get(s, s) if isinstance(s, str) else s for s in shape)
    if key == "audio":
      if value.ndim != 1 or value.shape[0] < sizes["S"]:
        raise ValueError(f"{name}: audio has shape {value.shape}; expected at least "
                         f"{sizes['S']} samples at 16 kHz for {t} frames.")
    elif value.shape != want:
      raise ValueError(f"{name}: {key} has shape {value.shape}; expected {want}.")
    if value.dtype != np.dtype(dtype):
      raise ValueError(f"{name}: {key} has dtype {value.dtype}; expected {np.dtype(dtype)}.")
    if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
      raise ValueError(f"{name}: {key} holds NaN or Inf values.")
