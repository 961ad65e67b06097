"""Fitting recovers known truth: synthetic clips' true landmarks, detector-like noise, some dropped."""

import numpy as np
import pytest

from vlogger_jax import fitting
from vlogger_jax import geometry
from vlogger_jax import head as head_lib
from vlogger_jax import motion_eval
from vlogger_jax.data import synthetic

SIZE = 256


@pytest.fixture(scope="module")
def model():
  return head_lib.load_default()


def _rotation_error_deg(pose_a, pose_b):
  ra, rb = geometry.rot6d_to_matrix(pose_a[..., :6]), geometry.rot6d_to_matrix(pose_b[..., :6])
  cos = (np.trace(np.swapaxes(ra, -1, -2) @ rb, axis1=-2, axis2=-1) - 1) / 2
  return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def test_fitting_recovers_the_truth_of_synthetic_clips_from_noisy_partial_landmarks(model):
  """True landmarks of two synthetic clips, detector-like noise, fitted; compared with the truth
  (docs/real_data.md states the tolerances and why)."""
  frames, rng = 16, np.random.default_rng(0)
  plans = [synthetic.plan_clip(s, num_frames=frames, resolution=SIZE, head_model=model)
           for s in (0, 1)]
  true = np.stack([np.asarray(fitting.project_landmarks(
      model, p.shape, p.expression, p.head_pose, p.fov, SIZE, SIZE)) for p in plans])
  # The fit runs on the landmark-only head: it must give the full head's landmarks.
  small = fitting.landmark_model(model)
  assert small.num_vertices < model.num_vertices // 10
  p = plans[0]
  np.testing.assert_allclose(np.asarray(fitting.project_landmarks(
      small, p.shape, p.expression, p.head_pose, p.fov, SIZE, SIZE)), true[0], atol=1e-3)
  # Detector-like: 1 px Gaussian noise, 10 % of the points missing, 3 % of them 15 px off, and
  # one frame of each clip without a face at all.
  obs = true + rng.normal(0, 1.0, true.shape)
  conf = (rng.uniform(size=true.shape[:-1]) > 0.1).astype(np.float32)
  wild = rng.uniform(size=true.shape[:-1]) < 0.03
  obs[wild] += rng.normal(0, 15.0, (int(wild.sum()), 2))
  conf[:, 7] = 0.0
  fit = fitting.fit(model, obs, conf, SIZE, SIZE)
  for i, p in enumerate(plans):
    lm_err = np.linalg.norm(fit["landmarks"][i] - true[i], axis=-1).mean()
    rot_err = _rotation_error_deg(p.head_pose, fit["head_pose"][i])
    mouth = motion_eval.pearson(motion_eval.mouth_opening(model, p.shape, p.expression),
                                motion_eval.mouth_opening(model, fit["shape"][i],
                                                          fit["expression"][i]))
    print(f"clip {i}: landmarks {lm_err:.2f} px from the truth, head pose {rot_err.mean():.2f} "
          f"deg (max {rot_err.max():.2f}), fov {p.fov:.1f} -> {fit['fov'][i]:.1f} deg, mouth "
          f"opening r = {mouth:.3f}")
    # The fitted landmarks lie closer to the truth than the 1 px noise (the missing frame too).
    assert lm_err < 1.0, lm_err
    assert np.linalg.norm(fit["landmarks"][i, 7] - true[i, 7], axis=-1).mean() < 2.0
    # Head pose within a few degrees (the identity shape and the rotation trade off slightly).
    assert rot_err.mean() < 3.0 and rot_err.max() < 6.0, rot_err
    # A head 0.5-1.5 m away shows little perspective, so the FOV is weakly determined: within
    # 12 degrees of the truth (the prior holds it near 35; the synthetic range is 22-48).
    assert abs(fit["fov"][i] - p.fov) < 12.0
    assert mouth > 0.8, mouth
  assert np.all(fit["error_px"] < 3.0)
