"""The head model: one pytree of arrays loaded from one .npz asset, posed by linear blend skinning.

Model frame (metres), chosen so that the identity head pose looks straight into the OpenCV camera:
x towards the subject's left (image right in a frontal view), y down, z away from the camera (the
face looks towards -z). Translation is in the camera frame, so a head 0.6 m in front of the camera
has head_pose = (1, 0, 0, 0, 1, 0, 0, 0, 0.6). "Left" in every name is the subject's own left.

Parameters (per frame):
- shape beta [64]: identity; ~N(0, 1) gives plausible heads in the procedural asset.
- expression theta_e [64]: the first components drive joints, the rest are linear blendshapes.
  Procedural asset: 0 jaw_open, 1 jaw_sideways, 2 gaze_horizontal (+ looks to the subject's left),
  3 gaze_vertical (+ looks down), 4 blink_left, 5 blink_right (1 closes the eye, -0.5 opens it wide)
  are joint-driven (`expression_pose` maps them to joint axis-angles); 6..63 are blendshapes named
  in `expression_names` (smile_left, smile_right, pucker, brow_raise_left, ..., then aux_*).
- head_pose [9]: 6-D rotation (first two columns of R) | translation (3). The rotation acts about
  the root joint: v = R (v_rest - j_root) + j_root + t.

forward(model, shape, expression, head_pose) -> vertices [..., V, 3] in the camera frame.

Assets: `save_asset` / `load_asset` (.npz; every field is listed in ASSET_FIELDS). The default
asset is procedural (`build_procedural_asset`): generated deterministically, cached on first use
under $XDG_CACHE_HOME/vlogger_jax (or ~/.cache/vlogger_jax) keyed by PROCEDURAL_VERSION, written to
a temporary name and renamed. `convert_flame` turns a user-supplied FLAME pickle into the same
format; it never imports chumpy and unpickles only an allowlist of classes, but unpickling a file
can still run code, so only convert files you trust.
"""

import os
import pickle
import zipfile
from typing import Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from vlogger_jax import fileio
from vlogger_jax import geometry
# The head model's layout (classes, joints, expression and shape names, asset fields) is defined
# once in contracts.py; it is re-exported here so that callers write head.CLASS["nose"] etc.
from vlogger_jax.contracts import (  # pylint: disable=unused-import
    ASSET_FIELDS, BLENDSHAPE_EXPRESSIONS, CLASS, CLASS_NAMES, EXPRESSION, EXPRESSION_NAMES,
    HEAD_POSE_DIM, JOINT_EXPRESSIONS, JOINT_NAMES, JOINT_PARENTS, NUM_CLASSES, NUM_EXPRESSION,
    NUM_SHAPE, SHAPE_NAMED, SHAPE_NAMES)

PROCEDURAL_VERSION = 2


@flax.struct.dataclass
class HeadModel:
  """A rigged head: arrays are pytree leaves (so it passes into jit), names and hierarchy are static."""
  template: jax.Array  # [V, 3] float32, neutral mean shape in the model frame.
  faces: jax.Array  # [T, 3] int32, counter-clockwise seen from outside (normals point out).
  shape_basis: jax.Array  # [V, 3, 64] float32, metres per unit of beta.
  expression_basis: jax.Array  # [V, 3, 64] float32, linear blendshapes (0 for joint components).
  expression_pose: jax.Array  # [64, J, 3] float32, joint axis-angle (radians) per unit of theta_e.
  joint_regressor: jax.Array  # [J, V] float32, rows sum to 1.
  skin_weights: jax.Array  # [V, J] float32, rows sum to 1.
  tri_labels: jax.Array  # [T] int32 indices into CLASS_NAMES.
  landmark_tri: jax.Array  # [L] int32 triangle per landmark.
  landmark_bary: jax.Array  # [L, 3] float32 barycentrics per landmark.
  vertex_tint: jax.Array  # [V, 3] float32 albedo multiplier (lip redness, pupils, blush).
  parents: tuple = flax.struct.field(pytree_node=False, default=JOINT_PARENTS)
  joint_names: tuple = flax.struct.field(pytree_node=False, default=JOINT_NAMES)
  expression_names: tuple = flax.struct.field(pytree_node=False, default=EXPRESSION_NAMES)
  shape_names: tuple = flax.struct.field(pytree_node=False, default=SHAPE_NAMES)
  landmark_names: tuple = flax.struct.field(pytree_node=False, default=())
  source: str = flax.struct.field(pytree_node=False, default="")

  @property
  def num_vertices(self):
    return self.template.shape[0]

  @property
  def num_faces(self):
    return self.faces.shape[0]


def identity_head_pose(distance=0.6, batch_shape=()):
  """Frontal head pose [..., 9]: identity rotation, `distance` metres in front of the camera."""
  pose = np.array([1, 0, 0, 0, 1, 0, 0, 0, distance], np.float32)
  return jnp.broadcast_to(jnp.asarray(pose), tuple(batch_shape) + (9,))


def shaped_joints(model: HeadModel, shape):
  """Shape [..., 64] -> (shaped rest vertices [..., V, 3], rest joints [..., J, 3])."""
  shape = jnp.asarray(shape, jnp.float32)
  v = model.template + jnp.einsum("vdk,...k->...vd", model.shape_basis, shape)
  joints = jnp.einsum("jv,...vd->...jd", model.joint_regressor, v)
  return v, joints


def forward(model: HeadModel, shape, expression, head_pose, return_joints=False):
  """shape [..., 64], expression [..., 64], head_pose [..., 9] -> camera-frame vertices [..., V, 3].

  Leading dimensions broadcast (e.g. one shape [64] for all frames [F, 64]).
  """
  shape = jnp.asarray(shape, jnp.float32)
  expression = jnp.asarray(expression, jnp.float32)
  head_pose = jnp.asarray(head_pose, jnp.float32)
  batch = jnp.broadcast_shapes(shape.shape[:-1], expression.shape[:-1], head_pose.shape[:-1])
  v_shaped, joints = shaped_joints(model, shape)
  v = v_shaped + jnp.einsum("vdk,...k->...vd", model.expression_basis, expression)
  v = jnp.broadcast_to(v, batch + v.shape[-2:])
  joints = jnp.broadcast_to(joints, batch + joints.shape[-2:])
  local_aa = jnp.einsum("kjd,...k->...jd", model.expression_pose, expression)
  local_rot = geometry.axis_angle_to_matrix(jnp.broadcast_to(local_aa, batch + local_aa.shape[-2:]))
  root_rot = geometry.rot6d_to_matrix(head_pose[..., :6])
  local_rot = local_rot.at[..., 0, :, :].set(
      jnp.broadcast_to(root_rot, batch + (3, 3)) @ local_rot[..., 0, :, :])
  posed = geometry.linear_blend_skinning(v, joints, local_rot, model.skin_weights, model.parents)
  posed = posed + head_pose[..., None, 6:9]
  if return_joints:
    world_rot, world_pos = geometry.forward_kinematics(local_rot, joints, model.parents)
    return posed, world_pos + head_pose[..., None, 6:9]
  return posed


def landmarks(model: HeadModel, vertices):
  """Posed vertices [..., V, 3] -> landmark positions [..., L, 3] from the landmark embedding."""
  corners = vertices[..., model.faces[model.landmark_tri], :]  # [..., L, 3, 3]
  return jnp.einsum("...lkd,lk->...ld", corners, model.landmark_bary)


def vertex_normals(vertices, faces):
  """Vertices [..., V, 3], faces [T, 3] -> unit area-weighted vertex normals [..., V, 3]."""
  tri = vertices[..., faces, :]
  fn = jnp.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :])
  n = jnp.zeros_like(vertices)
  for k in range(3):
    n = n.at[..., faces[:, k], :].add(fn)
  return n / jnp.maximum(jnp.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


# ----------------------------------------------------------------------------------------------
# Asset I/O.


def asset_dict(model: HeadModel):
  """HeadModel -> dict of numpy arrays in the asset format."""
  out = {k: np.asarray(getattr(model, k)) for k in ASSET_FIELDS
         if ASSET_FIELDS[k][0] != "U"}
  out["parents"] = np.asarray(model.parents, np.int32)
  for k in ("joint_names", "expression_names", "shape_names", "landmark_names"):
    out[k] = np.asarray(getattr(model, k), dtype=str)
  out["class_names"] = np.asarray(CLASS_NAMES, dtype=str)
  out["source"] = np.asarray(model.source, dtype=str)
  return out


def save_asset(model_or_dict, path):
  """Writes a HeadModel (or asset dict) to `path` as .npz, atomically (temporary name, then rename)."""
  arrays = model_or_dict if isinstance(model_or_dict, dict) else asset_dict(model_or_dict)
  fileio.save_npz(path, **arrays)


def load_asset(path) -> HeadModel:
  """Reads a .npz head asset into a HeadModel; raises ValueError naming the file and the problem."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"head asset {path} does not exist; expected a .npz written by "
                            "vlogger_jax.head.save_asset or launch/convert_flame.py.")
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {k: data[k] for k in data.files}
  except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
    raise ValueError(f"head asset {path} is not a readable .npz archive ({e}); expected a complete "
                     "file written by vlogger_jax.head.save_asset.") from None
  for name, (kind, rank) in ASSET_FIELDS.items():
    if name not in arrays:
      raise ValueError(f"head asset {path} is missing field '{name}'; expected all of "
                       f"{sorted(ASSET_FIELDS)}.")
    a = arrays[name]
    if a.ndim != rank or (kind != "U" and a.dtype.kind not in ("f", "i", "u")):
      raise ValueError(f"head asset {path} has field '{name}' with shape {a.shape} and dtype "
                       f"{a.dtype}; expected a rank-{rank} {'string' if kind == 'U' else 'numeric'}"
                       " array.")
  return model_from_dict(arrays, name=path)


def model_from_dict(arrays, name="<dict>") -> HeadModel:
  """Asset dict -> HeadModel, checking that the sizes agree."""
  v = arrays["template"].shape[0]
  t = arrays["faces"].shape[0]
  j = arrays["parents"].shape[0]
  checks = {
      "template": (v, 3), "faces": (t, 3), "shape_basis": (v, 3, NUM_SHAPE),
      "expression_basis": (v, 3, NUM_EXPRESSION), "expression_pose": (NUM_EXPRESSION, j, 3),
      "joint_regressor": (j, v), "skin_weights": (v, j), "tri_labels": (t,),
      "vertex_tint": (v, 3),
  }
  for field, expected in checks.items():
    if tuple(arrays[field].shape) != expected:
      raise ValueError(f"head asset {name} has field '{field}' of shape "
                       f"{tuple(arrays[field].shape)}; expected {expected}.")
  faces = np.asarray(arrays["faces"])
  if faces.size and (faces.min() < 0 or faces.max() >= v):
    raise ValueError(f"head asset {name} has field 'faces' with vertex indices outside [0, {v}).")
  return HeadModel(
      template=jnp.asarray(arrays["template"], jnp.float32),
      faces=jnp.asarray(faces, jnp.int32),
      shape_basis=jnp.asarray(arrays["shape_basis"], jnp.float32),
      expression_basis=jnp.asarray(arrays["expression_basis"], jnp.float32),
      expression_pose=jnp.asarray(arrays["expression_pose"], jnp.float32),
      joint_regressor=jnp.asarray(arrays["joint_regressor"], jnp.float32),
      skin_weights=jnp.asarray(arrays["skin_weights"], jnp.float32),
      tri_labels=jnp.asarray(arrays["tri_labels"], jnp.int32),
      landmark_tri=jnp.asarray(arrays["landmark_tri"], jnp.int32),
      landmark_bary=jnp.asarray(arrays["landmark_bary"], jnp.float32),
      vertex_tint=jnp.asarray(arrays["vertex_tint"], jnp.float32),
      parents=tuple(int(p) for p in np.asarray(arrays["parents"])),
      joint_names=tuple(str(s) for s in np.asarray(arrays["joint_names"])),
      expression_names=tuple(str(s) for s in np.asarray(arrays["expression_names"])),
      shape_names=tuple(str(s) for s in np.asarray(arrays["shape_names"])),
      landmark_names=tuple(str(s) for s in np.asarray(arrays["landmark_names"])),
      source=str(np.asarray(arrays["source"])),
  )


def cache_dir():
  """The directory for generated assets: $XDG_CACHE_HOME/vlogger_jax or ~/.cache/vlogger_jax."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "vlogger_jax")


_DEFAULT = {}


def load_default(path: Optional[str] = None) -> HeadModel:
  """The procedural head model, generated once into the cache and loaded from there afterwards."""
  path = path or os.path.join(cache_dir(), f"head_procedural_v{PROCEDURAL_VERSION}.npz")
  if path not in _DEFAULT:
    if not os.path.exists(path):
      save_asset(build_procedural_asset(), path)
    _DEFAULT[path] = load_asset(path)
  return _DEFAULT[path]


# ----------------------------------------------------------------------------------------------
# The procedural head. Everything below is numpy, run once to write the asset.

_NUM_COLS = 64
_Y_MOUTH = 0.052
_EYE_X, _EYE_Y = 0.032, -0.018
_EYE_R = 0.012
_LID_R_UPPER, _LID_R_LOWER = 0.0133, 0.01315
_IRIS_ANGLE, _PUPIL_ANGLE = 0.48, 0.2
_BLINK_UPPER, _BLINK_LOWER = 0.34, 0.24  # radians that close the lids at blink = 1.
_JAW_OPEN, _JAW_SIDE = 0.32, 0.12
_GAZE = 0.4
_SOCKET_WIDE, _SOCKET_PIT = 0.003, 0.012

# Head profile: (y, half-width a, front depth F, back depth B) from the crown to the neck cut.
_PROFILE = np.array([
    (-0.136, 0.000, 0.000, 0.000), (-0.1345, 0.022, 0.024, 0.026), (-0.129, 0.042, 0.046, 0.052),
    (-0.117, 0.059, 0.066, 0.075), (-0.100, 0.069, 0.080, 0.090), (-0.075, 0.074, 0.088, 0.099),
    (-0.050, 0.076, 0.091, 0.101), (-0.025, 0.075, 0.092, 0.098), (0.000, 0.073, 0.093, 0.091),
    (0.025, 0.069, 0.094, 0.080), (0.050, 0.062, 0.092, 0.068), (0.072, 0.054, 0.089, 0.060),
    (0.088, 0.045, 0.084, 0.058), (0.100, 0.038, 0.074, 0.058), (0.110, 0.045, 0.058, 0.060),
    (0.122, 0.050, 0.047, 0.062), (0.160, 0.053, 0.047, 0.066), (0.215, 0.058, 0.052, 0.072),
], np.float64)


def _smoothstep(e0, e1, x):
  t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
  return t * t * (3 - 2 * t)


def _gauss(x, y, cx, cy, sx, sy):
  return np.exp(-0.5 * (((x - cx) / sx)**2 + ((y - cy) / sy)**2))


def _pchip(xs, ys):
  from scipy.interpolate import PchipInterpolator  # pylint: disable=g-import-not-at-top
  return PchipInterpolator(xs, ys)


def _profile_interp():
  p = _PROFILE
  seg = np.sqrt(np.diff(p[:, 0])**2 + np.diff(p[:, 2])**2 + 0.3 * np.diff(p[:, 1])**2)
  arc = np.concatenate([[0], np.cumsum(seg)])
  funcs = [_pchip(arc, p[:, k]) for k in range(4)]
  return arc, funcs


def _row_params(arc, funcs):
  """Arc-length samples: dense on the face (about 2.2 mm), coarser on the crown and the neck."""
  fine = np.linspace(0, arc[-1], 4000)
  y = funcs[0](fine)
  density = 1.0 / np.where((y > -0.06) & (y < 0.112), 0.0029, 0.0075)
  cum = np.concatenate([[0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(fine))])
  n = int(round(cum[-1]))
  s = np.interp(np.linspace(0, cum[-1], n + 1), cum, fine)
  # Snap the row nearest the mouth line to it exactly, so the lip slit is one straight row.
  ys = funcs[0](s)
  i = int(np.argmin(np.abs(ys - _Y_MOUTH)))
  lo, hi = s[i - 1], s[i + 1]
  for _ in range(60):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if funcs[0](mid) < _Y_MOUTH else (lo, mid)
  s[i] = 0.5 * (lo + hi)
  return s[1:], i - 1  # Row 0 (the crown) becomes a single pole vertex.


def _azimuths():
  u = -1.0 + 2.0 * np.arange(_NUM_COLS) / _NUM_COLS
  c = 1.2
  return np.pi * (u + c * u**3) / (1 + c)


def _base_surface(y, a, f, b, phi):
  """Cross-sections: superellipses, flatter in front; returns x, z for rows x cols."""
  s, c = np.sin(phi), np.cos(phi)
  n_front, n_back = 2.5, 2.1
  front = c >= 0
  e = np.where(front, 2.0 / n_front, 2.0 / n_back)
  x = a[:, None] * np.sign(s) * np.abs(s)**e
  depth = np.where(front, -f[:, None], b[:, None])
  z = depth * np.abs(c)**e
  return x, np.broadcast_to(y[:, None], x.shape).copy(), z


def _face_relief(x, y):
  """Displacement towards the camera (metres) of the facial features at frontal (x, y)."""
  ax = np.abs(x)
  d = np.zeros_like(x)
  d += 0.006 * _gauss(ax, y, 0.028, -0.038, 0.022, 0.008)  # brow ridge
  # Eye sockets: a shallow wide hollow plus an almond-shaped pit that the lids and eyeball fill.
  d -= _SOCKET_WIDE * _gauss(ax, y, _EYE_X, _EYE_Y, 0.02, 0.013)
  r_eye = np.sqrt(((ax - _EYE_X) / 0.0175)**2 + ((y - _EYE_Y) / 0.0085)**2)
  d -= _SOCKET_PIT * _smoothstep(1.3, 0.75, r_eye)
  d += 0.007 * _gauss(ax, y, 0.044, 0.008, 0.015, 0.013)  # cheekbones
  d -= 0.004 * _gauss(ax, y, 0.066, -0.036, 0.010, 0.016)  # temples
  # Nose: a ridge whose height and width grow to the tip, then a fast drop to the upper lip.
  t = np.clip((y + 0.028) / 0.050, 0.0, 1.0)
  ridge_h = 0.003 + 0.017 * t**1.6
  drop = _smoothstep(0.020, 0.038, y)
  ridge_w = 0.004 + 0.0042 * t**2
  on_nose = (y > -0.034)
  d += np.where(on_nose, ridge_h * (1 - drop) * np.exp(-0.5 * (x / ridge_w)**2)
                * _smoothstep(-0.034, -0.026, y), 0.0)
  d += 0.006 * _gauss(ax, y, 0.0145, 0.027, 0.006, 0.0055)  # alae
  d += 0.006 * _gauss(x, y, 0.0, 0.022, 0.006, 0.0065)  # tip
  d -= 0.002 * _gauss(ax, y, 0.012, 0.034, 0.004, 0.003)  # nostril crease
  # Lips: full, with a groove along the mouth line and a philtrum.
  lip_w = _smoothstep(0.029, 0.019, ax)
  d += 0.0055 * lip_w * _gauss(0, y, 0, _Y_MOUTH - 0.0055, 1, 0.0045)
  d += 0.0065 * lip_w * _gauss(0, y, 0, _Y_MOUTH + 0.0065, 1, 0.0055)
  d -= 0.002 * _gauss(x, y, 0.0, _Y_MOUTH, 0.02, 0.0012)
  d += 0.0015 * _gauss(ax, y, 0.004, 0.040, 0.002, 0.005)  # philtrum columns
  d -= 0.003 * _gauss(x, y, 0.0, 0.071, 0.018, 0.005)  # mentolabial fold
  d += 0.007 * _gauss(x, y, 0.0, 0.086, 0.017, 0.010)  # chin
  d += 0.002 * _gauss(ax, y, 0.030, 0.040, 0.010, 0.015)  # cheeks beside the mouth
  return d


def _upper_lip_top(x):
  ax = np.abs(x)
  bow = 0.0012 * np.exp(-0.5 * ((ax - 0.0045) / 0.003)**2) - 0.0008 * np.exp(-0.5 * (x / 0.002)**2)
  return _Y_MOUTH - 0.0085 - bow + 0.007 * (ax / 0.026)**2


def _lower_lip_bottom(x):
  return _Y_MOUTH + 0.0115 - 0.0095 * (np.abs(x) / 0.026)**2


def _brow_center(x):
  ax = np.abs(x)
  return -0.041 - 0.0055 * (1 - ((ax - 0.036) / 0.024)**2)


def _hairline(phi):
  """y of the hairline as a function of azimuth (front, temples, above the ears, nape)."""
  ap = np.abs(phi)
  return np.interp(ap, [0.0, 0.45, 0.8, 1.15, 1.45, 1.75, 2.2, np.pi],
                   [-0.088, -0.084, -0.072, -0.050, -0.045, -0.030, 0.040, 0.055])


class _Mesh:
  """Accumulates vertex groups and faces with their labels while the head is built."""

  def __init__(self):
    self.v, self.f, self.lab, self.group = [], [], [], []
    self.count = 0

  def add_vertices(self, pts, group):
    start = self.count
    self.v.append(np.asarray(pts, np.float64).reshape(-1, 3))
    self.group.append(np.full(len(self.v[-1]), group, np.int32))
    self.count += len(self.v[-1])
    return start + np.arange(len(self.v[-1]))

  def add_faces(self, faces, labels):
    faces = np.asarray(faces, np.int64).reshape(-1, 3)
    self.f.append(faces)
    self.lab.append(np.broadcast_to(np.asarray(labels, np.int32), (len(faces),)).copy())

  def arrays(self):
    return (np.concatenate(self.v), np.concatenate(self.f), np.concatenate(self.lab),
            np.concatenate(self.group))


def _grid_faces(idx, wrap_cols=False, flip=False):
  """idx [R, C] vertex ids -> two triangles per quad, ordered so normals point to +row x +col."""
  r, c = idx.shape
  cols = c if wrap_cols else c - 1
  faces = []
  for i in range(r - 1):
    for j in range(cols):
      a, b = idx[i, j], idx[i, (j + 1) % c]
      cc, d = idx[i + 1, j], idx[i + 1, (j + 1) % c]
      t1, t2 = (a, cc, b), (b, cc, d)
      if flip:
        t1, t2 = (a, b, cc), (b, d, cc)
      faces += [t1, t2]
  return np.array(faces, np.int64)


# Vertex groups used for skinning, shape fields and rigid parts.
_G_SKIN, _G_EYE_L, _G_EYE_R, _G_ULID_L, _G_LLID_L, _G_ULID_R, _G_LLID_R = range(7)
_G_EAR, _G_MOUTH, _G_TEETH_UP, _G_TEETH_LOW, _G_LOWER_SLIT = range(7, 12)


def _eye_dir(h, v):
  """Eye-local direction for horizontal angle h (+ towards +x) and vertical v (+ down)."""
  return np.stack([np.sin(h) * np.cos(v), np.sin(v), -np.cos(h) * np.cos(v)], -1)


def _build_geometry():
  """Builds vertices, faces, labels, groups and bookkeeping of the procedural head."""
  mesh = _Mesh()
  arc, funcs = _profile_interp()
  s_rows, mouth_row = _row_params(arc, funcs)
  y, a, fdep, bdep = [fn(s_rows) for fn in funcs]
  phi = _azimuths()
  x, yy, z = _base_surface(y, a, fdep, bdep, phi)
  front = np.clip(np.cos(phi), 0, 1)[None, :]**1.5
  # Facial relief pushes frontal points towards the camera; it is defined on frontal (x, y).
  relief = _face_relief(x, yy) * front * (1 - _smoothstep(0.10, 0.115, yy))
  z = z - relief
  # Hair volume: push the scalp outwards by a few millimetres beyond a soft hairline.
  hair_y = _hairline(phi)[None, :]
  hair_w = _smoothstep(hair_y + 0.006, hair_y - 0.008, yy)
  centre = np.array([0.0, -0.03, 0.005])
  radial = np.stack([x - centre[0], yy - centre[1], z - centre[2]], -1)
  radial /= np.linalg.norm(radial, axis=-1, keepdims=True)
  pts = np.stack([x, yy, z], -1) + 0.0065 * hair_w[..., None] * radial
  # Eye centres sit so that the cornea is level with the skin as it was before the socket was
  # carved (the socket term of the relief is 0.011 deep at the eye centre).
  eye_centres = {}
  for side, sx in (("left", 1.0), ("right", -1.0)):
    d2 = (x - _EYE_X * sx)**2 + (yy - _EYE_Y)**2 + 1.0 * (z > 0)
    r, c = np.unravel_index(np.argmin(d2), d2.shape)
    skin_z = pts[r, c, 2] - (_SOCKET_WIDE + _SOCKET_PIT) * front[0, c]
    eye_centres[side] = np.array([_EYE_X * sx, _EYE_Y, skin_z + 0.002 + _EYE_R])
  num_rows = len(s_rows)
  skin_ids = mesh.add_vertices(pts, _G_SKIN).reshape(num_rows, _NUM_COLS)
  pole = mesh.add_vertices([[0.0, funcs[0](0.0) - 0.0065, 0.0]], _G_SKIN)[0]
  # Lip slit: duplicate the mouth-row vertices between the corners for the lower lip.
  xm = x[mouth_row]
  inner = np.where((np.abs(xm) < 0.0255) & (np.cos(phi) > 0))[0]
  lower_ids = mesh.add_vertices(pts[mouth_row, inner], _G_LOWER_SLIT)
  grid_faces = _grid_faces(skin_ids, wrap_cols=True)
  # Quads directly below the mouth row use the lower copies.
  remap = dict(zip(skin_ids[mouth_row, inner].tolist(), lower_ids.tolist()))
  q_per_row = 2 * _NUM_COLS
  below = slice(mouth_row * q_per_row, (mouth_row + 1) * q_per_row)
  sub = grid_faces[below]
  grid_faces[below] = np.vectorize(lambda k: remap.get(k, k))(sub)
  fan = np.array([[pole, skin_ids[0, (j + 1) % _NUM_COLS], skin_ids[0, j]]
                  for j in range(_NUM_COLS)])
  all_faces = np.concatenate([fan, grid_faces])
  mesh.add_faces(all_faces, CLASS["skin"])

  # Eyeballs: poles facing forward so the iris and pupil are clean caps.
  polar = np.concatenate([np.linspace(0, _PUPIL_ANGLE, 3), np.linspace(_PUPIL_ANGLE, _IRIS_ANGLE,
                                                                        4)[1:],
                          np.linspace(_IRIS_ANGLE, 1.75, 8)[1:]])
  az = np.linspace(0, 2 * np.pi, 24, endpoint=False)
  lid_info = {}
  for side, sign, g_eye, g_up, g_low in (("left", 1, _G_EYE_L, _G_ULID_L, _G_LLID_L),
                                         ("right", -1, _G_EYE_R, _G_ULID_R, _G_LLID_R)):
    c = eye_centres[side]
    dirs = np.stack([np.sin(polar)[:, None] * np.cos(az)[None], np.sin(polar)[:, None]
                     * np.sin(az)[None], -np.cos(polar)[:, None] * np.ones_like(az)[None]], -1)
    ring_pts = c + _EYE_R * dirs[1:]
    tip = mesh.add_vertices([c + _EYE_R * np.array([0, 0, -1.0])], g_eye)[0]
    ring_ids = mesh.add_vertices(ring_pts, g_eye).reshape(len(polar) - 1, len(az))
    fan = np.array([[tip, ring_ids[0, j], ring_ids[0, (j + 1) % len(az)]] for j in range(len(az))])
    ring_faces = _grid_faces(ring_ids, wrap_cols=True, flip=True)
    eye_lab = CLASS[f"{side}_eye"]
    iris_lab = CLASS[f"{side}_iris"]
    ring_row = np.repeat(np.arange(len(polar) - 2), 2 * len(az))
    labels = np.where(polar[1:][ring_row] <= _IRIS_ANGLE + 1e-6, iris_lab, eye_lab)
    mesh.add_faces(fan, iris_lab)
    mesh.add_faces(ring_faces, labels)
    # Eyelids: spherical shells about the eye centre; their edges draw the almond opening.
    hs = np.linspace(-1.25, 1.25, 27)
    h0 = 0.78
    shape = np.clip(1 - ((hs * sign - 0.05) / h0)**2, 0, 1)**0.75  # outer corner slightly higher
    v_up_edge = -0.31 * shape - 0.03 * (hs * sign) / h0
    v_low_edge = 0.25 * shape - 0.03 * (hs * sign) / h0
    t = np.linspace(0, 1, 9)[:, None]
    v_up = -1.45 + (v_up_edge[None] + 1.45) * t  # rows from the top down to the edge
    v_low = v_low_edge[None] + (1.25 - v_low_edge[None]) * t  # rows from the edge down
    up_pts = c + _LID_R_UPPER * _eye_dir(hs[None], v_up)
    low_pts = c + _LID_R_LOWER * _eye_dir(hs[None], v_low)
    up_ids = mesh.add_vertices(up_pts, g_up).reshape(up_pts.shape[:2])
    low_ids = mesh.add_vertices(low_pts, g_low).reshape(low_pts.shape[:2])
    mesh.add_faces(_grid_faces(up_ids, flip=True), CLASS["skin"])
    mesh.add_faces(_grid_faces(low_ids, flip=True), CLASS["skin"])
    lid_info[side] = dict(up_edge=up_ids[-1], low_edge=low_ids[0], hs=hs, centre=c)

  # Ears: thin shells with a rolled rim and a bowl, drawn from both sides.
  ear_ids_all = []
  for sign in (1.0, -1.0):
    rho = np.linspace(0, 1, 7)
    gam = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    rr, gg = np.meshgrid(rho, gam, indexing="ij")
    half_w, half_h = 0.017, 0.031
    u = half_w * rr * np.cos(gg)  # along the ear's back-front axis
    w = half_h * rr * np.sin(gg) * (1 + 0.15 * np.cos(gg))  # along the ear's height
    bowl = -0.006 * (1 - rr**2) + 0.0035 * np.exp(-0.5 * ((rr - 0.9) / 0.08)**2)
    ang = np.deg2rad(22.0)
    # Local frame: u runs front (-z) to back (+z), w down (+y), depth outwards (+x), then the
    # ear swings its back edge away from the head by `ang`.
    lx = bowl + np.sin(ang) * (u + half_w)
    lz = np.cos(ang) * u
    ear_c = np.array([0.073 * sign, -0.006, 0.016])
    pts = np.stack([ear_c[0] + sign * lx, ear_c[1] + w, ear_c[2] + lz], -1)
    outer = mesh.add_vertices(pts[1:].reshape(-1, 3), _G_EAR).reshape(len(rho) - 1, len(gam))
    centre_id = mesh.add_vertices(pts[0, :1], _G_EAR)[0]
    faces = _grid_faces(outer, wrap_cols=True)
    fan = np.array([[centre_id, outer[0, (j + 1) % len(gam)], outer[0, j]]
                    for j in range(len(gam))])
    faces = np.concatenate([fan, faces])
    if sign < 0:
      faces = faces[:, ::-1]
    mesh.add_faces(faces, CLASS["ears"])
    mesh.add_faces(faces[:, ::-1], CLASS["ears"])  # the back of the ear
    ear_ids_all.append(outer)

  # Mouth interior: a dark curved wall behind the lips; teeth arcs in front of it.
  gx = np.linspace(-0.032, 0.032, 13)
  gy = np.linspace(_Y_MOUTH - 0.020, _Y_MOUTH + 0.028, 13)
  mx, my = np.meshgrid(gx, gy)
  mz = -0.062 + 20.0 * mx**2 + 3.0 * (my - _Y_MOUTH)**2
  m_ids = mesh.add_vertices(np.stack([mx, my, mz], -1), _G_MOUTH).reshape(mx.shape)
  mesh.add_faces(_grid_faces(m_ids), CLASS["mouth_interior"])
  # The upper teeth reach below the lip line and the lower teeth above it, hidden by the lips
  # while the mouth is closed; the lower row sits behind the upper one (overbite).
  for group, y0, y1, z0 in ((_G_TEETH_UP, _Y_MOUTH - 0.008, _Y_MOUTH + 0.004, -0.0795),
                            (_G_TEETH_LOW, _Y_MOUTH - 0.002, _Y_MOUTH + 0.008, -0.0775)):
    tx = np.linspace(-0.021, 0.021, 13)
    ty = np.linspace(y0, y1, 3)
    txx, tyy = np.meshgrid(tx, ty)
    tz = z0 + 38.0 * txx**2
    t_ids = mesh.add_vertices(np.stack([txx, tyy, tz], -1), group).reshape(txx.shape)
    mesh.add_faces(_grid_faces(t_ids), CLASS["teeth"])

  v, f, lab, group = mesh.arrays()
  info = dict(rows=num_rows, mouth_row=mouth_row, skin_ids=skin_ids, lower_ids=lower_ids,
              slit_upper_ids=skin_ids[mouth_row, inner], phi=phi, eye_centres=eye_centres,
              lid_info=lid_info, grid_faces=(_NUM_COLS, len(all_faces)))
  return v, f, lab, group, info


def _orient_outwards(v, f, group):
  """Flips skin and eye faces whose normal points towards the centre of their part."""
  tri = v[f]
  n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
  cen = tri.mean(1)
  g = group[f[:, 0]]
  ref = np.where(np.isin(g, [_G_EYE_L, _G_ULID_L, _G_LLID_L])[:, None],
                 np.array([_EYE_X, _EYE_Y, -0.06]), np.array([0.0, -0.01, 0.01]))
  ref = np.where(np.isin(g, [_G_EYE_R, _G_ULID_R, _G_LLID_R])[:, None],
                 np.array([-_EYE_X, _EYE_Y, -0.06]), ref)
  # Mouth parts, teeth and ears keep their construction order: they face the camera / outwards.
  fixable = np.isin(g, [_G_SKIN, _G_LOWER_SLIT, _G_EYE_L, _G_EYE_R, _G_ULID_L, _G_LLID_L,
                        _G_ULID_R, _G_LLID_R])
  # The skin's own centre line: use the axis point at the triangle's height so the neck is right.
  axis = np.stack([np.zeros(len(f)), cen[:, 1], np.full(len(f), 0.005)], -1)
  ref = np.where(np.isin(g, [_G_SKIN, _G_LOWER_SLIT])[:, None], axis, ref)
  inward = np.sum(n * (cen - ref), -1) < 0
  flip = fixable & inward
  f = f.copy()
  f[flip] = f[flip][:, ::-1]
  return f


def _label_faces(v, f, lab, group, info):
  """Assigns brows, nose, lips, neck and hair on the skin by the template position of each face."""
  cen = v[f].mean(1)
  # Grid triangles come in pairs per quad; labelling by the quad centre gives staircase borders
  # instead of a sawtooth.
  g0, g1 = info["grid_faces"]
  quad = cen[g0:g1].reshape(-1, 2, 3).mean(1)
  cen[g0:g1] = np.repeat(quad, 2, axis=0)
  x, y, z = cen[:, 0], cen[:, 1], cen[:, 2]
  is_skin = (lab == CLASS["skin"]) & np.isin(group[f].max(1), [_G_SKIN, _G_LOWER_SLIT]) & \
            np.all(np.isin(group[f], [_G_SKIN, _G_LOWER_SLIT]), axis=1)
  frontal = z < -0.045
  out = lab.copy()
  ax = np.abs(x)
  hair_y = _hairline(np.arctan2(x, -z))
  out[is_skin & (y < hair_y)] = CLASS["hair"]
  neck = (y > 0.104) | ((y > 0.03) & (z > -0.01) & (ax < 0.065)) | ((y > 0.07) & (z > -0.035))
  out[is_skin & neck & (y >= hair_y)] = CLASS["neck"]
  brow = frontal & (ax > 0.011) & (ax < 0.058) & (np.abs(y - _brow_center(x))
                                                   < 0.0052 - 0.0022 * (ax - 0.011) / 0.05)
  out[is_skin & brow & (x > 0)] = CLASS["left_brow"]
  out[is_skin & brow & (x < 0)] = CLASS["right_brow"]
  t = np.clip((y + 0.022) / 0.055, 0, 1)
  nose = frontal & (y > -0.024) & (y < 0.0345) & (ax < 0.006 + 0.016 * t**1.6)
  out[is_skin & nose] = CLASS["nose"]
  uses_lower = np.isin(f, info["lower_ids"]).any(1)
  below_slit = (y > _Y_MOUTH) | uses_lower
  upper = frontal & (y <= _Y_MOUTH) & ~uses_lower & (y > _upper_lip_top(x)) & (ax < 0.026)
  lower = frontal & below_slit & (y < _lower_lip_bottom(x)) & (ax < 0.026)
  out[is_skin & upper] = CLASS["upper_lip"]
  out[is_skin & lower] = CLASS["lower_lip"]
  return out


def _skin_weights(v, group, info):
  """Per-vertex weights over JOINT_NAMES: lids, eyes and the jaw; everything else the head."""
  num_v = len(v)
  w = np.zeros((num_v, len(JOINT_NAMES)))
  j = {n: i for i, n in enumerate(JOINT_NAMES)}
  x, y, z = v[:, 0], v[:, 1], v[:, 2]
  below = np.clip((y - _Y_MOUTH) / 0.012, 0, 1)
  below = np.where(group == _G_LOWER_SLIT, 1.0, below)
  lateral = 1 - _smoothstep(0.030, 0.062, np.abs(x))
  frontal = _smoothstep(0.015, -0.035, z)
  neck = 1 - _smoothstep(0.100, 0.125, y)
  jaw = _smoothstep(0, 1, below) * lateral * frontal * neck
  skinlike = np.isin(group, [_G_SKIN, _G_LOWER_SLIT])
  jaw = np.where(skinlike, jaw, 0.0)
  jaw = np.where(group == _G_MOUTH, _smoothstep(_Y_MOUTH - 0.002, _Y_MOUTH + 0.012, y), jaw)
  jaw = np.where(group == _G_TEETH_LOW, 1.0, jaw)
  w[:, j["jaw"]] = jaw
  w[:, j["head"]] = 1 - jaw
  for g, name in ((_G_EYE_L, "left_eye"), (_G_EYE_R, "right_eye"),
                  (_G_ULID_L, "left_upper_lid"), (_G_LLID_L, "left_lower_lid"),
                  (_G_ULID_R, "right_upper_lid"), (_G_LLID_R, "right_lower_lid")):
    sel = group == g
    w[sel] = 0.0
    w[sel, j[name]] = 1.0
  return w


def _affine_regressor_row(v, ids, target):
  """Minimum-norm affine weights over vertices `ids` that reproduce `target` exactly."""
  a = np.concatenate([v[ids].T, np.ones((1, len(ids)))], 0)  # [4, K]
  b = np.concatenate([target, [1.0]])
  wts = a.T @ np.linalg.solve(a @ a.T + 1e-12 * np.eye(4), b)
  row = np.zeros(len(v))
  row[ids] = wts
  return row


def _joint_regressor(v, group, info):
  eyes = info["eye_centres"]
  targets = {
      "root": np.array([0.0, 0.070, 0.015]), "neck": np.array([0.0, 0.035, 0.012]),
      "head": np.array([0.0, 0.0, 0.0]), "jaw": np.array([0.0, 0.006, 0.002]),
      "left_eye": eyes["left"], "right_eye": eyes["right"],
      "left_upper_lid": eyes["left"], "left_lower_lid": eyes["left"],
      "right_upper_lid": eyes["right"], "right_lower_lid": eyes["right"],
  }
  skin = np.where(group == _G_SKIN)[0]
  reg = np.zeros((len(JOINT_NAMES), len(v)))
  for i, name in enumerate(JOINT_NAMES):
    if "eye" in name or "lid" in name:
      g = _G_EYE_L if name.startswith("left") else _G_EYE_R
      ids = np.where(group == g)[0]
    else:
      d = np.linalg.norm(v[skin] - targets[name], axis=1)
      # Rings of skin around the joint's height keep the regressor stable under shape changes.
      ring = skin[np.abs(v[skin, 1] - targets[name][1]) < 0.004]
      ids = ring if len(ring) >= 8 else skin[np.argsort(d)[:32]]
    reg[i] = _affine_regressor_row(v, ids, targets[name])
  return reg


def _rigid_field(field, v, group, info):
  """Applies a displacement field, moving eyes and lids rigidly with their centre."""
  d = np.array(field(v[:, 0], v[:, 1], v[:, 2]), np.float64)
  for side, groups in (("left", (_G_EYE_L, _G_ULID_L, _G_LLID_L)),
                       ("right", (_G_EYE_R, _G_ULID_R, _G_LLID_R))):
    sel = np.isin(group, groups)
    c = info["eye_centres"][side]
    d[sel] = np.asarray(field(c[None, 0], c[None, 1], c[None, 2]))[0]
  return d


def _shape_basis(v, group, info, rng):
  x, y, z = v[:, 0], v[:, 1], v[:, 2]
  frontal = _smoothstep(-0.03, -0.07, z)

  def comp(fn):
    return lambda p: np.asarray(fn(p[:, 0], p[:, 1], p[:, 2]), np.float64)

  def vec(dx=0.0, dy=0.0, dz=0.0):
    return lambda px, py, pz: np.stack(np.broadcast_arrays(dx, dy, dz), -1) * np.ones(
        (len(px), 1))

  def region(fn_w, dx=0.0, dy=0.0, dz=0.0):
    return lambda px, py, pz: fn_w(px, py, pz)[:, None] * np.array([dx, dy, dz])[None]

  fr = lambda px, py, pz: _smoothstep(-0.03, -0.07, pz)
  fields = {
      "head_scale": lambda px, py, pz: 0.045 * np.stack([px, py, pz], -1),
      "head_width": lambda px, py, pz: 0.06 * np.stack([px, 0 * px, 0 * px], -1),
      "head_height": lambda px, py, pz: 0.05 * np.stack([0 * py, py, 0 * py], -1),
      "head_depth": lambda px, py, pz: 0.05 * np.stack([0 * pz, 0 * pz, pz], -1),
      "face_length": lambda px, py, pz: np.stack(
          [0 * py, 0.05 * np.clip(py + 0.01, 0, 0.1) * (1 - _smoothstep(0.09, 0.13, py))
           + 0.005 * _smoothstep(0.09, 0.13, py), 0 * py], -1),
      "jaw_width": lambda px, py, pz: np.stack(
          [0.05 * px * _smoothstep(0.02, 0.08, py) * (1 - _smoothstep(0.10, 0.13, py)), 0 * px,
           0 * px], -1),
      "chin_protrusion": region(lambda px, py, pz: _gauss(px, py, 0, 0.085, 0.025, 0.02)
                                * fr(px, py, pz), dz=-0.005),
      "nose_length": region(lambda px, py, pz: _gauss(px, py, 0, 0.025, 0.012, 0.01)
                            * fr(px, py, pz), dy=0.003),
      "nose_width": lambda px, py, pz: np.stack(
          [0.25 * px * _gauss(px, py, 0, 0.022, 0.02, 0.014) * fr(px, py, pz), 0 * px, 0 * px],
          -1),
      "nose_protrusion": region(lambda px, py, pz: _gauss(px, py, 0, 0.015, 0.008, 0.018)
                                * fr(px, py, pz), dz=-0.004),
      "eye_spacing": lambda px, py, pz: np.stack(
          [0.003 * np.sign(px) * _gauss(np.abs(px), py, _EYE_X, _EYE_Y, 0.014, 0.014), 0 * px,
           0 * px], -1),
      "eye_height": region(lambda px, py, pz: _gauss(np.abs(px), py, _EYE_X, _EYE_Y, 0.02, 0.016)
                           * fr(px, py, pz), dy=-0.0025),
      "brow_ridge": region(lambda px, py, pz: _gauss(np.abs(px), py, 0.028, -0.04, 0.025, 0.01)
                           * fr(px, py, pz), dz=-0.003),
      "cheek_fullness": lambda px, py, pz: np.stack(
          [0.004 * np.sign(px), 0 * px, -0.002 + 0 * px], -1)
          * _gauss(np.abs(px), py, 0.05, 0.035, 0.02, 0.025)[:, None],
      "lip_fullness": region(lambda px, py, pz: _gauss(px, py, 0, _Y_MOUTH, 0.02, 0.01)
                             * fr(px, py, pz), dz=-0.0025),
      "mouth_width": lambda px, py, pz: np.stack(
          [0.15 * px * _gauss(px, py, 0, _Y_MOUTH, 0.03, 0.012) * fr(px, py, pz), 0 * px,
           0 * px], -1),
      "forehead_slope": region(lambda px, py, pz: _smoothstep(-0.03, -0.12, py)
                               * fr(px, py, pz), dz=0.006),
      "ear_size": lambda px, py, pz: 0.12 * np.stack(
          [0 * px, py + 0.006, pz - 0.016], -1) * (np.abs(px) > 0.07)[:, None] * _gauss(
              np.abs(px), py, 0.08, -0.006, 0.02, 0.04)[:, None],
      "ear_protrusion": lambda px, py, pz: np.stack(
          [0.004 * np.sign(px) * _smoothstep(0.0, 0.03, pz), 0 * px, 0 * px], -1)
          * (np.abs(px) > 0.07)[:, None],
      "neck_thickness": lambda px, py, pz: np.stack(
          [0.08 * px, 0 * px, 0.08 * (pz - 0.005)], -1) * _smoothstep(0.09, 0.13, py)[:, None],
      "cranium_back": region(lambda px, py, pz: _smoothstep(0.0, 0.08, pz)
                             * _smoothstep(0.05, -0.05, py), dz=0.006),
  }
  basis = np.zeros((len(v), 3, NUM_SHAPE))
  for k, name in enumerate(SHAPE_NAMED):
    basis[:, :, k] = _rigid_field(fields[name], v, group, info)
  # Remaining components: smooth random fields (sums of Gaussian bumps), mostly symmetric,
  # amplitudes decaying with the index like a PCA spectrum.
  for k in range(len(SHAPE_NAMED), NUM_SHAPE):
    amp = 0.0025 * 0.96**(k - len(SHAPE_NAMED))
    centres = rng.uniform([-0.07, -0.12, -0.09], [0.07, 0.12, 0.09], size=(3, 3))
    dirs = rng.normal(size=(3, 3))
    sig = rng.uniform(0.02, 0.05, size=3)
    sym = rng.uniform() < 0.75

    def field(px, py, pz, centres=centres, dirs=dirs, sig=sig, sym=sym):
      p = np.stack([px, py, pz], -1)
      out = np.zeros_like(p)
      for c, dvec, s in zip(centres, dirs, sig):
        for mirror in ((1.0, -1.0) if sym else (1.0,)):
          cm = c * np.array([mirror, 1, 1])
          dm = dvec * np.array([mirror, 1, 1])
          wgt = np.exp(-0.5 * np.sum((p - cm)**2, -1) / s**2)
          out += wgt[:, None] * dm[None]
      return out

    d = _rigid_field(field, v, group, info)
    basis[:, :, k] = amp * d / max(np.abs(d).max(), 1e-9)
  del x, y, z, frontal
  return basis


def _expression_basis(v, group, info, rng):
  x, y, z = v[:, 0], v[:, 1], v[:, 2]
  ax = np.abs(x)
  face = _smoothstep(-0.03, -0.065, z) * np.isin(group, [_G_SKIN, _G_LOWER_SLIT])
  side = np.where(group == _G_LOWER_SLIT, 1.0, np.where(y > _Y_MOUTH, 1.0, -1.0))
  mouth = _gauss(x, y, 0, _Y_MOUTH, 0.03, 0.018)
  basis = np.zeros((len(v), 3, NUM_EXPRESSION))

  def put(name, d):
    basis[:, :, EXPRESSION[name]] = d * face[:, None]

  for name, sx in (("smile_left", 1.0), ("smile_right", -1.0)):
    g = _gauss(x, y, 0.026 * sx, _Y_MOUTH, 0.014, 0.014)
    put(name, g[:, None] * np.array([0.006 * sx, -0.005, 0.003]))
  for name, sx in (("frown_left", 1.0), ("frown_right", -1.0)):
    g = _gauss(x, y, 0.026 * sx, _Y_MOUTH + 0.004, 0.012, 0.014)
    put(name, g[:, None] * np.array([0.002 * sx, 0.004, 0.0]))
  lips = _gauss(x, y, 0, _Y_MOUTH, 0.024, 0.011)
  put("pucker", np.stack([-0.25 * x * lips, 0 * x, -0.008 * lips], -1))
  put("mouth_stretch", np.stack([0.25 * x * lips, 0 * x, 0.002 * lips], -1))
  part = _gauss(x, y, 0, _Y_MOUTH, 0.018, 0.008) * (ax < 0.026)
  put("lips_part", np.stack([0 * x, 0.0035 * side * part, 0 * x], -1))
  up = _gauss(x, y, 0, _Y_MOUTH - 0.006, 0.02, 0.008) * (side < 0)
  put("upper_lip_raise", np.stack([0 * x, -0.004 * up, -0.001 * up], -1))
  low = _gauss(x, y, 0, _Y_MOUTH + 0.008, 0.02, 0.01) * (side > 0)
  put("lower_lip_depress", np.stack([0 * x, 0.004 * low, -0.001 * low], -1))
  put("mouth_left", np.stack([0.006 * mouth, 0 * x, 0 * x], -1))
  put("mouth_right", np.stack([-0.006 * mouth, 0 * x, 0 * x], -1))
  cheeks = _gauss(ax, y, 0.042, 0.045, 0.016, 0.02)
  put("cheek_puff", np.stack([0.006 * np.sign(x) * cheeks, 0 * x, -0.003 * cheeks], -1))
  for name, sx in (("cheek_raise_left", 1.0), ("cheek_raise_right", -1.0)):
    g = _gauss(x, y, 0.04 * sx, 0.008, 0.015, 0.012)
    put(name, g[:, None] * np.array([0.0, -0.004, -0.002]))
  nose = _gauss(x, y, 0, 0.0, 0.015, 0.015)
  put("nose_wrinkle", np.stack([0 * x, -0.003 * nose, 0 * x], -1))
  brow_l = _gauss(x, y, 0.034, -0.045, 0.02, 0.014)
  brow_r = _gauss(x, y, -0.034, -0.045, 0.02, 0.014)
  put("brow_raise_left", np.stack([0 * x, -0.006 * brow_l, 0 * x], -1))
  put("brow_raise_right", np.stack([0 * x, -0.006 * brow_r, 0 * x], -1))
  inner = _gauss(ax, y, 0.014, -0.042, 0.01, 0.012)
  put("brow_furrow", np.stack([-0.003 * np.sign(x) * inner, 0.003 * inner, 0 * x], -1))
  put("brow_inner_raise", np.stack([0 * x, -0.005 * inner, 0 * x], -1))
  chin = _gauss(x, y, 0, 0.08, 0.02, 0.016)
  put("chin_raise", np.stack([0 * x, -0.003 * chin, -0.002 * chin], -1))
  start = len(JOINT_EXPRESSIONS) + len(BLENDSHAPE_EXPRESSIONS)
  for k in range(start, NUM_EXPRESSION):
    amp = 0.0025 * 0.97**(k - start)
    c = rng.uniform([-0.045, -0.05, -0.09], [0.045, 0.09, -0.06])
    dvec = rng.normal(size=3)
    s = rng.uniform(0.01, 0.025)
    g = np.exp(-0.5 * np.sum((v - c)**2, -1) / s**2)
    basis[:, :, k] = amp * (g[:, None] * dvec[None] / np.abs(dvec).max()) * face[:, None]
  return basis


def _expression_pose():
  pose = np.zeros((NUM_EXPRESSION, len(JOINT_NAMES), 3))
  j = {n: i for i, n in enumerate(JOINT_NAMES)}
  pose[EXPRESSION["jaw_open"], j["jaw"]] = [_JAW_OPEN, 0, 0]
  pose[EXPRESSION["jaw_sideways"], j["jaw"]] = [0, -_JAW_SIDE, 0]
  for eye in ("left_eye", "right_eye"):
    # Rotating the forward axis (-z) towards +x needs a negative angle about +y.
    pose[EXPRESSION["gaze_horizontal"], j[eye]] = [0, -_GAZE, 0]
    pose[EXPRESSION["gaze_vertical"], j[eye]] = [_GAZE, 0, 0]
  for side in ("left", "right"):
    pose[EXPRESSION[f"blink_{side}"], j[f"{side}_upper_lid"]] = [_BLINK_UPPER, 0, 0]
    pose[EXPRESSION[f"blink_{side}"], j[f"{side}_lower_lid"]] = [-_BLINK_LOWER, 0, 0]
  return pose


def _vertex_tint(v, f, lab, group, info):
  tint = np.ones((len(v), 3))
  # Per-vertex labels: the label of any face using the vertex (lips and irises dominate).
  vlab = np.zeros(len(v), np.int32)
  for k in range(3):
    vlab[f[:, k]] = np.maximum(vlab[f[:, k]], lab)
  x, y, z = v[:, 0], v[:, 1], v[:, 2]
  lips = np.isin(vlab, [CLASS["upper_lip"], CLASS["lower_lip"]])
  tint[lips] = [0.93, 0.66, 0.66]
  blush = _gauss(np.abs(x), y, 0.045, 0.02, 0.015, 0.015) * (z < -0.05)
  tint *= 1 - 0.10 * blush[:, None] * np.array([0.0, 1.0, 1.0])[None]
  for side, g in (("left", _G_EYE_L), ("right", _G_EYE_R)):
    c = info["eye_centres"][side]
    d = (v - c) / _EYE_R
    polar = np.arccos(np.clip(-d[:, 2], -1, 1))
    sel = group == g
    iris_shade = np.where(polar < _PUPIL_ANGLE - 1e-6, 0.08, np.where(polar < _IRIS_ANGLE - 0.08,
                                                                       1.0, 0.6))
    tint[sel] = iris_shade[sel, None]
  return tint


def _landmarks(v, f, lab, group, info):
  """68 iBUG-layout landmarks plus two iris centres as (triangle, one-hot barycentric) on vertices."""
  names, targets, pools = [], [], []
  skin = np.where(np.isin(group, [_G_SKIN]))[0]
  frontal_skin = skin[v[skin, 2] < -0.02]
  skin_surface = v[frontal_skin]

  def on_skin(xx, yy):
    d = (skin_surface[:, 0] - xx)**2 + (skin_surface[:, 1] - yy)**2
    return skin_surface[np.argmin(d)]

  # 0-16: face contour from the subject's right ear-level, round the chin, to the left.
  for i, tau in enumerate(np.linspace(-np.pi / 2, np.pi / 2, 17)):
    xx = 0.064 * np.sin(tau) * (1 - 0.25 * np.cos(tau)**2)
    yy = 0.0 + 0.094 * np.cos(tau)**1.3
    names.append(f"contour_{i:02d}")
    targets.append(on_skin(xx, yy))
    pools.append(frontal_skin)
  for side, xs in (("right", np.linspace(-0.056, -0.014, 5)), ("left", np.linspace(0.014, 0.056,
                                                                                      5))):
    for i, xx in enumerate(xs):
      names.append(f"{side}_brow_{i}")
      targets.append(on_skin(xx, _brow_center(xx)))
      pools.append(frontal_skin)
  for i, yy in enumerate(np.linspace(-0.022, 0.021, 4)):
    names.append(f"nose_bridge_{i}")
    targets.append(on_skin(0.0, yy))
    pools.append(frontal_skin)
  for i, xx in enumerate(np.linspace(-0.013, 0.013, 5)):
    names.append(f"nose_base_{i}")
    targets.append(on_skin(xx, 0.031 + 0.002 * (abs(xx) < 0.005)))
    pools.append(frontal_skin)
  for side, order in (("right", (1.0, 0.45, -0.45, -1.0)), ("left", (-1.0, -0.45, 0.45, 1.0))):
    li = info["lid_info"][side]
    hs = li["hs"]
    up_edge, low_edge = li["up_edge"], li["low_edge"]
    h0 = 0.78
    # iBUG order per eye: corner, two upper, corner, two lower (lower runs back).
    sign = -1.0 if side == "right" else 1.0
    corner_a, up1, up2, corner_b = [o * h0 * sign * -1 if side == "right" else o * h0
                                    for o in order]
    del sign
    seq = [("corner", corner_a, up_edge), ("upper", up1, up_edge), ("upper", up2, up_edge),
           ("corner", corner_b, up_edge), ("lower", up2, low_edge), ("lower", up1, low_edge)]
    for k, (kind, h, edge) in enumerate(seq):
      idx = edge[np.argmin(np.abs(hs - h))]
      names.append(f"{side}_eye_{k}")
      targets.append(v[idx])
      pools.append(edge)
  # Outer lips 48-59 and inner lips 60-67.
  outer_x = np.array([-0.0255, -0.017, -0.007, 0.0, 0.007, 0.017, 0.0255])
  for i, xx in enumerate(outer_x):
    yy = _Y_MOUTH if i in (0, 6) else _upper_lip_top(xx)
    names.append(f"outer_lip_{i}")
    targets.append(on_skin(xx, yy))
    pools.append(frontal_skin)
  for i, xx in enumerate(outer_x[1:-1][::-1]):
    names.append(f"outer_lip_{7 + i}")
    targets.append(on_skin(xx, _lower_lip_bottom(xx)))
    pools.append(frontal_skin)
  slit_up, slit_low = info["slit_upper_ids"], info["lower_ids"]
  inner_x = [-0.024, -0.009, 0.0, 0.009, 0.024, 0.009, 0.0, -0.009]
  for i, xx in enumerate(inner_x):
    pool = slit_up if i <= 4 else slit_low
    if i in (0, 4):
      pool = slit_up
    names.append(f"inner_lip_{i}")
    targets.append(v[pool[np.argmin(np.abs(v[pool, 0] - xx))]])
    pools.append(pool)
  for side, g in (("left", _G_EYE_L), ("right", _G_EYE_R)):
    c = info["eye_centres"][side]
    names.append(f"{side}_iris_centre")
    targets.append(c + np.array([0, 0, -_EYE_R]))
    pools.append(np.where(group == g)[0])
  tri_ids, barys = [], []
  vert_to_face = {}
  for fi, face in enumerate(f):
    for k, vi in enumerate(face):
      vert_to_face.setdefault(int(vi), (fi, k))
  for tgt, pool in zip(targets, pools):
    vi = int(pool[np.argmin(np.linalg.norm(v[pool] - tgt, axis=1))])
    fi, k = vert_to_face[vi]
    b = np.zeros(3)
    b[k] = 1.0
    tri_ids.append(fi)
    barys.append(b)
  return np.array(tri_ids, np.int32), np.array(barys, np.float32), tuple(names)


def build_procedural_asset(seed: int = 0):
  """Generates the procedural head (deterministic for a seed) as an asset dict of numpy arrays."""
  rng = np.random.RandomState(seed)
  v, f, lab, group, info = _build_geometry()
  f = _orient_outwards(v, f, group)
  lab = _label_faces(v, f, lab, group, info)
  weights = _skin_weights(v, group, info)
  reg = _joint_regressor(v, group, info)
  shape_basis = _shape_basis(v, group, info, rng)
  expr_basis = _expression_basis(v, group, info, rng)
  lmk_tri, lmk_bary, lmk_names = _landmarks(v, f, lab, group, info)
  return {
      "template": v.astype(np.float32), "faces": f.astype(np.int32),
      "shape_basis": shape_basis.astype(np.float32),
      "expression_basis": expr_basis.astype(np.float32),
      "expression_pose": _expression_pose().astype(np.float32),
      "joint_regressor": reg.astype(np.float32), "skin_weights": weights.astype(np.float32),
      "parents": np.asarray(JOINT_PARENTS, np.int32), "tri_labels": lab.astype(np.int32),
      "landmark_tri": lmk_tri, "landmark_bary": lmk_bary,
      "vertex_tint": _vertex_tint(v, f, lab, group, info).astype(np.float32),
      "joint_names": np.asarray(JOINT_NAMES, str),
      "expression_names": np.asarray(EXPRESSION_NAMES, str),
      "shape_names": np.asarray(SHAPE_NAMES, str), "class_names": np.asarray(CLASS_NAMES, str),
      "landmark_names": np.asarray(lmk_names, str),
      "source": np.asarray(f"procedural-v{PROCEDURAL_VERSION}-seed{seed}", str),
  }


# ----------------------------------------------------------------------------------------------
# FLAME conversion. FLAME files are Python 2 pickles holding chumpy arrays; we read them with a
# restricted unpickler that stands in for chumpy, so chumpy never needs to be installed.

_FLIP = np.array([1.0, -1.0, -1.0])  # FLAME (x left, y up, z out of the face) -> our model frame.


class _ChumpyStub:
  """Stands in for any chumpy class; keeps the pickled state so its array can be read back."""

  def __init__(self, *args, **kwargs):
    self._args, self._kwargs, self._state = args, kwargs, None

  def __setstate__(self, state):
    self._state = state


class _FlameUnpickler(pickle.Unpickler):
  """Unpickler that allows numpy arrays, scipy sparse matrices and chumpy stand-ins only."""

  def find_class(self, module, name):
    import copyreg  # pylint: disable=g-import-not-at-top
    import importlib  # pylint: disable=g-import-not-at-top
    if module.split(".")[0] == "chumpy":
      return _ChumpyStub
    if module == "_codecs" and name == "encode":  # how protocol-2 pickles store bytes
      import codecs  # pylint: disable=g-import-not-at-top
      return codecs.encode
    if module in ("copy_reg", "copyreg") and name in ("_reconstructor", "__newobj__"):
      return getattr(copyreg, name)
    if module in ("__builtin__", "builtins") and name in ("object", "set", "frozenset", "list",
                                                          "dict", "tuple", "slice"):
      return getattr(__import__("builtins"), name)
    if module.split(".")[0] == "numpy" and name in ("_reconstruct", "ndarray", "dtype", "scalar",
                                                    "_frombuffer"):
      for mod in (module, module.replace("numpy.core", "numpy._core")):
        try:
          return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
          continue
    if module.startswith("scipy.sparse") and name in ("csc_matrix", "csr_matrix", "coo_matrix"):
      import scipy.sparse  # pylint: disable=g-import-not-at-top
      return getattr(scipy.sparse, name)
    raise pickle.UnpicklingError(
        f"refusing to load {module}.{name}: a FLAME file holds only numpy, scipy.sparse and "
        "chumpy objects.")


def _read_pickle(path):
  with open(path, "rb") as f:
    try:
      return _FlameUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as e:
      raise ValueError(f"FLAME file {path} could not be read ({e}); expected the FLAME model "
                       ".pkl from flame.is.tue.mpg.de.") from None


def _to_array(obj, field, path):
  """numpy array, scipy sparse matrix or chumpy stand-in -> numpy array."""
  if isinstance(obj, np.ndarray):
    return obj
  if hasattr(obj, "toarray"):
    return np.asarray(obj.toarray())
  if isinstance(obj, _ChumpyStub):
    state = obj._state  # pylint: disable=protected-access
    if isinstance(state, tuple):
      state = next((s for s in state if isinstance(s, dict)), None)
    if isinstance(state, dict):
      for key in ("x", "a", "_x"):
        if key in state:
          return _to_array(state[key], field, path)
    if obj._args and isinstance(obj._args[0], np.ndarray):  # pylint: disable=protected-access
      return obj._args[0]  # pylint: disable=protected-access
  if isinstance(obj, (list, tuple)):
    return np.asarray(obj)
  raise ValueError(f"FLAME file {path} has field '{field}' of type {type(obj).__name__} that "
                   "holds no array; expected a numpy or chumpy array.")


def convert_flame(flame_path, masks_path=None, landmarks_path=None, num_flame_shape=300):
  """Converts a user-supplied FLAME .pkl (and optional FLAME_masks.pkl, landmark embedding) to an asset dict.

  Unpickling can run code: only pass files you trust. Shape uses FLAME's first 64 shape
  components; expression = JOINT_EXPRESSIONS (jaw and gaze drive FLAME's joints; FLAME has no lid
  joints, so the blink components are zero) followed by FLAME's first 58 expression components.
  FLAME's pose correctives are not used.
  """
  flame_path = os.fspath(flame_path)
  raw = _read_pickle(flame_path)
  if not isinstance(raw, dict):
    raise ValueError(f"FLAME file {flame_path} holds a {type(raw).__name__}; expected a dict.")
  for key in ("v_template", "f", "shapedirs", "J_regressor", "kintree_table", "weights"):
    if key not in raw:
      raise ValueError(f"FLAME file {flame_path} is missing field '{key}'; expected a FLAME "
                       "model pickle.")
  get = lambda k: _to_array(raw[k], k, flame_path)
  template = get("v_template").astype(np.float64) * _FLIP
  faces = get("f").astype(np.int64)
  dirs = get("shapedirs").astype(np.float64) * _FLIP[None, :, None]
  regressor = get("J_regressor").astype(np.float64)
  kintree = get("kintree_table").astype(np.int64)
  weights = get("weights").astype(np.float64)
  num_v, num_j = len(template), regressor.shape[0]
  n_shape = min(num_flame_shape, dirs.shape[2])
  shape_basis = np.zeros((num_v, 3, NUM_SHAPE))
  k = min(NUM_SHAPE, n_shape)
  shape_basis[:, :, :k] = dirs[:, :, :k]
  n_joint_expr = len(JOINT_EXPRESSIONS)
  expr_basis = np.zeros((num_v, 3, NUM_EXPRESSION))
  k = min(NUM_EXPRESSION - n_joint_expr, dirs.shape[2] - n_shape)
  expr_basis[:, :, n_joint_expr:n_joint_expr + k] = dirs[:, :, n_shape:n_shape + k]
  parents = np.where(kintree[0] > num_j, -1, kintree[0])
  parents[0] = -1
  joints = regressor @ template
  # FLAME's joints are global, neck, jaw, then the two eyes; name the eyes by the side they sit on.
  names = ["root", "neck", "jaw"] + [("left_eye" if joints[j, 0] > 0 else "right_eye")
                                      for j in range(3, num_j)]
  names = names[:num_j]
  expr_pose = np.zeros((NUM_EXPRESSION, num_j, 3))
  jid = {n: i for i, n in enumerate(names)}
  if "jaw" in jid:
    expr_pose[EXPRESSION["jaw_open"], jid["jaw"]] = [_JAW_OPEN, 0, 0]
    expr_pose[EXPRESSION["jaw_sideways"], jid["jaw"]] = [0, -_JAW_SIDE, 0]
  for eye in ("left_eye", "right_eye"):
    if eye in jid:
      expr_pose[EXPRESSION["gaze_horizontal"], jid[eye]] = [0, -_GAZE, 0]
      expr_pose[EXPRESSION["gaze_vertical"], jid[eye]] = [_GAZE, 0, 0]
  labels = np.zeros(len(faces), np.int32)
  if masks_path:
    labels = _flame_labels(_read_pickle(os.fspath(masks_path)), template, faces, masks_path)
  lmk_tri = np.zeros((0,), np.int32)
  lmk_bary = np.zeros((0, 3), np.float32)
  lmk_names = ()
  if landmarks_path:
    emb = _read_pickle(os.fspath(landmarks_path))
    if not isinstance(emb, dict) or "lmk_face_idx" not in emb or "lmk_b_coords" not in emb:
      raise ValueError(f"landmark file {landmarks_path} is missing field 'lmk_face_idx' or "
                       "'lmk_b_coords'; expected FLAME's static landmark embedding.")
    lmk_tri = _to_array(emb["lmk_face_idx"], "lmk_face_idx", landmarks_path).astype(np.int32)
    lmk_bary = _to_array(emb["lmk_b_coords"], "lmk_b_coords", landmarks_path).astype(np.float32)
    lmk_names = tuple(f"flame_{i:02d}" for i in range(len(lmk_tri)))
  return {
      "template": template.astype(np.float32), "faces": faces.astype(np.int32),
      "shape_basis": shape_basis.astype(np.float32),
      "expression_basis": expr_basis.astype(np.float32),
      "expression_pose": expr_pose.astype(np.float32),
      "joint_regressor": regressor.astype(np.float32), "skin_weights": weights.astype(np.float32),
      "parents": parents.astype(np.int32), "tri_labels": labels,
      "landmark_tri": lmk_tri, "landmark_bary": lmk_bary,
      "vertex_tint": np.ones((num_v, 3), np.float32),
      "joint_names": np.asarray(names, str), "expression_names": np.asarray(EXPRESSION_NAMES, str),
      "shape_names": np.asarray([f"flame_shape_{i:02d}" for i in range(NUM_SHAPE)], str),
      "class_names": np.asarray(CLASS_NAMES, str), "landmark_names": np.asarray(lmk_names, str),
      "source": np.asarray(f"flame:{os.path.basename(flame_path)}", str),
  }


def _flame_labels(masks, template, faces, path):
  """FLAME_masks.pkl regions (vertex ids) -> per-triangle labels; sides decided by x."""
  if not isinstance(masks, dict):
    raise ValueError(f"FLAME masks file {path} holds a {type(masks).__name__}; expected a dict.")
  labels = np.zeros(len(faces), np.int32)

  def inside(region):
    ids = np.zeros(len(template), bool)
    ids[_to_array(masks[region], region, path).astype(np.int64)] = True
    return ids[faces].all(1)

  side_of = lambda sel: "left" if template[faces[sel]].mean((0, 1))[0] > 0 else "right"
  for region, cls in (("scalp", "hair"), ("neck", "neck"), ("nose", "nose"),
                      ("left_ear", "ears"), ("right_ear", "ears")):
    if region in masks:
      labels[inside(region)] = CLASS[cls]
  if "lips" in masks:
    sel = inside("lips")
    cy = template[faces[sel]].mean((0, 1))[1]
    tri_y = template[faces].mean(1)[:, 1]
    labels[sel & (tri_y <= cy)] = CLASS["upper_lip"]
    labels[sel & (tri_y > cy)] = CLASS["lower_lip"]
  for region in ("left_eyeball", "right_eyeball"):
    if region in masks:
      sel = inside(region)
      if not sel.any():
        continue
      side = side_of(sel)
      ids = np.unique(faces[sel])
      centre = template[ids].mean(0)
      radius = np.linalg.norm(template[ids] - centre, axis=1).mean()
      tri_c = template[faces].mean(1)
      polar = np.arccos(np.clip(-(tri_c[:, 2] - centre[2]) / radius, -1, 1))
      labels[sel] = CLASS[f"{side}_eye"]
      labels[sel & (polar < _IRIS_ANGLE)] = CLASS[f"{side}_iris"]
  return labels
