"""What the image and video tasks share: the video batch's spec and a benchmark batch."""

from __future__ import annotations

import jax
import numpy as np

from vlogger_jax import contracts
from vlogger_jax.data import synthetic


def batch_spec(batch: int, num_frames: int, size: int) -> dict:
  """{key: (ShapeDtypeStruct, logical axes)} of one global video batch (contracts)."""
  return {k: (jax.ShapeDtypeStruct(shape, dtype), ("batch",) + (None,) * (len(shape) - 1))
          for k, (shape, dtype) in
          contracts.video_batch_shapes(batch, num_frames, size).items()}


def example_batch(head_model, batch: int, num_frames: int, size: int, seed: int = 0) -> dict:
  """A host batch for benchmarks: random pixels, but the motion parameters of synthetic clips
  (vlogger_jax/data/synthetic.py), so that the controls rendered in the step cost what they cost
  in training. (Uniform random parameters put heads across and behind the camera; the
  rasterizer's per-call window then covers whole frames, which took 32 % of the measured
  paper-size step on an H200. Synthetic parameters kept it at 4-8 pixels in the batches
  checked; BENCHMARKS.md.)"""
  n = num_frames
  rng = np.random.default_rng(seed)
  rows = []
  for i in range(batch):   # frames 0..n-1 of each plan are the window, frame n the reference
    plan = synthetic.plan_clip(seed * 100_003 + i, n + 1, size, head_model)
    rows.append({"shape": plan.shape, "fov": plan.fov,
                 **{k: getattr(plan, k)[:n] for k in contracts.FRAME_KEYS},
                 **{f"ref_{k}": getattr(plan, k)[n] for k in contracts.FRAME_KEYS},
                 "frames": rng.integers(0, 256, (n, size, size, 3), np.uint8),
                 "ref_frame": rng.integers(0, 256, (size, size, 3), np.uint8)})
  return {k: np.stack([r[k] for r in rows]).astype(dtype)
          for k, (_, dtype) in contracts.video_batch_shapes(batch, n, size).items()}

