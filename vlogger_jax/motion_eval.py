"""Motion quality through the head model: mouth opening and its range, bilabial closure, lip
error (LME), jitter, diversity.

All distances are in millimetres of the head model's mesh. Expressions are compared with the head
at the identity pose (the lips alone); jitter uses the fully posed head. Landmarks are the head
asset's 68 iBUG points (48..67 the lips, 62/66 the inner-lip middles) plus two iris centres.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vlogger_jax import head as head_lib

LIPS = np.arange(48, 68)
UPPER_INNER, LOWER_INNER = 62, 66
# Lips closer than this (inner-lip gap, mm) count as closed; the gap is 0 with the jaw shut.
LIPS_CLOSED_MM = 1.5


@jax.jit
def _landmarks(model, shape, expression, head_pose):
  verts = head_lib.forward(model, shape, expression, head_pose)
  return head_lib.landmarks(model, verts), verts


def lip_landmarks(model, shape, expression) -> np.ndarray:
  """Lip landmarks in mm at the identity pose: shape [64], expression [T, 64] -> [T, 20, 3]."""
  pose = jnp.broadcast_to(head_lib.identity_head_pose(0.0), (expression.shape[0], 9))
  lmk, _ = _landmarks(model, jnp.asarray(shape), jnp.asarray(expression), pose)
  return np.asarray(lmk)[:, LIPS] * 1000.0


def mouth_opening(model, shape, expression) -> np.ndarray:
  """Inner-lip gap per frame in mm: [T]."""
  lips = lip_landmarks(model, shape, expression)
  return np.linalg.norm(lips[:, UPPER_INNER - 48] - lips[:, LOWER_INNER - 48], axis=-1)


def bilabial_closure(opening, intervals, fps: float = 24.0) -> float:
  """Share of bilabials whose lips close: opening [T] mm, intervals [(start_s, end_s)] of /p b m/.

  A bilabial counts as closed when any frame whose span overlaps its interval has a gap below
  LIPS_CLOSED_MM; intervals past the clip are ignored; NaN when none is left.
  """
  opening = np.asarray(opening)
  hits = []
  for start, end in intervals:
    first, last = int(np.floor(start * fps)), min(int(np.ceil(end * fps)), opening.size)
    if first >= opening.size or last <= first:
      continue
    hits.append(float(opening[first:last].min() < LIPS_CLOSED_MM))
  return float(np.mean(hits)) if hits else float("nan")


def opening_range(opening) -> float:
  """The mouth's opening range in mm: the 95th percentile of opening [T] (robust to one frame)."""
  return float(np.percentile(np.asarray(opening, np.float64), 95))


def lip_error(model, shape, expression_pred, expression_true) -> float:
  """LME: mean distance (mm) of the lip landmarks between two expression sequences [T, 64]."""
  a = lip_landmarks(model, shape, expression_pred)
  b = lip_landmarks(model, shape, expression_true)
  return float(np.linalg.norm(a - b, axis=-1).mean())


def jitter(model, shape, expression, head_pose, fps: float = 24.0) -> float:
  """Mean magnitude of the jerk (third time derivative) of the posed vertices, mm/s^3."""
  _, verts = _landmarks(model, jnp.asarray(shape), jnp.asarray(expression),
                        jnp.asarray(head_pose))
  v = np.asarray(verts, np.float64) * 1000.0
  if v.shape[0] < 4:
    return 0.0
  jerk = np.diff(v, n=3, axis=0) * fps ** 3
  return float(np.linalg.norm(jerk, axis=-1).mean())


def pearson(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.std() < 1e-9 or b.std() < 1e-9:
    return 0.0
  return float(np.corrcoef(a, b)[0, 1])


def diversity(samples) -> float:
  """Std across samples of the same audio, averaged over frames and dimensions: [S, T, D]."""
  return float(np.asarray(samples).std(axis=0).mean())
