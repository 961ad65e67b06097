"""The head asset format, the procedural head, skinning of the head, the FLAME converter and the
import graph of the three head modules."""

import ast
import os
import pickle
import sys
import types

import numpy as np
import jax.numpy as jnp
import pytest
import scipy.sparse

from conftest import REPO, run_python
from vlogger_jax import geometry
from vlogger_jax import head
from vlogger_jax import head_flame
from vlogger_jax import head_procedural


@pytest.fixture(scope="module")
def asset():
  return head_procedural.build_procedural_asset()


@pytest.fixture(scope="module")
def model(asset):
  return head.model_from_dict(asset)


def test_procedural_asset_is_a_rigged_head(asset, model):
  assert 3000 < model.num_faces < 20000
  assert model.shape_basis.shape[-1] == 64 and model.expression_basis.shape[-1] == 64
  assert len(model.joint_names) == len(model.parents) == model.joint_regressor.shape[0]
  np.testing.assert_allclose(np.asarray(model.skin_weights).sum(1), 1.0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(model.joint_regressor).sum(1), 1.0, atol=1e-4)
  counts = np.bincount(asset["tri_labels"], minlength=head.NUM_CLASSES)
  assert (counts > 0).all(), dict(zip(head.CLASS_NAMES, counts))
  # Joint-driven expression components have no blendshape, blendshape components no joint.
  for name in head.JOINT_EXPRESSIONS:
    k = head.EXPRESSION[name]
    assert np.abs(asset["expression_pose"][k]).max() > 0
    assert np.abs(asset["expression_basis"][:, :, k]).max() == 0
  for name in ("smile_left", "pucker", "brow_raise_left"):
    assert np.abs(asset["expression_basis"][:, :, head.EXPRESSION[name]]).max() > 1e-3
  # Deterministic: a second build is identical.
  again = head_procedural.build_procedural_asset()
  np.testing.assert_array_equal(again["template"], asset["template"])
  np.testing.assert_array_equal(again["shape_basis"], asset["shape_basis"])


def test_zero_pose_gives_shaped_template(model):
  beta = np.random.RandomState(0).normal(size=64).astype(np.float32)
  zero_pose = jnp.array([1.0, 0, 0, 0, 1, 0, 0, 0, 0])
  verts = head.forward(model, beta, jnp.zeros(64), zero_pose)
  expected = np.asarray(model.template) + np.einsum("vdk,k->vd", np.asarray(model.shape_basis),
                                                    beta)
  np.testing.assert_allclose(np.asarray(verts), expected, atol=1e-5)
  # The shape changes the head by millimetres to centimetres, not metres.
  change = np.abs(expected - np.asarray(model.template)).max()
  assert 0.002 < change < 0.05


def test_head_pose_rotates_rigidly_about_root(model):
  rot = geometry.axis_angle_to_matrix(jnp.array([0.2, 0.5, -0.1]))
  pose = jnp.concatenate([geometry.matrix_to_rot6d(rot), jnp.array([0.01, -0.02, 0.6])])
  beta = jnp.zeros(64)
  rest = np.asarray(head.forward(model, beta, jnp.zeros(64), jnp.array([1.0, 0, 0, 0, 1, 0, 0,
                                                                         0, 0])))
  posed = np.asarray(head.forward(model, beta, jnp.zeros(64), pose))
  _, joints = head.shaped_joints(model, beta)
  root = np.asarray(joints)[0]
  expected = (rest - root) @ np.asarray(rot).T + root + np.array([0.01, -0.02, 0.6])
  np.testing.assert_allclose(posed, expected, atol=1e-5)


def test_expressions_move_the_right_parts(model):
  names = model.expression_names
  zero = np.zeros(64, np.float32)
  pose = jnp.array([1.0, 0, 0, 0, 1, 0, 0, 0, 0])
  neutral = np.asarray(head.forward(model, jnp.zeros(64), zero, pose))
  lmk_names = list(model.landmark_names)
  lmk = lambda v: np.asarray(head.landmarks(model, jnp.asarray(v)))
  jaw = zero.copy()
  jaw[names.index("jaw_open")] = 1.0
  opened = np.asarray(head.forward(model, jnp.zeros(64), jaw, pose))
  chin = lmk_names.index("contour_08")
  assert lmk(opened)[chin, 1] - lmk(neutral)[chin, 1] > 0.01  # chin goes down (+y) by > 1 cm
  brow = lmk_names.index("left_brow_2")
  np.testing.assert_allclose(lmk(opened)[brow], lmk(neutral)[brow], atol=1e-6)
  gaze = zero.copy()
  gaze[names.index("gaze_horizontal")] = 1.0
  looked = lmk(np.asarray(head.forward(model, jnp.zeros(64), gaze, pose)))
  iris = lmk_names.index("left_iris_centre")
  assert looked[iris, 0] - lmk(neutral)[iris, 0] > 0.003  # looks towards +x (subject's left)
  # Landmarks sit where their names say: left (+x) eye on the left, eyes above the mouth.
  n = lmk(neutral)
  assert n[lmk_names.index("left_eye_0"), 0] > 0 > n[lmk_names.index("right_eye_0"), 0]
  assert n[lmk_names.index("nose_bridge_0"), 1] < n[lmk_names.index("outer_lip_3"), 1]


def test_asset_round_trip(asset, tmp_path):
  path = tmp_path / "head.npz"
  head.save_asset(asset, path)
  loaded = head.load_asset(path)
  again = head.asset_dict(loaded)
  for key, value in asset.items():
    np.testing.assert_array_equal(np.asarray(again[key]), np.asarray(value), err_msg=key)
  assert loaded.expression_names[0] == "jaw_open"
  assert [p.name for p in tmp_path.iterdir()] == ["head.npz"]  # no temporary file left behind


def test_truncated_and_malformed_assets_fail_clearly(asset, tmp_path):
  path = tmp_path / "head.npz"
  head.save_asset(asset, path)
  data = path.read_bytes()
  truncated = tmp_path / "truncated.npz"
  truncated.write_bytes(data[:len(data) // 3])
  with pytest.raises(ValueError, match="truncated.npz") as err:
    head.load_asset(truncated)
  assert "\n" not in str(err.value)
  missing = dict(asset)
  del missing["skin_weights"]
  bad = tmp_path / "missing.npz"
  np.savez(bad, **missing)
  with pytest.raises(ValueError, match=r"missing.npz is missing field 'skin_weights'"):
    head.load_asset(bad)
  wrong = dict(asset)
  wrong["faces"] = asset["faces"][:, :2]
  bad2 = tmp_path / "wrong.npz"
  np.savez(bad2, **wrong)
  with pytest.raises(ValueError, match=r"wrong.npz has field 'faces'"):
    head.load_asset(bad2)


def test_default_asset_is_cached(tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  monkeypatch.setattr(head, "_DEFAULT", {})
  model = head.load_default()
  files = list((tmp_path / "vlogger_jax").iterdir())
  version = head_procedural.PROCEDURAL_VERSION
  assert [f.name for f in files] == [f"head_procedural_v{version}.npz"]
  monkeypatch.setattr(head, "_DEFAULT", {})

  def fail(*args, **kwargs):
    raise AssertionError("regenerated although the cache file exists")

  monkeypatch.setattr(head_procedural, "build_procedural_asset", fail)
  again = head.load_default()
  np.testing.assert_array_equal(np.asarray(again.faces), np.asarray(model.faces))


def _write_fake_flame(path, masks_path):
  """A small FLAME-structured pickle: chumpy arrays, a sparse regressor, 5 joints."""
  rng = np.random.RandomState(0)
  # A 6 x 8 grid "face" in FLAME's frame (y up, z out of the face).
  gy, gx = np.mgrid[0:6, 0:8].astype(np.float64)
  verts = np.stack([(gx - 3.5) * 0.02, (2.5 - gy) * 0.03, 0.05 - 0.002 * (gx - 3.5)**2], -1)
  verts = verts.reshape(-1, 3)
  num_v = len(verts)
  faces = []
  for i in range(5):
    for j in range(7):
      a, b, c, d = i * 8 + j, i * 8 + j + 1, (i + 1) * 8 + j, (i + 1) * 8 + j + 1
      faces += [(a, c, b), (b, c, d)]
  faces = np.array(faces, np.uint32)
  joints_at = np.array([[0, -0.05, -0.02], [0, -0.03, -0.02], [0, -0.02, 0.0],
                        [0.03, 0.04, 0.03], [-0.03, 0.04, 0.03]])
  reg = np.zeros((5, num_v))
  for j, p in enumerate(joints_at):
    near = np.argsort(np.linalg.norm(verts - p, axis=1))[:4]
    reg[j, near] = 0.25
  weights = np.zeros((num_v, 5))
  weights[:, 1] = 1.0
  weights[verts[:, 1] < -0.02, 1] = 0.0
  weights[verts[:, 1] < -0.02, 2] = 1.0  # the bottom rows are the "jaw"

  chumpy = types.ModuleType("chumpy")
  ch_mod = types.ModuleType("chumpy.ch")

  class Ch:  # pylint: disable=too-few-public-methods
    pass

  Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
  ch_mod.Ch = Ch
  sys.modules["chumpy"], sys.modules["chumpy.ch"] = chumpy, ch_mod
  try:
    def ch(a):
      obj = Ch()
      obj.__dict__.update({"x": a, "_dirty_vars": set()})
      return obj
    model = {
        "v_template": ch(verts), "f": faces, "shapedirs": ch(rng.normal(size=(num_v, 3, 400))
                                                              * 1e-3),
        "posedirs": ch(np.zeros((num_v, 3, 36))), "J_regressor": scipy.sparse.csc_matrix(reg),
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64),
        "weights": ch(weights), "bs_style": "lbs", "bs_type": "lrotmin",
    }
    with open(path, "wb") as f:
      pickle.dump(model, f, protocol=2)
    masks = {"lips": np.arange(8, 24), "nose": np.arange(24, 27), "scalp": np.arange(32, 48)}
    with open(masks_path, "wb") as f:
      pickle.dump(masks, f, protocol=2)
  finally:
    del sys.modules["chumpy"], sys.modules["chumpy.ch"]
  return verts, faces, weights


def test_flame_converter_cli(tmp_path):
  flame, masks, out = tmp_path / "flame.pkl", tmp_path / "masks.pkl", tmp_path / "flame.npz"
  verts, faces, _ = _write_fake_flame(flame, masks)
  proc = run_python(["launch/convert_flame.py", "--flame", str(flame), "--masks", str(masks),
                     "--out", str(out)])
  assert "wrote" in proc.stdout
  help_text = run_python(["launch/convert_flame.py", "--help"]).stdout
  assert "run code" in help_text
  model = head.load_asset(out)
  # Converted into our frame: y and z flipped.
  np.testing.assert_allclose(np.asarray(model.template), verts * [1, -1, -1], atol=1e-6)
  np.testing.assert_array_equal(np.asarray(model.faces), faces.astype(np.int32))
  assert model.joint_names == ("root", "neck", "jaw", "left_eye", "right_eye")
  labels = np.asarray(model.tri_labels)
  assert (labels == head.CLASS["upper_lip"]).any() and (labels == head.CLASS["hair"]).any()
  pose = jnp.array([1.0, 0, 0, 0, 1, 0, 0, 0, 0.5])
  rest = np.asarray(head.forward(model, jnp.zeros(64), jnp.zeros(64), pose))
  np.testing.assert_allclose(rest, np.asarray(model.template) + [0, 0, 0.5], atol=1e-6)
  jaw = np.zeros(64, np.float32)
  jaw[head.EXPRESSION["jaw_open"]] = 1.0
  opened = np.asarray(head.forward(model, jnp.zeros(64), jaw, pose))
  moved = np.linalg.norm(opened - rest, axis=1) > 1e-4
  np.testing.assert_array_equal(moved, np.asarray(model.skin_weights)[:, 2] > 0)


def test_flame_converter_refuses_other_code(tmp_path):
  class Evil:
    def __reduce__(self):
      return (os.system, ("echo hacked",))
  path = tmp_path / "evil.pkl"
  with open(path, "wb") as f:
    pickle.dump({"v_template": Evil()}, f)
  with pytest.raises(ValueError, match="evil.pkl could not be read.*refusing to load"):
    head_flame.convert_flame(path)
  truncated = tmp_path / "cut.pkl"
  truncated.write_bytes(pickle.dumps({"v_template": np.zeros((3, 3))})[:20])
  with pytest.raises(ValueError, match="cut.pkl"):
    head_flame.convert_flame(truncated)


def _package_imports(module):
  """The vlogger_jax modules that vlogger_jax/<module>.py imports, at the top or in a function."""
  with open(os.path.join(REPO, "vlogger_jax", f"{module}.py")) as f:
    tree = ast.parse(f.read())
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name.startswith("vlogger_jax."))
    elif isinstance(node, ast.ImportFrom) and node.module == "vlogger_jax":
      found.update(f"vlogger_jax.{a.name}" for a in node.names)
    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vlogger_jax."):
      found.add(node.module)
  return {m.split(".")[1] for m in found}


def test_head_modules_import_no_circle():
  heads = ("head", "head_procedural", "head_flame")
  graph = {m: _package_imports(m) & set(heads) for m in heads}
  # The generator is a leaf (head.py imports it for load_default); the converter sits on top.
  assert graph["head_procedural"] == set(), graph
  assert "head_flame" not in graph["head"], graph
  assert "head_procedural" in graph["head"], graph
  for start in heads:  # no path leads back to where it started
    seen, todo = set(), list(graph[start])
    while todo:
      m = todo.pop()
      assert m != start, f"import circle through {start}: {graph}"
      if m not in seen:
        seen.add(m)
        todo.extend(graph[m])
  # All three take the head layout from contracts.py rather than defining it again.
  for m in heads:
    assert "contracts" in _package_imports(m), m
  # And at run time: the generator alone loads neither head.py nor the converter.
  code = ("import sys; import vlogger_jax.head_procedural; "
          "print(sorted(m for m in sys.modules if m.startswith('vlogger_jax.head')))")
  out = run_python(["-c", code]).stdout.strip()
  assert out == "['vlogger_jax.head_procedural']", out
