"""Motion metrics through the head model."""

import numpy as np
import pytest

from vlogger_jax import head as head_lib
from vlogger_jax import motion_eval


@pytest.fixture(scope="module")
def model():
  return head_lib.load_default()


def test_mouth_opening_grows_with_jaw_and_lip_error_is_zero_for_equal(model):
  t = 5
  expr = np.zeros((t, 64), np.float32)
  expr[:, 0] = np.linspace(0.0, 1.0, t)
  shape = np.zeros(64, np.float32)
  opening = motion_eval.mouth_opening(model, shape, expr)
  assert np.all(np.diff(opening) > 0) and opening[-1] > opening[0] + 5  # millimetres
  assert motion_eval.lip_error(model, shape, expr, expr) == pytest.approx(0.0, abs=1e-6)
  closed = np.zeros_like(expr)
  assert motion_eval.lip_error(model, shape, expr, closed) > 1.0


def test_jitter_is_zero_for_constant_velocity_and_positive_for_shaking(model):
  t = 12
  shape = np.zeros(64, np.float32)
  expr = np.zeros((t, 64), np.float32)
  pose = np.tile(head_lib.identity_head_pose(0.6), (t, 1)).astype(np.float32)
  pose[:, 6] = np.linspace(0, 0.01, t)              # steady drift: no jerk
  assert motion_eval.jitter(model, shape, expr, pose) < 1.0    # float32 rounding only
  shaky = pose.copy()
  shaky[::2, 7] += 0.002
  assert motion_eval.jitter(model, shape, expr, shaky) > 1000


def test_diversity_and_pearson():
  same = np.ones((3, 10, 4))
  assert motion_eval.diversity(same) == 0
  assert motion_eval.diversity(np.random.default_rng(0).normal(size=(3, 10, 4))) > 0.5
  x = np.arange(10.0)
  assert motion_eval.pearson(x, 2 * x + 1) == pytest.approx(1.0)
  assert motion_eval.pearson(x, np.zeros(10)) == 0.0
