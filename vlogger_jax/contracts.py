"""The representation contracts that cross modules, defined once (docs/contracts.md).

Every module that needs one of these numbers or key lists imports it from here; the modules that
own a representation (motion.py the motion vector, render.py the control channels, head.py the
head model, data/schema.py the clip format) build on them.
"""

from __future__ import annotations

import numpy as np

# --- time and audio ---
FPS = 24                        # video frames per second
SAMPLE_RATE = 16_000            # audio samples per second (mono)
MEL_BINS = 256                  # log-mel bins per video frame

# --- the parameters of one frame ---
NUM_SHAPE = 64                  # head shape beta (one per identity)
NUM_EXPRESSION = 64             # expression theta_e (jaw, gaze, blinks live here too)
HEAD_POSE_DIM = 9               # 6-D rotation | translation
NUM_KEYPOINTS = 75              # 33 pose + 21 left hand + 21 right hand (MediaPipe Holistic)
BODY_DIM = NUM_KEYPOINTS * 2    # image-plane x, y
MOTION_DIM = NUM_EXPRESSION + HEAD_POSE_DIM + BODY_DIM   # 223: the motion vector

# --- batch keys ---
# Per-frame motion parameters of a clip, and those of its reference frame (prefixed 'ref_').
FRAME_KEYS = ("expression", "head_pose", "body_keypoints", "body_visibility")
REF_KEYS = tuple(f"ref_{k}" for k in FRAME_KEYS)
# What the video models need to render a clip's controls: identity, camera, frames, reference.
CLIP_KEYS = ("shape", "fov") + FRAME_KEYS + REF_KEYS
# The motion batch of the motion model: mel [B, W, 256], motion [B, W, 223], mask [B, W].
MOTION_BATCH_KEYS = ("mel", "motion", "mask")


def frame_shapes(num_frames: int) -> dict:
  """{key: shape} of the per-frame parameters of `num_frames` frames (FRAME_KEYS)."""
  n = num_frames
  return {"expression": (n, NUM_EXPRESSION), "head_pose": (n, HEAD_POSE_DIM),
          "body_keypoints": (n, NUM_KEYPOINTS, 2), "body_visibility": (n, NUM_KEYPOINTS)}


def clip_shapes(num_frames: int) -> dict:
  """{key: shape} of one clip of motion parameters without a batch dimension (CLIP_KEYS)."""
  out = {"shape": (NUM_SHAPE,), "fov": ()}
  out.update(frame_shapes(num_frames))
  out.update({f"ref_{k}": s[1:] for k, s in frame_shapes(1).items()})
  return out


def video_batch_shapes(batch: int, num_frames: int, size: int) -> dict:
  """{key: (shape, dtype)} of the video batch that the data pipelines yield and the video tasks
  train on: uint8 frames [B, N, S, S, 3], the reference frame [B, S, S, 3] and CLIP_KEYS."""
  out = {"frames": ((batch, num_frames, size, size, 3), np.uint8),
         "ref_frame": ((batch, size, size, 3), np.uint8)}
  out.update({k: ((batch,) + s, np.float32) for k, s in clip_shapes(num_frames).items()})
  return out
