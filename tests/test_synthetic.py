"""Tests for the synthetic talking-human generator (vlogger_jax/data/synthetic.py), on small clips."""

import numpy as np
import pytest

from vlogger_jax import contracts
from vlogger_jax import geometry
from vlogger_jax import head as head_lib
from vlogger_jax import render
from vlogger_jax.data import schema
from vlogger_jax.data import synthetic

FRAMES, SIZE = 48, 64
E = head_lib.EXPRESSION


@pytest.fixture(scope="module")
def model():
  return head_lib.load_default()


@pytest.fixture(scope="module")
def clips(model):
  # Seeds 2 (a torso framing with hands) and 1 (a head-and-shoulders framing).
  return synthetic.generate_clips([2, 1], FRAMES, SIZE, model)


def test_schema_and_determinism(clips, model):
  for clip in clips:
    schema.validate_clip(clip, clip["id"])
  assert clips[0]["id"] == "synthetic-00000002"
  again = synthetic.generate_clip(2, FRAMES, SIZE, model)
  for key, value in clips[0].items():
    np.testing.assert_array_equal(np.asarray(again[key]), np.asarray(value), err_msg=key)
  assert not np.array_equal(clips[0]["frames"], clips[1]["frames"])
  assert not np.array_equal(clips[0]["audio"][:1000], clips[1]["audio"][:1000])
  assert not np.allclose(clips[0]["shape"], clips[1]["shape"])


def test_frames_move(clips):
  frames = clips[0]["frames"].astype(np.float32)
  assert np.abs(np.diff(frames, axis=0)).mean() > 0.1  # a talking person, not a still image
  assert frames.std() > 10  # not a blank image


# The mouth's relation to the speech (phonemes, visemes, timing) is tested in
# tests/test_synthetic_speech.py.


def test_blinks_hide_the_irises(model):
  # The first seed whose 96 frames hold a full blink; its semantic render loses the iris pixels.
  plan = next(p for p in (synthetic.plan_clip(s, 96, SIZE, model) for s in range(20))
              if p.expression[:, E["blink_left"]].max() > 0.95)
  blink = plan.expression[:, E["blink_left"]]
  closed, open_ = int(np.argmax(blink)), int(np.argmin(blink))
  idx = np.array([closed, open_])
  ctrl = render.render_controls(model, plan.shape, plan.expression[idx], plan.head_pose[idx],
                                plan.body_keypoints[idx], plan.body_visibility[idx], plan.fov,
                                SIZE)
  iris = np.asarray(ctrl["semantic"][..., head_lib.CLASS["left_iris"]]
                    + ctrl["semantic"][..., head_lib.CLASS["right_iris"]]).sum(axis=(1, 2))
  assert iris[1] >= 2 and iris[0] <= 0.2 * iris[1]


def test_blinks_and_gaze_are_brief_and_varied(model):
  plan = synthetic.plan_clip(5, 96, SIZE, model)
  closed = plan.expression[:, E["blink_left"]] > 0.95
  starts = np.flatnonzero(np.diff(closed.astype(int)) == 1)
  assert 1 <= len(starts) <= 3  # 4 s with a 2-6 s gap between blinks
  assert closed.sum() <= 2 * len(starts) + 2  # each lasts about 150 ms (at most 2 frames shut)
  gaze = plan.expression[:, E["gaze_horizontal"]]
  assert np.ptp(gaze) > 0.05


def test_face_keypoints_follow_the_head(model):
  plan = synthetic.plan_clip(2, FRAMES, SIZE, model)
  verts = head_lib.forward(model, plan.shape, plan.expression, plan.head_pose)
  lms = head_lib.landmarks(model, verts)
  names = model.landmark_names
  pix, _ = geometry.project(lms, plan.fov, SIZE, SIZE)
  pix = np.asarray(pix) / SIZE
  kp = plan.body_keypoints
  np.testing.assert_allclose(kp[:, 0], pix[:, names.index("nose_bridge_3")], atol=1e-4)
  eye_l = pix[:, names.index("left_iris_centre")]
  np.testing.assert_allclose(kp[:, 2], eye_l, atol=1e-4)
  mouth = 0.5 * (pix[:, names.index("outer_lip_0")] + pix[:, names.index("outer_lip_6")])
  np.testing.assert_allclose(0.5 * (kp[:, 9] + kp[:, 10]), mouth, atol=1e-4)
  # The subject's left eye and ear appear on the image's right in a frontal-ish view.
  assert np.all(kp[:, 2, 0] > kp[:, 5, 0]) and np.all(kp[:, 7, 0] > kp[:, 8, 0])


def test_head_above_body_in_the_frame(clips, model):
  clip = clips[0]
  plan = synthetic.plan_clip(2, FRAMES, SIZE, model)
  # The first frame with the left palm well inside the image (the hands rise and fall with speech).
  t = int(np.argmax(clip["body_keypoints"][:-1, 33 + 9, 1] < 0.95))
  two = slice(t, t + 2)  # two frames, the shape the blink test compiles too
  ctrl = render.render_controls(model, clip["shape"], clip["expression"][two],
                                clip["head_pose"][two], clip["body_keypoints"][two],
                                clip["body_visibility"][two], clip["fov"], SIZE)
  mask = np.asarray(ctrl["mask"][0, ..., 0]) > 0
  head_rows = np.flatnonzero(mask.any(1))
  kp = clip["body_keypoints"][t] * SIZE
  shoulders_y = kp[11:13, 1].mean()
  assert head_rows.size and head_rows.min() < shoulders_y
  # The frame shows a shaded head where the head renders, the shirt at the chest and skin on the
  # palm; shading scales colours, so compare chromaticities.
  frame = clip["frames"][t].astype(np.float32)
  assert frame[mask].std() > 5

  def chroma(rgb):
    rgb = np.asarray(rgb, np.float64)
    return rgb / max(rgb.sum(), 1e-6)

  chest = np.round(0.5 * (kp[11] + kp[12]) + [0, 0.3 * abs(kp[11, 0] - kp[12, 0])]).astype(int)
  assert not mask[chest[1], chest[0]]
  assert np.abs(chroma(frame[chest[1], chest[0]]) - chroma(plan.style["shirt"])).max() < 0.05
  palm = np.round(kp[33 + 9]).astype(int)  # left middle-finger knuckle
  assert clip["body_visibility"][t, 33 + 9] > 0
  assert np.abs(chroma(frame[palm[1], palm[0]]) - chroma(plan.style["skin"])).max() < 0.05


def test_bad_arguments(model):
  with pytest.raises(ValueError, match="even resolution"):
    synthetic.plan_clip(0, 10, 63, model)
  with pytest.raises(ValueError, match="num_frames"):
    synthetic.plan_clip(0, 0, 64, model)
