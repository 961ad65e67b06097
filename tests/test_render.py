"""The rasterizer against exact references, and the control images of the procedural head."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlogger_jax import body
from vlogger_jax import geometry
from vlogger_jax import head
from vlogger_jax import head_procedural
from vlogger_jax import render

SIZE = 128


def _inside(px, py, tri):
  """Reference point-in-triangle test (edges inclusive) in float64."""
  (ax, ay), (bx, by), (cx, cy) = np.asarray(tri, np.float64)[:, :2]
  edge = lambda x0, y0, x1, y1: (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)
  w = [edge(bx, by, cx, cy), edge(cx, cy, ax, ay), edge(ax, ay, bx, by)]
  s = np.sign((bx - ax) * (cy - ay) - (by - ay) * (cx - ax))
  return (w[0] * s >= 0) & (w[1] * s >= 0) & (w[2] * s >= 0)


def _reference_mask(tri, h, w):
  py, px = np.mgrid[0:h, 0:w] + 0.5
  return _inside(px, py, tri)


def test_one_triangle_covers_exactly_the_pixel_centres_inside():
  tri = np.array([[2.3, 1.7, 1.0], [13.2, 4.1, 1.0], [5.6, 12.8, 1.0]], np.float32)
  frags = render.rasterize(tri[None], np.array([[0, 1, 2]]), 16, 20)
  expected = _reference_mask(tri, 16, 20)
  assert 30 < expected.sum() < 100
  np.testing.assert_array_equal(np.asarray(frags.mask[0]), expected)
  # Barycentrics reproduce the pixel centre (constant depth, so screen = perspective weights).
  py, px = np.nonzero(expected)
  pos = np.einsum("nk,kd->nd", np.asarray(frags.bary[0])[py, px], tri[:, :2])
  np.testing.assert_allclose(pos, np.stack([px + 0.5, py + 0.5], -1), atol=1e-4)


def test_nearer_triangle_wins_in_either_order():
  far = [[1.0, 1.0, 3.0], [30.0, 2.0, 3.0], [4.0, 28.0, 3.0]]
  near = [[6.0, 5.0, 1.5], [28.0, 20.0, 1.5], [10.0, 30.0, 1.5]]
  for order in ((far, near), (near, far)):
    verts = np.array(order[0] + order[1], np.float32)[None]
    frags = render.rasterize(verts, np.array([[0, 1, 2], [3, 4, 5]]), 32, 32)
    near_id = 1 if order[1] is near else 0
    both = _reference_mask(np.array(far), 32, 32) & _reference_mask(np.array(near), 32, 32)
    assert both.sum() > 50
    assert (np.asarray(frags.tri_id[0])[both] == near_id).all()
    np.testing.assert_allclose(np.asarray(frags.depth[0])[both], 1.5, rtol=1e-5)


def test_triangle_larger_than_the_window_is_fully_drawn():
  tri = np.array([[-5.0, -3.0, 1.0], [70.0, 6.0, 1.0], [8.0, 62.0, 1.0]], np.float32)
  frags = render.rasterize(tri[None], np.array([[0, 1, 2]]), 48, 56)
  expected = _reference_mask(tri, 48, 56)
  assert expected.sum() > 1000  # far larger than the smallest (4 x 4) splat window
  np.testing.assert_array_equal(np.asarray(frags.mask[0]), expected)


def test_chunked_splat_matches_single_pass_and_perspective_depth():
  rng = np.random.RandomState(0)
  centres = rng.uniform(0, 40, size=(300, 1, 2))
  xy = centres + rng.normal(scale=3.0, size=(300, 3, 2))
  z = rng.uniform(1.0, 5.0, size=(300, 1, 1)) + rng.uniform(0, 0.5, size=(300, 3, 1))
  verts = np.concatenate([xy, z], -1).reshape(1, -1, 3).astype(np.float32)
  verts = np.concatenate([verts, verts[:, ::-1]], 0)  # two frames
  faces = np.arange(900).reshape(300, 3)
  whole = render.rasterize(verts, faces, 40, 40)
  chunked = render.rasterize(verts, faces, 40, 40, budget=2000)
  np.testing.assert_array_equal(np.asarray(whole.tri_id), np.asarray(chunked.tri_id))
  # Perspective-correct depth: a slanted plane in camera space, rendered, matches ray casting.
  fov, h, w = 50.0, 32, 32
  corners = np.array([[[-0.5, -0.5, 1.0], [0.6, -0.4, 3.0], [-0.2, 0.6, 2.0]]], np.float32)
  px, depth = geometry.project(corners, fov, h, w)
  frags = render.rasterize(jnp.concatenate([px, depth[..., None]], -1), np.array([[0, 1, 2]]),
                           h, w)
  f = float(geometry.focal_from_fov(fov, h, w))
  normal = np.cross(corners[0, 1] - corners[0, 0], corners[0, 2] - corners[0, 0])
  ys, xs = np.nonzero(np.asarray(frags.mask[0]))
  rays = np.stack([(xs + 0.5 - w / 2) / f, (ys + 0.5 - h / 2) / f, np.ones_like(xs, float)], -1)
  t = (corners[0, 0] @ normal) / (rays @ normal)
  np.testing.assert_allclose(np.asarray(frags.depth[0])[ys, xs], t, rtol=1e-4)


@functools.lru_cache(maxsize=None)
def _controls(size, frames):
  """Renders the procedural head for named expression frames (cached per size)."""
  model = head.model_from_dict(head_procedural.build_procedural_asset())
  expr = np.zeros((len(frames), 64), np.float32)
  for i, settings in enumerate(frames):
    for name, value in settings:
      expr[i, head.EXPRESSION[name]] = value
  kp, vis = body.rest_pose()
  n = len(frames)
  fn = jax.jit(render.render_controls, static_argnames=("size", "budget"))
  out = fn(model, jnp.zeros(64), expr, head.identity_head_pose(0.75, (n,)),
           np.broadcast_to(kp, (n, 75, 2)), np.broadcast_to(vis, (n, 75)), 30.0, size=size)
  return jax.tree.map(np.asarray, out)


FRAMES = ((), (("jaw_open", 1.0),), (("blink_left", 1.0), ("blink_right", 1.0)))


@pytest.fixture(scope="module")
def controls():
  return _controls(SIZE, FRAMES)


def _centroid(sem, name):
  ys, xs = np.nonzero(sem[..., head.CLASS[name]])
  assert len(ys) > 0, f"class {name} is not visible"
  return xs.mean() + 0.5, ys.mean() + 0.5


def test_control_outputs_and_ranges(controls):
  for key, channels in (("dense", 3), ("semantic", head.NUM_CLASSES), ("skeleton", 3), ("rgb", 3),
                        ("mask", 1)):
    arr = controls[key]
    assert arr.shape == (3, SIZE, SIZE, channels), key
    assert arr.min() >= 0.0 and arr.max() <= 1.0, key
  fg = controls["mask"][..., 0] > 0
  assert 0.15 < fg.mean() < 0.8
  np.testing.assert_array_equal(controls["semantic"].sum(-1), fg.astype(np.float32))
  assert (controls["rgb"][~fg] == 0).all() and (controls["dense"][~fg] == 0).all()
  # The dense map is smooth and varies on the surface: x grows to the image right.
  dense = controls["dense"][0]
  row = dense[SIZE // 2][fg[0, SIZE // 2]]
  assert row[-1, 0] > row[0, 0] + 0.5
  net_in = render.controls_to_input(controls)
  assert net_in.shape == (3, SIZE, SIZE, render.CONTROL_CHANNELS)


def test_semantic_classes_sit_where_they_should(controls):
  sem = controls["semantic"][0]
  lx, ly = _centroid(sem, "left_eye")
  rx, ry = _centroid(sem, "right_eye")
  _, nose_y = _centroid(sem, "nose")
  _, mouth_y = _centroid(sem, "upper_lip")
  _, lower_y = _centroid(sem, "lower_lip")
  _, brow_y = _centroid(sem, "left_brow")
  _, hair_y = _centroid(sem, "hair")
  assert lx > SIZE / 2 > rx  # the subject's left eye is on the image's right
  assert _centroid(sem, "left_iris")[0] > SIZE / 2 > _centroid(sem, "right_iris")[0]
  assert _centroid(sem, "left_brow")[0] > SIZE / 2 > _centroid(sem, "right_brow")[0]
  assert hair_y < brow_y < min(ly, ry) < nose_y < mouth_y < lower_y
  assert abs(ly - ry) < 1.0  # frontal and level


def test_jaw_opens_the_mouth_and_blink_hides_the_iris(controls):
  sem = controls["semantic"]
  mouth = sem[..., head.CLASS["mouth_interior"]].sum((1, 2))
  teeth = sem[..., head.CLASS["teeth"]].sum((1, 2))
  assert mouth[1] > mouth[0] + 20 and teeth[1] > teeth[0]
  iris = sem[..., head.CLASS["left_iris"]].sum((1, 2)) + sem[..., head.CLASS["right_iris"]].sum(
      (1, 2))
  assert iris[0] > 10 and iris[2] == 0
  sclera = sem[..., head.CLASS["left_eye"]].sum((1, 2))
  assert sclera[2] < 0.2 * sclera[0]


def test_same_parameters_render_at_any_resolution(controls):
  small = _controls(64, FRAMES[:1])
  big = controls["mask"][0, ..., 0].reshape(64, 2, 64, 2).mean((1, 3))
  small_mask = small["mask"][0, ..., 0]
  agree = ((big > 0.5) == (small_mask > 0.5)).mean()
  assert agree > 0.97
  for name in ("left_iris", "nose", "upper_lip", "hair"):
    cb = np.array(_centroid(controls["semantic"][0], name)) / SIZE
    cs = np.array(_centroid(small["semantic"][0], name)) / 64
    np.testing.assert_allclose(cb, cs, atol=0.02)


def test_skeleton_colours_visibility_and_thickness():
  kp, vis = body.rest_pose()
  vis = vis.copy()
  vis[body.KEYPOINT["right_elbow"]] = 0.0
  images = {s: np.asarray(render.draw_skeleton(kp[None], vis[None], s, s))[0] for s in (64, 128)}
  img = images[128]
  mid = 0.5 * (kp[body.KEYPOINT["left_shoulder"]] + kp[body.KEYPOINT["left_elbow"]]) * 128
  colour = img[int(mid[1]), int(mid[0])]
  np.testing.assert_allclose(colour, body.PART_COLOURS[body.PART_NAMES.index("left_arm")],
                             atol=0.02)
  hidden = 0.5 * (kp[body.KEYPOINT["right_shoulder"]] + kp[body.KEYPOINT["right_elbow"]]) * 128
  assert img[int(hidden[1]), int(hidden[0])].max() == 0.0
  wrist = kp[body.KEYPOINT["left_hand_index_tip"]] * 128
  assert img[int(wrist[1]), int(wrist[0])].max() > 0.3  # hands are drawn
  drawn = {s: (im.max(-1) > 0.5).sum() for s, im in images.items()}
  assert 2.5 < drawn[128] / drawn[64] < 5.0  # line width scales with resolution
