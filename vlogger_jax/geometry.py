"""Rotations, linear blend skinning and the full-perspective camera.

Conventions (every module that touches 3-D follows them):

- Rotation matrices act on column vectors: x' = R @ x. The 6-D encoding (Zhou et al. 2019) is the
  first two *columns* of R, concatenated: r6 = [R[:, 0], R[:, 1]]; the identity is (1, 0, 0, 0, 1, 0).
- Axis-angle is a 3-vector whose direction is the axis and whose norm is the angle in radians.
- Camera frame is OpenCV's: x right, y down, z forward (away from the camera, into the scene).
  Pixel coordinates are continuous: pixel column i covers [i, i + 1) and its centre is i + 0.5;
  the principal point is the image centre (W / 2, H / 2).
- The camera is parameterised by the diagonal field of view in degrees: the focal length in pixels
  is f = 0.5 * sqrt(H^2 + W^2) / tan(fov / 2), so the same parameters frame the same content at any
  resolution.

All functions are batched over leading dimensions, jit-able and float32.
"""

from typing import Sequence

import jax.numpy as jnp
import numpy as np

_EPS = 1e-8


def _xp(x):
  """NumPy for NumPy inputs, so data workers run these without JAX; jax.numpy otherwise."""
  return np if isinstance(x, (np.ndarray, np.generic)) else jnp


def _normalize(v, axis=-1):
  xp = _xp(v)
  return v / xp.sqrt(xp.maximum(xp.sum(v * v, axis=axis, keepdims=True), _EPS**2))


def rot6d_to_matrix(r6):
  """[..., 6] 6-D rotation (two columns) -> [..., 3, 3] rotation matrix via Gram-Schmidt.

  NumPy in, NumPy out; anything else goes through jax.numpy.
  """
  xp = _xp(r6)
  r6 = xp.asarray(r6, xp.float32)
  a1, a2 = r6[..., :3], r6[..., 3:6]
  b1 = _normalize(a1)
  b2 = _normalize(a2 - xp.sum(b1 * a2, axis=-1, keepdims=True) * b1)
  b3 = xp.cross(b1, b2)
  return xp.stack([b1, b2, b3], axis=-1)


def matrix_to_rot6d(mat):
  """[..., 3, 3] rotation matrix -> [..., 6] (first column, then second column)."""
  xp = _xp(mat)
  mat = xp.asarray(mat, xp.float32)
  return xp.concatenate([mat[..., :, 0], mat[..., :, 1]], axis=-1)


def axis_angle_to_matrix(aa):
  """[..., 3] axis-angle (radians) -> [..., 3, 3] rotation matrix (Rodrigues, exact at angle 0)."""
  aa = jnp.asarray(aa, jnp.float32)
  theta2 = jnp.sum(aa * aa, axis=-1)[..., None, None]
  theta = jnp.sqrt(jnp.maximum(theta2, _EPS))
  small = theta2 < 1e-8
  # Taylor series near zero keep the function smooth and its gradient finite at the identity.
  a = jnp.where(small, 1.0 - theta2 / 6.0, jnp.sin(theta) / theta)
  b = jnp.where(small, 0.5 - theta2 / 24.0, (1.0 - jnp.cos(theta)) / jnp.maximum(theta2, _EPS))
  x, y, z = aa[..., 0], aa[..., 1], aa[..., 2]
  zero = jnp.zeros_like(x)
  k = jnp.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(aa.shape[:-1] + (3, 3))
  eye = jnp.eye(3, dtype=jnp.float32)
  return eye + a * k + b * (k @ k)


def matrix_to_quaternion(mat):
  """[..., 3, 3] rotation matrix -> [..., 4] unit quaternion (w, x, y, z) with w >= 0."""
  m = jnp.asarray(mat, jnp.float32)
  m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
  m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
  m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
  # Four candidate solutions, each well conditioned where its leading term is large; pick the best.
  t0 = 1.0 + m00 + m11 + m22
  t1 = 1.0 + m00 - m11 - m22
  t2 = 1.0 - m00 + m11 - m22
  t3 = 1.0 - m00 - m11 + m22
  q0 = jnp.stack([t0, m21 - m12, m02 - m20, m10 - m01], -1)
  q1 = jnp.stack([m21 - m12, t1, m10 + m01, m02 + m20], -1)
  q2 = jnp.stack([m02 - m20, m10 + m01, t2, m21 + m12], -1)
  q3 = jnp.stack([m10 - m01, m02 + m20, m21 + m12, t3], -1)
  ts = jnp.stack([t0, t1, t2, t3], -1)
  qs = jnp.stack([q0, q1, q2, q3], -2)
  best = jnp.argmax(ts, axis=-1)
  q = jnp.take_along_axis(qs, best[..., None, None], axis=-2)[..., 0, :]
  q = _normalize(q)
  return jnp.where(q[..., :1] < 0, -q, q)


def quaternion_to_matrix(q):
  """[..., 4] quaternion (w, x, y, z), any norm -> [..., 3, 3] rotation matrix."""
  q = _normalize(jnp.asarray(q, jnp.float32))
  w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
  rows = [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
          2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
          2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]
  return jnp.stack(rows, -1).reshape(q.shape[:-1] + (3, 3))


def matrix_to_axis_angle(mat):
  """[..., 3, 3] rotation matrix -> [..., 3] axis-angle with angle in [0, pi]."""
  q = matrix_to_quaternion(mat)
  w, v = q[..., :1], q[..., 1:]
  s = jnp.sqrt(jnp.sum(v * v, axis=-1, keepdims=True))
  angle = 2.0 * jnp.arctan2(s, w)
  # angle / s -> 2 / w as s -> 0; the where keeps the small-angle branch free of 0/0.
  scale = jnp.where(s < 1e-6, 2.0 / jnp.maximum(w, _EPS), angle / jnp.maximum(s, 1e-6))
  return v * scale


def rot6d_to_axis_angle(r6):
  """[..., 6] -> [..., 3]."""
  return matrix_to_axis_angle(rot6d_to_matrix(r6))


def axis_angle_to_rot6d(aa):
  """[..., 3] -> [..., 6]."""
  return matrix_to_rot6d(axis_angle_to_matrix(aa))


def euler_xyz_to_matrix(angles):
  """[..., 3] angles (rx, ry, rz) in radians -> [..., 3, 3] = Rz @ Ry @ Rx (x applied first)."""
  angles = jnp.asarray(angles, jnp.float32)
  rx = axis_angle_to_matrix(angles[..., 0:1] * jnp.array([1.0, 0.0, 0.0]))
  ry = axis_angle_to_matrix(angles[..., 1:2] * jnp.array([0.0, 1.0, 0.0]))
  rz = axis_angle_to_matrix(angles[..., 2:3] * jnp.array([0.0, 0.0, 1.0]))
  return rz @ ry @ rx


def forward_kinematics(local_rot, joints, parents: Sequence[int]):
  """Local rotations [..., J, 3, 3] and rest joints [..., J, 3] -> world (rot [..., J, 3, 3], pos [..., J, 3]).

  `parents` is a static sequence with parents[0] == -1 and parents[j] < j.
  """
  rots, poss = [], []
  for j, p in enumerate(parents):
    if p < 0:
      rots.append(local_rot[..., j, :, :])
      poss.append(joints[..., j, :])
    else:
      offset = joints[..., j, :] - joints[..., p, :]
      rots.append(rots[p] @ local_rot[..., j, :, :])
      poss.append(poss[p] + jnp.einsum("...ij,...j->...i", rots[p], offset))
  return jnp.stack(rots, axis=-3), jnp.stack(poss, axis=-2)


def linear_blend_skinning(vertices, joints, local_rot, weights, parents: Sequence[int]):
  """Rest vertices [..., V, 3], rest joints [..., J, 3], local rotations [..., J, 3, 3], weights [V, J] -> posed [..., V, 3].

  Every joint rotates about its own rest position; the root's rotation is therefore applied about
  the root joint, and a global translation is added by the caller.
  """
  world_rot, world_pos = forward_kinematics(local_rot, joints, parents)
  # Skinning transform of joint j: x -> R_j (x - rest_j) + posed_j.
  trans = world_pos - jnp.einsum("...jab,...jb->...ja", world_rot, joints)
  blended_rot = jnp.einsum("vj,...jab->...vab", weights, world_rot)
  blended_t = jnp.einsum("vj,...ja->...va", weights, trans)
  return jnp.einsum("...vab,...vb->...va", blended_rot, vertices) + blended_t


def focal_from_fov(fov_deg, height: int, width: int):
  """Diagonal field of view in degrees [...] -> focal length in pixels [...]."""
  half_diag = 0.5 * jnp.sqrt(jnp.float32(height) ** 2 + jnp.float32(width) ** 2)
  return half_diag / jnp.tan(0.5 * jnp.deg2rad(jnp.asarray(fov_deg, jnp.float32)))


def project(points, fov_deg, height: int, width: int):
  """Camera-frame points [..., N, 3] and diagonal FOV [...] (degrees) -> pixels [..., N, 2] (x, y) and depth [..., N]."""
  points = jnp.asarray(points, jnp.float32)
  f = jnp.asarray(focal_from_fov(fov_deg, height, width))[..., None]
  z = points[..., 2]
  safe_z = jnp.where(jnp.abs(z) < 1e-6, 1e-6, z)
  x = f * points[..., 0] / safe_z + 0.5 * width
  y = f * points[..., 1] / safe_z + 0.5 * height
  return jnp.stack([x, y], axis=-1), z


def unproject(pixels, depth, fov_deg, height: int, width: int):
  """Pixels [..., N, 2] and depth [..., N] -> camera-frame points [..., N, 3] (inverse of `project`)."""
  f = jnp.asarray(focal_from_fov(fov_deg, height, width))[..., None]
  x = (pixels[..., 0] - 0.5 * width) * depth / f
  y = (pixels[..., 1] - 0.5 * height) * depth / f
  return jnp.stack([x, y, depth], axis=-1)


def apply_rigid(points, r6, translation):
  """Points [..., N, 3], 6-D rotation [..., 6], translation [..., 3] -> R @ p + t, [..., N, 3]."""
  rot = rot6d_to_matrix(r6)
  return jnp.einsum("...ab,...nb->...na", rot, points) + translation[..., None, :]


__all__ = [
    "rot6d_to_matrix", "matrix_to_rot6d", "axis_angle_to_matrix", "matrix_to_axis_angle",
    "matrix_to_quaternion", "quaternion_to_matrix", "rot6d_to_axis_angle", "axis_angle_to_rot6d",
    "euler_xyz_to_matrix", "forward_kinematics", "linear_blend_skinning", "focal_from_fov",
    "project", "unproject", "apply_rigid",
]
