"""Rotations, skinning and the camera against hand-computed values."""

import numpy as np
import jax.numpy as jnp

from vlogger_jax import geometry


def _random_axis_angle(n, seed=0, max_angle=3.1):
  rng = np.random.RandomState(seed)
  axis = rng.normal(size=(n, 3))
  axis /= np.linalg.norm(axis, axis=1, keepdims=True)
  return (axis * rng.uniform(0, max_angle, size=(n, 1))).astype(np.float32)


def test_rotation_round_trips():
  aa = _random_axis_angle(200)
  mat = geometry.axis_angle_to_matrix(aa)
  np.testing.assert_allclose(np.asarray(mat @ jnp.swapaxes(mat, -1, -2)),
                             np.broadcast_to(np.eye(3), (200, 3, 3)), atol=1e-5)
  np.testing.assert_allclose(np.linalg.det(np.asarray(mat)), 1.0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(geometry.matrix_to_axis_angle(mat)), aa, atol=2e-4)
  r6 = geometry.matrix_to_rot6d(mat)
  assert r6.shape == (200, 6)
  np.testing.assert_allclose(np.asarray(geometry.rot6d_to_matrix(r6)), np.asarray(mat), atol=1e-5)
  np.testing.assert_allclose(np.asarray(geometry.rot6d_to_axis_angle(
      geometry.axis_angle_to_rot6d(aa))), aa, atol=2e-4)
  q = geometry.matrix_to_quaternion(mat)
  np.testing.assert_allclose(np.asarray(geometry.quaternion_to_matrix(q)), np.asarray(mat),
                             atol=1e-5)


def test_rot6d_gram_schmidt_and_identity():
  np.testing.assert_allclose(np.asarray(geometry.rot6d_to_matrix(jnp.array([1., 0, 0, 0, 1, 0]))),
                             np.eye(3), atol=1e-7)
  # Non-orthonormal input still gives a rotation whose first column follows the first 3 numbers.
  mat = np.asarray(geometry.rot6d_to_matrix(jnp.array([2.0, 0, 0, 1.0, 3.0, 0])))
  np.testing.assert_allclose(mat, np.eye(3), atol=1e-6)
  np.testing.assert_allclose(np.asarray(geometry.axis_angle_to_matrix(jnp.zeros(3))), np.eye(3))


def test_axis_angle_matches_hand_rotation():
  # 90 degrees about +z takes x to y.
  mat = np.asarray(geometry.axis_angle_to_matrix(jnp.array([0, 0, np.pi / 2])))
  np.testing.assert_allclose(mat @ np.array([1.0, 0, 0]), [0, 1, 0], atol=1e-6)


def test_skinning_zero_pose_and_rigid_child():
  rng = np.random.RandomState(0)
  parents = (-1, 0, 1)
  joints = np.array([[0, 0, 0], [0, 1, 0], [0, 2, 0]], np.float32)
  verts = rng.normal(size=(50, 3)).astype(np.float32)
  weights = rng.dirichlet(np.ones(3), size=50).astype(np.float32)
  eye = jnp.broadcast_to(jnp.eye(3), (3, 3, 3))
  out = geometry.linear_blend_skinning(verts, joints, eye, weights, parents)
  np.testing.assert_allclose(np.asarray(out), verts, atol=1e-6)
  # Rotating joint 1 moves vertices bound to joints 1 and 2 rigidly about joint 1.
  rot = np.asarray(geometry.axis_angle_to_matrix(jnp.array([0.3, -0.2, 0.5])))
  local = np.stack([np.eye(3), rot, np.eye(3)]).astype(np.float32)
  hard = np.zeros_like(weights)
  hard[:25, 0] = 1
  hard[25:, 2] = 1
  out = np.asarray(geometry.linear_blend_skinning(verts, joints, local, hard, parents))
  np.testing.assert_allclose(out[:25], verts[:25], atol=1e-6)
  expected = (verts[25:] - joints[1]) @ rot.T + joints[1]
  np.testing.assert_allclose(out[25:], expected, atol=1e-5)


def test_projection_by_hand_and_diagonal_fov():
  h, w, fov = 120, 160, 60.0
  f = 0.5 * np.hypot(h, w) / np.tan(np.deg2rad(fov / 2))
  np.testing.assert_allclose(float(geometry.focal_from_fov(fov, h, w)), f, rtol=1e-6)
  pt = np.array([[0.1, -0.05, 2.0]], np.float32)
  px, z = geometry.project(pt, fov, h, w)
  np.testing.assert_allclose(np.asarray(px)[0], [f * 0.05 + 80, -f * 0.025 + 60], rtol=1e-5)
  assert float(z[0]) == 2.0
  # A ray at half the diagonal FOV along the image diagonal lands on the image corner.
  half = np.deg2rad(fov / 2)
  diag = np.array([w, h]) / np.hypot(w, h)
  ray = np.array([[diag[0] * np.tan(half), diag[1] * np.tan(half), 1.0]], np.float32) * 3.0
  px, _ = geometry.project(ray, fov, h, w)
  np.testing.assert_allclose(np.asarray(px)[0], [w, h], atol=1e-3)
  # Same parameters at another resolution scale with it (resolution independence).
  px2, _ = geometry.project(pt, fov, 2 * h, 2 * w)
  px1, _ = geometry.project(pt, fov, h, w)
  np.testing.assert_allclose(np.asarray(px2), 2 * np.asarray(px1), rtol=1e-5)
  back = geometry.unproject(px1, jnp.array([2.0]), fov, h, w)
  np.testing.assert_allclose(np.asarray(back), pt, atol=1e-5)
