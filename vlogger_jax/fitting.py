"""Fitting the head model to 2-D landmarks (paper Supp. B.1): batched L-BFGS over clips and frames.

Per clip: one head shape β [64] and one camera field of view; per frame: expression θ^e [64] and
head pose [9]. The objective of one clip (docs/real_data.md), with the paper's weights:

  E = 1 · Σ_t mean_l c_tl ρ(|π(x_tl) - y_tl|)          reprojection, canonical pixels
    + 1 · Σ_t |q_t - q_(t-1)|²                         temporal: q = (θ^e, pose as image motion)
    + 0.1 · (|β|² + Σ_t |θ^e_t|²)                      prior (β and θ^e are ~N(0, 1) units)
    + fov_prior · ((fov - fov_init) / 10°)²            (ours: a photo barely constrains the FOV)

y_tl are detected landmarks (the head asset's 68 iBUG points and irises) in pixels of an H x W
image, measured in canonical pixels (the image's longer side scaled to 256) so that the weights
mean the same at any resolution; c_tl is the detector's confidence times a per-landmark weight
(the jaw contour, which a detector places on the silhouette, counts half, and less as the head
turns away: times cos² of the rigid fit's angle to the camera axis, since at large yaw the
detector's and the head asset's contour points part); a missing landmark has
c = 0 and a frame without a face only the temporal and prior terms. ρ is the pseudo-Huber
function 2δ²(√(1 + r²/δ²) - 1) (≈ r² below δ, linear above), robust to a wrong landmark.

Variables are chosen to be well conditioned for a quasi-Newton method: the head's image position
(normalised) and its scale (image units per metre, so the depth follows from the focal length),
rotation as axis-angle, the FOV through a sigmoid onto [FOV_MIN, FOV_MAX]. Two stages: rigid
(pose only, β = θ^e = 0, the FOV at its initial value), then everything. Each stage is a fixed
number of optax.lbfgs steps (zoom line search) in one lax.fori_loop; `fit` vmaps one clip's
solve over a batch of clips, all inside one jit, so many clips run at once on an accelerator.

Only the landmarks are needed, so the solve runs on `landmark_model(model)`: the vertices of the
landmark triangles plus one virtual vertex per joint (J_reg·(template + S·β) is linear in β, so
these reproduce the joints exactly); head.forward and head.landmarks run on it unchanged.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vlogger_jax import contracts
from vlogger_jax import geometry
from vlogger_jax import head as head_lib

CANONICAL = 256.0      # canonical pixels: the image's longer side scaled to this
FOV_MIN, FOV_MAX = 10.0, 90.0
CONTOUR_WEIGHT = 0.5
HEAD_RADIUS_M = 0.1    # converts rotation and scale changes into image motion


@dataclasses.dataclass(frozen=True)
class FitConfig:
  """Settings of one fit (the defaults are the documented ones)."""
  rigid_steps: int = 30
  steps: int = 300
  reprojection_weight: float = 1.0
  temporal_weight: float = 1.0
  prior_weight: float = 0.1
  fov_init: float = 35.0        # degrees, diagonal: the middle of common webcam/phone lenses
  fov_prior: float = 0.1
  robust_delta: float = 4.0     # canonical pixels
  memory_size: int = 10


def landmark_model(model: head_lib.HeadModel) -> head_lib.HeadModel:
  """The head model reduced to its landmark triangles' vertices and the joints (module doc)."""
  faces = np.asarray(model.faces)
  tri = np.asarray(model.landmark_tri)
  keep = np.unique(faces[tri].reshape(-1))
  remap = np.full(model.num_vertices, -1, np.int64)
  remap[keep] = np.arange(keep.size)
  reg = np.asarray(model.joint_regressor, np.float64)
  j = reg.shape[0]
  tmpl = np.asarray(model.template, np.float64)
  shape_b = np.asarray(model.shape_basis, np.float64)
  joint_tmpl = reg @ tmpl
  joint_shape = np.einsum("jv,vdk->jdk", reg, shape_b)
  n = keep.size
  skin = np.asarray(model.skin_weights)
  # Virtual joint vertices ride on their own joint (their skinned position is never used).
  joint_skin = np.eye(j, dtype=np.float32)
  return model.replace(
      template=jnp.asarray(np.concatenate([tmpl[keep], joint_tmpl]), jnp.float32),
      faces=jnp.asarray(remap[faces[tri]], jnp.int32),
      shape_basis=jnp.asarray(np.concatenate([shape_b[keep], joint_shape]), jnp.float32),
      expression_basis=jnp.asarray(np.concatenate(
          [np.asarray(model.expression_basis)[keep], np.zeros((j, 3, contracts.NUM_EXPRESSION))]),
          jnp.float32),
      joint_regressor=jnp.asarray(np.concatenate([np.zeros((j, n)), np.eye(j)], 1), jnp.float32),
      skin_weights=jnp.asarray(np.concatenate([skin[keep], joint_skin]), jnp.float32),
      tri_labels=jnp.zeros((tri.size,), jnp.int32),
      landmark_tri=jnp.arange(tri.size, dtype=jnp.int32),
      vertex_tint=jnp.ones((n + j, 3), jnp.float32))


def landmark_weights(names) -> np.ndarray:
  """Per-landmark weight [L]: the jaw contour CONTOUR_WEIGHT, the rest 1."""
  return np.array([CONTOUR_WEIGHT if n.startswith("contour") else 1.0 for n in names],
                  np.float32)


def project_landmarks(model, shape, expression, head_pose, fov, height: int, width: int):
  """shape [..., 64], expression [..., 64], head_pose [..., 9], fov [...] -> pixels [..., L, 2]."""
  verts = head_lib.forward(model, shape, expression, head_pose)
  pix, _ = geometry.project(head_lib.landmarks(model, verts), fov, height, width)
  return pix


def _fov(raw):
  return FOV_MIN + (FOV_MAX - FOV_MIN) * jax.nn.sigmoid(raw)


def _fov_raw(fov):
  p = (fov - FOV_MIN) / (FOV_MAX - FOV_MIN)
  return jnp.log(p) - jnp.log1p(-p)


def _head_pose(v, height, width):
  """Variables of one clip -> (head_pose [T, 9], fov [])."""
  fov = _fov(v["fov_raw"])
  f = geometry.focal_from_fov(fov, height, width)
  z = f / (jnp.exp(v["log_scale"]) * max(height, width))
  x = (v["centre"][:, 0] - 0.5) * width * z / f
  y = (v["centre"][:, 1] - 0.5) * height * z / f
  r6 = geometry.axis_angle_to_rot6d(v["rotation"])
  return jnp.concatenate([r6, jnp.stack([x, y, z], -1)], -1), fov


def _pseudo_huber(r2, delta):
  return 2.0 * delta**2 * (jnp.sqrt(1.0 + r2 / delta**2) - 1.0)


def _energy(v, model, obs, conf, fov_init, cfg: FitConfig, height, width):
  """Objective of one clip (module doc); obs [T, L, 2] pixels, conf [T, L]."""
  pose, fov = _head_pose(v, height, width)
  pix = project_landmarks(model, v["shape"], v["expression"], pose, fov, height, width)
  k = CANONICAL / max(height, width)
  r2 = jnp.sum(((pix - obs) * k) ** 2, -1)
  rep = jnp.sum(jnp.mean(conf * _pseudo_huber(r2, cfg.robust_delta), -1))
  # Pose changes in canonical pixels of image motion (position, and rotation and scale times the
  # head's radius in pixels), so that all temporal terms are comparably conditioned.
  radius = jax.lax.stop_gradient(jnp.exp(v["log_scale"]) * CANONICAL * HEAD_RADIUS_M)[:, None]
  q = jnp.concatenate([v["expression"], v["centre"] * CANONICAL, v["rotation"] * radius,
                       v["log_scale"][:, None] * radius], -1)
  temporal = jnp.sum((q[1:] - q[:-1]) ** 2)
  prior = jnp.sum(v["shape"] ** 2) + jnp.sum(v["expression"] ** 2)
  fov_term = ((fov - fov_init) / 10.0) ** 2
  return (cfg.reprojection_weight * rep + cfg.temporal_weight * temporal
          + cfg.prior_weight * prior + cfg.fov_prior * fov_term)


def _lbfgs(fn, params, steps, memory_size):
  """`steps` optax.lbfgs steps from `params` on the scalar function `fn`."""
  opt = optax.lbfgs(memory_size=memory_size)
  value_and_grad = optax.value_and_grad_from_state(fn)

  def body(_, carry):
    p, state = carry
    value, grad = value_and_grad(p, state=state)
    updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=fn)
    return optax.apply_updates(p, updates), state

  params, _ = jax.lax.fori_loop(0, steps, body, (params, opt.init(params)))
  return params


def _initial(model, obs, conf, fov_init, height, width):
  """Variables of one clip from its landmarks: the head where they are, as large as they are."""
  t_count = obs.shape[0]
  w = conf[..., None]
  frame_ok = jnp.sum(conf, -1) > 0
  norm = obs / jnp.array([width, height], jnp.float32)
  centre = jnp.sum(norm * w, 1) / jnp.maximum(jnp.sum(w, 1), 1e-6)
  # Frames without a face take the clip's mean position.
  mean_c = jnp.sum(centre * frame_ok[:, None], 0) / jnp.maximum(jnp.sum(frame_ok), 1)
  centre = jnp.where(frame_ok[:, None], centre, mean_c)
  tmpl = head_lib.landmarks(model, model.template[None])[0]
  tmpl_spread = jnp.sqrt(jnp.mean(jnp.sum((tmpl[:, :2] - tmpl[:, :2].mean(0)) ** 2, -1)))
  d = max(height, width)
  px = obs / d
  mu = jnp.sum(px * w, 1, keepdims=True) / jnp.maximum(jnp.sum(w, 1, keepdims=True), 1e-6)
  spread = jnp.sqrt(jnp.sum(jnp.sum((px - mu) ** 2, -1) * conf, 1)
                    / jnp.maximum(jnp.sum(conf, 1), 1e-6))
  mean_s = jnp.sum(spread * frame_ok) / jnp.maximum(jnp.sum(frame_ok), 1)
  spread = jnp.where(frame_ok, spread, mean_s)
  # The model origin sits behind the landmarks (they lie ~9 cm in front of it), so the landmark
  # centroid is close to, not at, the origin's image position; the rigid stage corrects it.
  return {"shape": jnp.zeros((contracts.NUM_SHAPE,)),
          "expression": jnp.zeros((t_count, contracts.NUM_EXPRESSION)),
          "rotation": jnp.zeros((t_count, 3)), "centre": centre,
          "log_scale": jnp.log(jnp.maximum(spread, 1e-4) / tmpl_spread),
          "fov_raw": _fov_raw(jnp.float32(fov_init))}


RIGID = ("rotation", "centre", "log_scale")


def _masked(v, v0, free):
  return {k: jnp.where(free[k], v[k], v0[k]) for k in v}


def _solve_clip(model, v0, free, obs, conf, steps, cfg: FitConfig, height, width):
  """`steps` L-BFGS steps on one clip's variables; those with free[k] False stay at v0[k]."""
  fov_init = jnp.float32(cfg.fov_init)
  fn = lambda v: _energy(_masked(v, v0, free), model, obs, conf, fov_init, cfg, height, width)
  return _masked(_lbfgs(fn, v0, steps, cfg.memory_size), v0, free)


# One compiled solve serves both stages (the stage is data: which variables are free, how many
# steps), so a fit compiles once.
@functools.partial(jax.jit, static_argnames=("cfg", "height", "width"))
def _solve_batch(model, v0, free, obs, conf, steps, cfg, height, width):
  return jax.vmap(lambda v, o, c: _solve_clip(model, v, free, o, c, steps, cfg, height, width))(
      v0, obs, conf)


@functools.partial(jax.jit, static_argnames=("cfg", "height", "width"))
def _initial_batch(model, obs, conf, cfg, height, width):
  return jax.vmap(lambda o, c: _initial(model, o, c, jnp.float32(cfg.fov_init), height, width))(
      obs, conf)


@functools.partial(jax.jit, static_argnames=("cfg", "height", "width"))
def _results_batch(model, v, obs, conf, cfg, height, width):
  def one(v, obs, conf):
    pose, fov = _head_pose(v, height, width)
    pix = project_landmarks(model, v["shape"], v["expression"], pose, fov, height, width)
    err = jnp.linalg.norm(pix - obs, axis=-1)
    # Weighted as in the fit, so a turned head's down-weighted contour counts as little here.
    seen = conf
    frame_err = jnp.sum(err * seen, -1) / jnp.maximum(jnp.sum(seen, -1), 1e-6)
    energy = _energy(v, model, obs, conf, jnp.float32(cfg.fov_init), cfg, height, width)
    return {"shape": v["shape"], "fov": fov, "expression": v["expression"], "head_pose": pose,
            "landmarks": pix, "frame_error_px": frame_err,
            "error_px": jnp.sum(err * seen) / jnp.maximum(jnp.sum(seen), 1e-6), "energy": energy}
  return jax.vmap(one)(v, obs, conf)


@jax.jit
def _turned_contour(conf, rotation, is_contour):
  """conf [B, T, L] with the jaw contour's weight times cos²(angle between the face's direction
  and the camera axis), from the rigid fit's rotation [B, T, 3]."""
  facing = jnp.clip(geometry.axis_angle_to_matrix(rotation)[..., 2, 2], 0.0, 1.0) ** 2
  return conf * jnp.where(is_contour, facing[..., None], 1.0)


def fit(model: head_lib.HeadModel, landmarks, confidence, height: int, width: int,
        config: FitConfig | None = None) -> dict:
  """Landmarks [B, T, L, 2] (pixels of H x W frames) and confidence [B, T, L] -> per clip
  shape [B, 64], fov [B], expression [B, T, 64], head_pose [B, T, 9], the fitted landmarks
  [B, T, L, 2], the reprojection error in pixels, weighted as the fit weighs the landmarks
  (frame_error_px [B, T], error_px [B]), and the final energy [B], as numpy arrays.

  `model` is the full head model (reduced here with landmark_model); the landmark order is the
  model's. One photo is B = T = 1.
  """
  cfg = config or FitConfig()
  obs = jnp.asarray(landmarks, jnp.float32)
  conf = jnp.asarray(confidence, jnp.float32)
  if obs.ndim != 4 or obs.shape[-1] != 2 or conf.shape != obs.shape[:-1]:
    raise ValueError(f"landmarks {tuple(obs.shape)} and confidence {tuple(conf.shape)} do not "
                     "match; expected [B, T, L, 2] and [B, T, L].")
  small = landmark_model(model)
  if obs.shape[2] != small.landmark_tri.shape[0]:
    raise ValueError(f"{obs.shape[2]} landmarks were given; the head model has "
                     f"{small.landmark_tri.shape[0]}, expected the same in its order.")
  conf = conf * jnp.asarray(landmark_weights(model.landmark_names) if model.landmark_names
                            else np.ones(obs.shape[2], np.float32))
  h, w = int(height), int(width)
  v = _initial_batch(small, obs, conf, cfg, h, w)
  rigid = {k: jnp.asarray(k in RIGID) for k in v}
  everything = {k: jnp.asarray(True) for k in v}
  v = _solve_batch(small, v, rigid, obs, conf, jnp.int32(cfg.rigid_steps), cfg, h, w)
  conf = _turned_contour(conf, v["rotation"], jnp.asarray(
      [n.startswith("contour") for n in model.landmark_names] or [False] * obs.shape[2]))
  v = _solve_batch(small, v, everything, obs, conf, jnp.int32(cfg.steps), cfg, h, w)
  return {k: np.asarray(x) for k, x in _results_batch(small, v, obs, conf, cfg, h, w).items()}
