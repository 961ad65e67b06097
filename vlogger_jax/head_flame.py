"""The FLAME converter: a user-supplied FLAME model (.pkl) -> a head asset dict (head.py's format).

FLAME cannot be shipped or downloaded by this project (flame.is.tue.mpg.de, under its licence).
Its files are Python 2 pickles holding chumpy arrays; we read them with a restricted unpickler that
stands in for chumpy, so chumpy never needs to be installed, and that refuses every class outside
numpy, scipy.sparse and chumpy. Unpickling a file can still run code: only convert files you trust.

`convert_flame(flame_path, masks_path, landmarks_path)` -> dict of numpy arrays with the fields of
contracts.ASSET_FIELDS; head.model_from_dict checks it, head.save_asset writes it
(launch/convert_flame.py does both). The FLAME asset is rigged with the procedural head's joint
angles per unit of jaw_open, jaw_sideways and gaze, so an expression vector means the same on both.
"""

import builtins
import codecs
import copyreg
import importlib
import os
import pickle

import numpy as np
import scipy.sparse

from vlogger_jax import head_procedural
from vlogger_jax.contracts import (CLASS, CLASS_NAMES, EXPRESSION, EXPRESSION_NAMES,
                                   JOINT_EXPRESSIONS, NUM_EXPRESSION, NUM_SHAPE)

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
    if module.split(".")[0] == "chumpy":
      return _ChumpyStub
    if module == "_codecs" and name == "encode":  # how protocol-2 pickles store bytes
      return codecs.encode
    if module in ("copy_reg", "copyreg") and name in ("_reconstructor", "__newobj__"):
      return getattr(copyreg, name)
    if module in ("__builtin__", "builtins") and name in ("object", "set", "frozenset", "list",
                                                          "dict", "tuple", "slice"):
      return getattr(builtins, name)
    if module.split(".")[0] == "numpy" and name in ("_reconstruct", "ndarray", "dtype", "scalar",
                                                    "_frombuffer"):
      for mod in (module, module.replace("numpy.core", "numpy._core")):
        try:
          return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
          continue
    if module.startswith("scipy.sparse") and name in ("csc_matrix", "csr_matrix", "coo_matrix"):
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
  """A user-supplied FLAME .pkl (optional FLAME_masks.pkl, landmark embedding) -> asset dict.

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
    expr_pose[EXPRESSION["jaw_open"], jid["jaw"]] = [head_procedural.JAW_OPEN_RAD, 0, 0]
    expr_pose[EXPRESSION["jaw_sideways"], jid["jaw"]] = [0, -head_procedural.JAW_SIDEWAYS_RAD, 0]
  for eye in ("left_eye", "right_eye"):
    if eye in jid:
      expr_pose[EXPRESSION["gaze_horizontal"], jid[eye]] = [0, -head_procedural.GAZE_RAD, 0]
      expr_pose[EXPRESSION["gaze_vertical"], jid[eye]] = [head_procedural.GAZE_RAD, 0, 0]
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
      labels[sel & (polar < head_procedural.IRIS_ANGLE)] = CLASS[f"{side}_iris"]
  return labels
