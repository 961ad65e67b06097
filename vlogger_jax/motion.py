"""The motion vector (223 numbers per frame) and its dataset normalisation statistics.

Layout, fixed across the project (docs/contracts.md; the sizes are vlogger_jax/contracts.py's):
  [0:64)    expression theta_e
  [64:73)   head-pose residual: 6-D rotation of R_ref^T R_t (6) | t_t - t_ref (3)
  [73:223)  body residual: keypoints_t - keypoints_ref, 75 x 2, flattened x0, y0, x1, y1, ...
Residuals are relative to the clip's reference frame; with `absolute=True` (the paper's ablation)
the head pose and keypoints are stored as they are instead.

Statistics (mean, std per dimension) are computed once per dataset, saved beside it as JSON and
travel with every checkpoint; models see normalised vectors, (x - mean) / std.
"""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np

from vlogger_jax import fileio
from vlogger_jax import geometry
from vlogger_jax.contracts import (  # noqa: F401  (the motion vector's sizes, by their usual names)
    BODY_DIM, MOTION_DIM, NUM_EXPRESSION, NUM_KEYPOINTS)
from vlogger_jax.contracts import HEAD_POSE_DIM as HEAD_DIM
EXPRESSION = slice(0, NUM_EXPRESSION)
HEAD = slice(NUM_EXPRESSION, NUM_EXPRESSION + HEAD_DIM)
BODY = slice(NUM_EXPRESSION + HEAD_DIM, MOTION_DIM)
PARTS = {"expression": EXPRESSION, "head": HEAD, "body": BODY}
_IDENTITY_6D = np.array([1, 0, 0, 0, 1, 0], np.float32)


def pack(expression, head_pose, body_keypoints, ref_head_pose, ref_body_keypoints,
         absolute: bool = False):
  """Motion vectors [..., T, 223] from per-frame parameters and the reference frame's pose.

  All-NumPy inputs stay in NumPy (data workers never start JAX); otherwise jax.numpy.

  expression [..., T, 64], head_pose [..., T, 9], body_keypoints [..., T, 75, 2],
  ref_head_pose [..., 9], ref_body_keypoints [..., 75, 2]. Works on numpy and jax arrays.
  """
  xp = np if all(isinstance(a, np.ndarray) for a in (expression, head_pose)) else jnp
  if absolute:
    head, body = head_pose, body_keypoints
  else:
    r = geometry.rot6d_to_matrix(head_pose[..., :6])
    r_ref = geometry.rot6d_to_matrix(ref_head_pose[..., None, :6])
    rel = xp.swapaxes(r_ref, -1, -2) @ r
    head = xp.concatenate([geometry.matrix_to_rot6d(rel),
                           head_pose[..., 6:] - ref_head_pose[..., None, 6:]], axis=-1)
    body = body_keypoints - ref_body_keypoints[..., None, :, :]
  body = body.reshape(body.shape[:-2] + (BODY_DIM,))
  return xp.concatenate([expression, xp.asarray(head, expression.dtype),
                         xp.asarray(body, expression.dtype)], axis=-1)


def unpack(motion, ref_head_pose, ref_body_keypoints, absolute: bool = False):
  """Inverse of pack: (expression [..., T, 64], head_pose [..., T, 9], keypoints [..., T, 75, 2])."""
  xp = np if isinstance(motion, np.ndarray) else jnp
  expression = motion[..., EXPRESSION]
  head = motion[..., HEAD]
  body = motion[..., BODY].reshape(motion.shape[:-1] + (NUM_KEYPOINTS, 2))
  if absolute:
    return expression, head, body
  rel = geometry.rot6d_to_matrix(head[..., :6])
  r_ref = geometry.rot6d_to_matrix(ref_head_pose[..., None, :6])
  r = r_ref @ rel
  head_pose = xp.concatenate([geometry.matrix_to_rot6d(r),
                              head[..., 6:] + ref_head_pose[..., None, 6:]], axis=-1)
  return expression, head_pose, body + ref_body_keypoints[..., None, :, :]


class Stats:
  """Per-dimension mean and std of motion vectors; normalise/denormalise [..., 223]."""

  def __init__(self, mean, std, min_std: float = 1e-3):
    self.mean = np.asarray(mean, np.float32)
    self.std = np.maximum(np.asarray(std, np.float32), min_std)
    if self.mean.shape != (MOTION_DIM,) or self.std.shape != (MOTION_DIM,):
      raise ValueError(f"motion statistics have shapes {self.mean.shape}, {self.std.shape}; "
                       f"expected ({MOTION_DIM},) each.")

  @classmethod
  def identity(cls) -> "Stats":
    return cls(np.zeros(MOTION_DIM), np.ones(MOTION_DIM))

  @classmethod
  def from_vectors(cls, vectors: np.ndarray, mask: np.ndarray | None = None) -> "Stats":
    """Statistics of motion vectors [N, 223] (rows with mask 0 are ignored)."""
    v = np.asarray(vectors, np.float64).reshape(-1, MOTION_DIM)
    if mask is not None:
      v = v[np.asarray(mask).reshape(-1) > 0]
    return cls(v.mean(0), v.std(0))

  def normalize(self, x):
    return (x - self.mean) / self.std

  def denormalize(self, x):
    return x * self.std + self.mean

  def to_dict(self) -> dict:
    return {"mean": self.mean.tolist(), "std": self.std.tolist()}

  @classmethod
  def from_dict(cls, d: dict) -> "Stats":
    return cls(d["mean"], d["std"])

  def save(self, path: str) -> None:
    fileio.write_json(path, self.to_dict(), indent=None)

  @classmethod
  def load(cls, path: str) -> "Stats":
    if not os.path.exists(path):
      raise ValueError(f"motion statistics file {path} does not exist; build the dataset first.")
    with open(path) as f:
      return cls.from_dict(json.load(f))


def identity_head_pose_residual() -> np.ndarray:
  """The 9 numbers of 'no change from the reference pose'."""
  return np.concatenate([_IDENTITY_6D, np.zeros(3, np.float32)])
