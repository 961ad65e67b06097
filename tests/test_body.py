"""The 75-keypoint topology, mirroring and visibility."""

import numpy as np
import jax.numpy as jnp
import pytest

from vlogger_jax import body


def test_topology():
  assert body.NUM_KEYPOINTS == 75 == len(body.KEYPOINT_NAMES)
  assert body.KEYPOINT["left_shoulder"] == 11 and body.KEYPOINT["right_wrist"] == 16
  assert body.KEYPOINT["left_hand_wrist"] == 33 and body.KEYPOINT["right_hand_pinky_tip"] == 74
  assert body.EDGES.shape == (35 + 2 * 21, 2) and len(body.EDGE_PARTS) == len(body.EDGES)
  assert body.EDGES.min() >= 0 and body.EDGES.max() < 75
  # Every keypoint belongs to exactly one part group; hand edges stay inside their hand.
  groups = sorted(i for g in body.PART_GROUPS.values() for i in g)
  assert groups == list(range(75))
  left_hand = body.PART_NAMES.index("left_hand")
  hand_edges = body.EDGES[body.EDGE_PARTS == left_hand]
  assert len(hand_edges) == 21 and hand_edges.min() >= 33 and hand_edges.max() <= 53
  left_arm = body.EDGES[body.EDGE_PARTS == body.PART_NAMES.index("left_arm")]
  assert {11, 13}.issubset(set(left_arm.ravel())) or (11, 13) in map(tuple, body.EDGES)
  assert (13, 15) in [tuple(e) for e in left_arm]


def test_flip_swaps_sides_and_is_an_involution():
  kp, vis = body.rest_pose()
  vis = vis.copy()
  vis[body.LEFT_HAND_OFFSET:body.RIGHT_HAND_OFFSET] = 0.0  # left hand missing
  fkp, fvis = body.flip_horizontal(kp, vis)
  ls, rs = body.KEYPOINT["left_shoulder"], body.KEYPOINT["right_shoulder"]
  np.testing.assert_allclose(np.asarray(fkp[ls]), [1 - kp[rs, 0], kp[rs, 1]], atol=1e-6)
  assert float(fvis[body.RIGHT_HAND_OFFSET]) == 0.0 and float(fvis[body.LEFT_HAND_OFFSET]) == 1.0
  back_kp, back_vis = body.flip_horizontal(fkp, fvis)
  np.testing.assert_allclose(np.asarray(back_kp), kp, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(back_vis), vis)


def test_rest_pose_is_a_person_in_the_image():
  kp, vis = body.rest_pose()
  assert kp.shape == (75, 2) and vis.shape == (75,)
  ls, rs = body.KEYPOINT["left_shoulder"], body.KEYPOINT["right_shoulder"]
  assert kp[ls, 0] > kp[rs, 0]  # subject's left appears on the image's right
  assert kp[body.KEYPOINT["nose"], 1] < kp[ls, 1] < kp[body.KEYPOINT["left_elbow"], 1]
  shown = vis > 0
  assert shown[:23].sum() >= 15 and shown[33:].all()  # upper body and both hands in frame
  assert 0 <= kp[shown].min() and kp[shown].max() <= 1


def test_visibility_and_sanitize():
  kp, vis = body.rest_pose()
  kp = kp.copy()
  vis = vis.copy()
  kp[13] = np.nan  # left elbow lost
  vis[14] = 0.2  # right elbow unsure
  clean_kp, clean_vis = body.sanitize(kp, vis)
  assert np.isfinite(np.asarray(clean_kp)).all() and float(clean_vis[13]) == 0.0
  visible = np.asarray(body.is_visible(jnp.asarray(kp), jnp.asarray(vis)))
  assert not visible[13] and not visible[14] and visible[11]
  ev = np.asarray(body.edge_visible(jnp.asarray(kp), jnp.asarray(vis)))
  for (a, b), e in zip(body.EDGES, ev):
    assert e == (visible[a] and visible[b])


def test_shape_errors_name_the_input():
  with pytest.raises(ValueError, match=r"body keypoints have shape \(4, 33, 2\)"):
    body.check_shapes(np.zeros((4, 33, 2)), np.zeros((4, 33)))
  with pytest.raises(ValueError, match="body visibility"):
    body.check_shapes(np.zeros((4, 75, 2)), np.zeros((4, 74)))


def test_to_pixels_convention():
  kp = np.zeros((75, 2), np.float32)
  kp[0] = (0.5 / 64, 1.0)  # centre of pixel column 0, bottom edge
  px = np.asarray(body.to_pixels(kp, 32, 64))
  np.testing.assert_allclose(px[0], [0.5, 32.0])
