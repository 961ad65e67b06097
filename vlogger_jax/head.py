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
asset is procedural (`head_procedural.build_procedural_asset`): `load_default` generates it on
first use into $XDG_CACHE_HOME/vlogger_jax (or ~/.cache/vlogger_jax), keyed by
head_procedural.PROCEDURAL_VERSION, written to a temporary name and renamed. A user-supplied FLAME
model becomes an asset in the same format through `head_flame.convert_flame`
(launch/convert_flame.py).
"""

import os
from typing import Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from vlogger_jax import fileio
from vlogger_jax import geometry
from vlogger_jax import head_procedural
# The head model's layout (classes, joints, expression and shape names, asset fields) is defined
# once in contracts.py; it is re-exported here so that callers write head.CLASS["nose"] etc.
from vlogger_jax.contracts import (  # pylint: disable=unused-import
    ASSET_FIELDS, BLENDSHAPE_EXPRESSIONS, CLASS, CLASS_NAMES, EXPRESSION, EXPRESSION_NAMES,
    HEAD_POSE_DIM, JOINT_EXPRESSIONS, JOINT_NAMES, JOINT_PARENTS, NUM_CLASSES, NUM_EXPRESSION,
    NUM_SHAPE, SHAPE_NAMED, SHAPE_NAMES)

@flax.struct.dataclass
class HeadModel:
  """A rigged head: arrays are pytree leaves (so it passes into jit), names and hierarchy static."""
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
  """Writes a HeadModel (or asset dict) to `path` as .npz, atomically (temporary name, rename)."""
  arrays = model_or_dict if isinstance(model_or_dict, dict) else asset_dict(model_or_dict)
  fileio.save_npz(path, **arrays)


def load_asset(path) -> HeadModel:
  """Reads a .npz head asset into a HeadModel; raises ValueError naming the file and the problem."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"head asset {path} does not exist; expected a .npz written by "
                            "vlogger_jax.head.save_asset or launch/convert_flame.py.")
  try:
    arrays = fileio.read_npz(path)
  except fileio.NpzError as e:
    raise ValueError(f"head asset {path} {e}; expected a complete file written by "
                     "vlogger_jax.head.save_asset.") from None
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
  path = path or os.path.join(cache_dir(),
                              f"head_procedural_v{head_procedural.PROCEDURAL_VERSION}.npz")
  if path not in _DEFAULT:
    if not os.path.exists(path):
      save_asset(head_procedural.build_procedural_asset(), path)
    _DEFAULT[path] = load_asset(path)
  return _DEFAULT[path]
