"""DPM-Solver++(2M) against the exact score of a Gaussian mixture."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_diffusion import COVS, MEANS, WEIGHTS, _mixture_eps
from vlogger_jax import diffusion


def _denoiser(schedule, prediction):
  """The exact mixture denoiser, expressed in the given parameterisation."""
  eps_fn = _mixture_eps(MEANS, COVS, WEIGHTS, schedule)

  def fn(x, t):
    eps = eps_fn(x, t)
    x0 = diffusion.x0_from_eps(schedule, x, t, eps)
    return {"eps": eps, "x0": x0, "v": diffusion.v_from_x0_eps(schedule, t, x0, eps)}[prediction]

  return fn


def _solve(sampler, prediction, steps, x_T, schedule):
  fn = {"dpm": diffusion.dpm_solver_sample, "ddim": diffusion.ddim_sample}[sampler]
  run = jax.jit(lambda x: fn(_denoiser(schedule, prediction), schedule, x, jax.random.PRNGKey(0),
                             num_steps=steps, prediction=prediction))
  return np.asarray(run(x_T), np.float64)


@pytest.fixture(scope="module")
def setup():
  s = diffusion.make_schedule(1000)
  x_T = jax.random.normal(jax.random.PRNGKey(1), (6000, 2))
  return s, x_T


def test_parameterisations_agree_and_second_order_beats_ddim(setup):
  s, x_T = setup
  x_T = x_T[:500]
  eps, x0, v = (_solve("dpm", p, 10, x_T, s) for p in diffusion.PREDICTIONS)
  np.testing.assert_allclose(x0, eps, atol=2e-3)
  np.testing.assert_allclose(v, eps, atol=2e-3)
  # Both solvers integrate the same probability-flow ODE from the same noise; at 10 steps the
  # multistep second-order one lands much closer to a 500-step DDIM reference.
  ref = _solve("ddim", "eps", 500, x_T, s)
  err_dpm = np.abs(eps - ref).mean()
  err_ddim = np.abs(_solve("ddim", "eps", 10, x_T, s) - ref).mean()
  assert err_dpm < 0.5 * err_ddim, (err_dpm, err_ddim)


def test_is_shape_polymorphic_in_batch():
  s = diffusion.make_schedule(50)
  fn = lambda x: diffusion.dpm_solver_sample(lambda x, t: 0.1 * x, s, x, num_steps=10)
  spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, 3"), jnp.float32)
  exported = jax.export.export(jax.jit(fn))(spec)
  out = exported.call(jnp.ones((7, 3)))
  assert out.shape == (7, 3)
  np.testing.assert_allclose(out, jax.jit(fn)(jnp.ones((7, 3))), rtol=1e-5)
