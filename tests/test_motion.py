"""Motion vector layout and normalisation."""

import jax.numpy as jnp
import numpy as np
import pytest

from vlogger_jax import geometry, motion


def _random_params(rng, t=7):
  aa = rng.normal(size=(t, 3)) * 0.3
  r6 = np.asarray(geometry.axis_angle_to_rot6d(aa.astype(np.float32)))
  pose = np.concatenate([r6, rng.normal(size=(t, 3)) * 0.05 + [0, 0, 0.6]], -1).astype(np.float32)
  expr = rng.normal(size=(t, 64)).astype(np.float32)
  kp = rng.uniform(size=(t, 75, 2)).astype(np.float32)
  return expr, pose, kp


@pytest.mark.parametrize("absolute", [False, True])
def test_pack_unpack_round_trip(absolute):
  rng = np.random.default_rng(0)
  expr, pose, kp = _random_params(rng)
  m = motion.pack(expr, pose, kp, pose[3], kp[3], absolute=absolute)
  assert m.shape == (7, motion.MOTION_DIM) == (7, 223)
  e2, p2, k2 = motion.unpack(m, pose[3], kp[3], absolute=absolute)
  np.testing.assert_allclose(e2, expr, atol=1e-6)
  np.testing.assert_allclose(p2, pose, atol=1e-5)
  np.testing.assert_allclose(k2, kp, atol=1e-6)
  if not absolute:  # the reference frame itself has zero residual
    np.testing.assert_allclose(m[3, motion.HEAD], motion.identity_head_pose_residual(), atol=1e-5)
    np.testing.assert_allclose(m[3, motion.BODY], 0, atol=1e-6)


def test_pack_works_in_jax():
  rng = np.random.default_rng(1)
  expr, pose, kp = _random_params(rng)
  m_np = motion.pack(expr, pose, kp, pose[0], kp[0])
  m_jx = motion.pack(jnp.asarray(expr), jnp.asarray(pose), jnp.asarray(kp), jnp.asarray(pose[0]),
                     jnp.asarray(kp[0]))
  np.testing.assert_allclose(np.asarray(m_jx), m_np, atol=1e-5)
  assert type(m_np) is np.ndarray  # NumPy stays NumPy: data workers never start JAX


def test_stats_normalise_and_save(tmp_path):
  rng = np.random.default_rng(2)
  v = rng.normal(3.0, 2.0, size=(500, 223)).astype(np.float32)
  v[:, 5] = 1.0  # a constant dimension keeps a floor on its std
  stats = motion.Stats.from_vectors(v)
  z = stats.normalize(v)
  np.testing.assert_allclose(z.mean(0)[:5], 0, atol=1e-4)
  np.testing.assert_allclose(z.std(0)[:5], 1, atol=1e-3)
  assert np.isfinite(z).all()
  stats.save(str(tmp_path / "s.json"))
  back = motion.Stats.load(str(tmp_path / "s.json"))
  np.testing.assert_allclose(back.denormalize(z), v, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="does not exist"):
    motion.Stats.load(str(tmp_path / "missing.json"))
