"""The diffusion core against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlogger_jax import diffusion


def test_cosine_schedule_endpoints_and_agreement_with_continuous_time():
  s = diffusion.make_schedule(1000, "cosine")
  ab = np.asarray(s.alpha_bars, np.float64)
  assert ab.shape == (1000,)
  assert 0.9999 < ab[0] < 1.0            # step 0 is nearly clean
  assert ab[-1] < 1e-6                   # the last step is pure noise
  assert np.all(np.diff(ab) < 0)         # noise only grows
  assert float(diffusion.cosine_alpha_bar(0.0)) == pytest.approx(1.0)
  assert float(diffusion.cosine_alpha_bar(1.0)) == pytest.approx(0.0, abs=1e-7)
  # Before beta clipping kicks in, step t sits on the continuous curve at u = (t + 1) / T.
  u = (np.arange(1000) + 1) / 1000
  cont = np.asarray(diffusion.cosine_alpha_bar(u))
  np.testing.assert_allclose(ab[:990], cont[:990], rtol=1e-4, atol=1e-7)


def test_posterior_mean_and_variance_match_bayes():
  s = diffusion.make_schedule(1000, "cosine")
  betas = np.asarray(s.betas, np.float64)
  ab = np.cumprod(1 - betas)
  for t in [1, 10, 500, 998]:
    # q(x_{t-1} | x0) = N(sqrt(ab_{t-1}) x0, 1 - ab_{t-1}); q(x_t | x_{t-1}) = N(sqrt(1-b) x, b).
    prec = 1 / (1 - ab[t - 1]) + (1 - betas[t]) / betas[t]
    var = 1 / prec
    c_x0 = var * np.sqrt(ab[t - 1]) / (1 - ab[t - 1])
    c_xt = var * np.sqrt(1 - betas[t]) / betas[t]
    assert float(s.posterior_variance[t]) == pytest.approx(var, rel=1e-4)
    assert float(s.posterior_coef_x0[t]) == pytest.approx(c_x0, rel=1e-4)
    assert float(s.posterior_coef_xt[t]) == pytest.approx(c_xt, rel=1e-4)
  assert float(s.posterior_coef_x0[0]) == pytest.approx(1.0, rel=1e-5)  # t = 0 returns x0


@pytest.mark.parametrize("prediction", diffusion.PREDICTIONS)
def test_parameterisations_round_trip(prediction):
  s = diffusion.make_schedule(1000)
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  x0 = jax.random.normal(k1, (16, 5))
  eps = jax.random.normal(k2, (16, 5))
  t = jax.random.randint(k3, (16,), 0, 900)
  x_t = diffusion.q_sample(s, x0, t, eps)
  target = diffusion.training_target(s, t, x0, eps, prediction)
  x0_hat, eps_hat = diffusion.to_x0_eps(s, x_t, t, target, prediction)
  np.testing.assert_allclose(x0_hat, x0, atol=2e-3)
  np.testing.assert_allclose(eps_hat, eps, atol=2e-3)


def test_masked_mse_ignores_masked_elements_and_weights_apply():
  pred = jnp.array([[1.0, 2.0, 100.0]])
  target = jnp.zeros((1, 3))
  mask = jnp.array([[1.0, 1.0, 0.0]])
  assert float(diffusion.masked_mse(pred, target, mask=mask)) == pytest.approx(2.5)
  w = jnp.array([2.0, 0.0, 0.0])
  assert float(diffusion.masked_mse(pred, target, weights=w, mask=mask)) == pytest.approx(1.0)
  # Temporal difference: only pairs whose both frames are valid count.
  seq = jnp.array([[[0.0], [1.0], [3.0], [50.0]]])
  m = jnp.array([[1.0, 1.0, 1.0, 0.0]])
  assert float(diffusion.temporal_difference_loss(seq, mask=m)) == pytest.approx((1 + 4) / 2)


def test_guidance_weights():
  c, u = jnp.array([1.0, 3.0]), jnp.array([0.5, -1.0])
  np.testing.assert_allclose(diffusion.guide(c, u, 1.0), c)
  np.testing.assert_allclose(diffusion.guide(c, u, 0.0), u)
  np.testing.assert_allclose(diffusion.guide(c, u, 5.0), u + 5 * (c - u))


def test_dynamic_threshold_bounds_and_leaves_small_values():
  x = jnp.array([[0.1, -0.5, 0.2, 0.3], [4.0, -8.0, 2.0, 1.0]])
  y = diffusion.dynamic_threshold(x, 0.99)
  np.testing.assert_allclose(y[0], x[0])                      # already inside [-1, 1]
  assert float(jnp.max(jnp.abs(y[1]))) <= 1.0 + 1e-6


def _mixture_eps(means, covs, weights, schedule):
  """The exact eps-prediction of a Gaussian mixture's noisy marginals (a perfect denoiser)."""
  means, covs, logw = jnp.asarray(means), jnp.asarray(covs), jnp.log(jnp.asarray(weights))

  def eps(x, t):
    ab = schedule.alpha_bars[t][:, None]
    a, s2 = jnp.sqrt(ab), 1 - ab
    mu = a[:, None] * means[None]                              # [B, K, D]
    cov = ab[:, :, None, None] * covs[None] + s2[:, :, None, None] * jnp.eye(2)
    diff = x[:, None] - mu
    sol = jnp.linalg.solve(cov, diff[..., None])[..., 0]
    logp = logw - 0.5 * jnp.einsum("bkd,bkd->bk", diff, sol) - 0.5 * jnp.linalg.slogdet(cov)[1]
    r = jax.nn.softmax(logp, axis=1)
    score = -jnp.einsum("bk,bkd->bd", r, sol)
    return -jnp.sqrt(s2) * score

  return eps


WEIGHTS = np.array([0.3, 0.7])
MEANS = np.array([[-0.6, 0.2], [0.5, -0.3]])
COVS = np.array([[[0.04, 0.01], [0.01, 0.02]], [[0.03, -0.01], [-0.01, 0.05]]])


def assert_matches_mixture(out):
  """Samples [N, 2] have the mixture's mean, covariance and mode proportions."""
  mean = WEIGHTS @ MEANS
  cov = np.einsum("k,kij->ij", WEIGHTS, COVS) + np.einsum(
      "k,ki,kj->ij", WEIGHTS, MEANS - mean, MEANS - mean)
  np.testing.assert_allclose(out.mean(0), mean, atol=0.02)
  np.testing.assert_allclose(np.cov(out.T), cov, atol=0.015)
  # The modes are found in the right proportion, not just the moments.
  near_first = np.linalg.norm(out - MEANS[0], axis=1) < np.linalg.norm(out - MEANS[1], axis=1)
  assert abs(near_first.mean() - WEIGHTS[0]) < 0.03


@pytest.mark.parametrize("sampler,steps", [("ddpm", None), ("ddim", 100), ("dpm", 20)])
def test_sampler_with_exact_score_reproduces_mixture_moments(sampler, steps):
  s = diffusion.make_schedule(1000)
  x_T = jax.random.normal(jax.random.PRNGKey(1), (6000, 2))
  fn = jax.jit(lambda x, k: diffusion.sample(_mixture_eps(MEANS, COVS, WEIGHTS, s), s, x, k,
                                             sampler=sampler, num_steps=steps))
  assert_matches_mixture(np.asarray(fn(x_T, jax.random.PRNGKey(2)), np.float64))


def test_sampler_is_shape_polymorphic_in_batch():
  s = diffusion.make_schedule(50)
  denoise = lambda x, t: jnp.zeros_like(x)
  fn = lambda x, k: diffusion.ddim_sample(denoise, s, x, k, num_steps=10)
  spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, 3"), jnp.float32)
  exported = jax.export.export(jax.jit(fn))(spec, jax.random.PRNGKey(0))
  out = exported.call(jnp.ones((7, 3)), jax.random.PRNGKey(0))
  assert out.shape == (7, 3)
