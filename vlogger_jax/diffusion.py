"""Gaussian diffusion: schedules, parameterisations, losses, samplers and guidance.

Conventions (VDM / Imagen style, shared by the motion and the video models):
- Discrete time t in {0, ..., T-1}; step t has noise level alpha_bar[t] (`alpha_bars`), so
  x_t = sqrt(alpha_bar[t]) x0 + sqrt(1 - alpha_bar[t]) eps. Step 0 is the least noisy, T-1 the most.
- Continuous time u in [0, 1] uses the same cosine curve, `cosine_alpha_bar(u)`.
- A denoiser is a function `fn(x_t, t) -> prediction` with t an int32 array of shape [batch]; the
  prediction is eps, x0 or v according to `prediction` ('eps', 'x0' or 'v').
- Samplers are pure functions over `lax.fori_loop`: one compilation whatever the number of steps,
  and every shape may be symbolic in the batch dimension (for `jax.export`).
- A sampler's `key` is one PRNG key for the whole batch, or a batch of keys [B, 2] (one per
  example, `batch_noise`): then example b's noise depends only on key b, so a batch of B examples
  equals B separate calls with the matching keys.
"""

from __future__ import annotations

from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

PREDICTIONS = ("eps", "x0", "v")
Denoiser = Callable[[jax.Array, jax.Array], jax.Array]


def cosine_alpha_bar(u, s: float = 0.008):
  """Cosine noise level of Nichol & Dhariwal (2021) at continuous time u in [0, 1]; any shape."""
  u = jnp.asarray(u, jnp.float32)
  f = lambda v: jnp.cos((v + s) / (1.0 + s) * jnp.pi / 2) ** 2
  return f(u) / f(jnp.zeros_like(u))


@flax.struct.dataclass
class Schedule:
  """A discrete schedule of T steps; every field is a [T] float32 array."""
  betas: jax.Array
  alpha_bars: jax.Array            # prod_{s<=t} (1 - beta_s)
  alpha_bars_prev: jax.Array       # alpha_bar[t-1], with alpha_bar[-1] = 1
  posterior_variance: jax.Array    # variance of q(x_{t-1} | x_t, x0)
  posterior_log_variance: jax.Array  # its log, with step 0 clipped to step 1 (DDPM's choice)
  posterior_coef_x0: jax.Array     # mean of q(x_{t-1} | x_t, x0) = c_x0 * x0 + c_xt * x_t
  posterior_coef_xt: jax.Array

  @property
  def num_steps(self) -> int:
    return self.betas.shape[0]


def make_schedule(num_steps: int = 1000, kind: str = "cosine", max_beta: float = 0.999) -> Schedule:
  """The discrete schedule of `num_steps` steps, computed in float64 and stored as float32."""
  if num_steps < 1:
    raise ValueError(f"diffusion num_steps is {num_steps}; expected a positive integer.")
  if kind == "cosine":
    u = np.arange(num_steps + 1, dtype=np.float64) / num_steps
    f = np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
    betas = np.clip(1.0 - f[1:] / f[:-1], 0.0, max_beta)
  elif kind == "linear":  # Ho et al. (2020), scaled so that any T keeps the same endpoints
    scale = 1000.0 / num_steps
    betas = np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)
  else:
    raise ValueError(f"diffusion schedule '{kind}' is unknown; expected 'cosine' or 'linear'.")
  alpha_bars = np.cumprod(1.0 - betas)
  alpha_bars_prev = np.concatenate([[1.0], alpha_bars[:-1]])
  post_var = betas * (1.0 - alpha_bars_prev) / (1.0 - alpha_bars)
  post_log_var = np.log(np.concatenate([post_var[1:2], post_var[1:]]) if num_steps > 1
                        else np.maximum(post_var, 1e-20))
  coef_x0 = betas * np.sqrt(alpha_bars_prev) / (1.0 - alpha_bars)
  coef_xt = (1.0 - alpha_bars_prev) * np.sqrt(1.0 - betas) / (1.0 - alpha_bars)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  return Schedule(f32(betas), f32(alpha_bars), f32(alpha_bars_prev), f32(post_var),
                  f32(post_log_var), f32(coef_x0), f32(coef_xt))


def _bcast(values: jax.Array, t: jax.Array, ndim: int) -> jax.Array:
  """values[t] shaped [batch, 1, ..., 1] to broadcast against an array of rank `ndim`."""
  v = jnp.take(values, t, axis=0)
  return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
  """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise; x0, noise [B, ...], t [B]."""
  ab = _bcast(schedule.alpha_bars, t, x0.ndim)
  return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * noise


# --- parameterisations ------------------------------------------------------------------------
# With a = sqrt(alpha_bar), s = sqrt(1 - alpha_bar): x_t = a x0 + s eps and v = a eps - s x0.

def _a_s(schedule: Schedule, t: jax.Array, ndim: int):
  ab = _bcast(schedule.alpha_bars, t, ndim)
  return jnp.sqrt(ab), jnp.sqrt(1.0 - ab)


def x0_from_eps(schedule, x_t, t, eps):
  """x0 = (x_t - s eps) / a; all arrays [B, ...], t [B]."""
  a, s = _a_s(schedule, t, x_t.ndim)
  return (x_t - s * eps) / a


def eps_from_x0(schedule, x_t, t, x0):
  """eps = (x_t - a x0) / s; all arrays [B, ...], t [B]."""
  a, s = _a_s(schedule, t, x_t.ndim)
  return (x_t - a * x0) / s


def v_from_x0_eps(schedule, t, x0, eps):
  """v = a eps - s x0 (Salimans & Ho, 2022)."""
  a, s = _a_s(schedule, t, x0.ndim)
  return a * eps - s * x0


def x0_eps_from_v(schedule, x_t, t, v):
  """(x0, eps) from a v prediction: x0 = a x_t - s v, eps = s x_t + a v."""
  a, s = _a_s(schedule, t, x_t.ndim)
  return a * x_t - s * v, s * x_t + a * v


def to_x0_eps(schedule: Schedule, x_t, t, pred, prediction: str):
  """Both x0 and eps implied by a model output of the given parameterisation."""
  if prediction == "eps":
    return x0_from_eps(schedule, x_t, t, pred), pred
  if prediction == "x0":
    return pred, eps_from_x0(schedule, x_t, t, pred)
  if prediction == "v":
    return x0_eps_from_v(schedule, x_t, t, pred)
  raise ValueError(f"prediction '{prediction}' is unknown; expected one of {PREDICTIONS}.")


def training_target(schedule: Schedule, t, x0, eps, prediction: str):
  """What the network should output at (x_t, t) for the given parameterisation."""
  if prediction == "eps":
    return eps
  if prediction == "x0":
    return x0
  if prediction == "v":
    return v_from_x0_eps(schedule, t, x0, eps)
  raise ValueError(f"prediction '{prediction}' is unknown; expected one of {PREDICTIONS}.")


# --- losses -------------------------------------------------------------------------------------

def masked_mse(pred: jax.Array, target: jax.Array, weights=None, mask=None) -> jax.Array:
  """Mean over unmasked elements of weights * (pred - target)^2; returns a scalar.

  `weights` and `mask` broadcast against pred ([B, ...]); masked-out elements (mask = 0) contribute
  nothing to the numerator or to the count, so padding never dilutes or drives the loss.
  """
  err = jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32))
  if weights is not None:
    err = err * weights
  if mask is None:
    return jnp.mean(err)
  mask = jnp.broadcast_to(mask, err.shape).astype(jnp.float32)
  return jnp.sum(err * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def temporal_difference_loss(pred: jax.Array, target=None, weights=None, mask=None,
                             axis: int = 1) -> jax.Array:
  """Mean of weights * (d pred - d target)^2 over consecutive frames along `axis` (L_temp).

  Without `target` this is the paper's literal form, the squared difference of the prediction at
  consecutive frames (a smoothness prior); with `target` it matches the prediction's frame-to-frame
  velocity to the target's. pred [B, T, ...]; mask [B, T] or broadcastable to pred: a pair counts
  only if both of its frames do.
  """
  n = pred.shape[axis]
  diff = lambda a: (jax.lax.slice_in_dim(a, 1, n, axis=axis).astype(jnp.float32)
                    - jax.lax.slice_in_dim(a, 0, n - 1, axis=axis).astype(jnp.float32))
  d_pred = diff(pred)
  d_target = diff(target) if target is not None else jnp.zeros_like(d_pred)
  pair_mask = None
  if mask is not None:
    mask = mask.reshape(mask.shape + (1,) * (pred.ndim - mask.ndim))
    pair_mask = (jax.lax.slice_in_dim(mask, 1, n, axis=axis)
                 * jax.lax.slice_in_dim(mask, 0, n - 1, axis=axis))
  return masked_mse(d_pred, d_target, weights=weights, mask=pair_mask)


# --- guidance and thresholding -----------------------------------------------------------------

def guide(cond: jax.Array, uncond: jax.Array, weight) -> jax.Array:
  """Classifier-free guidance: uncond + w (cond - uncond); w = 1 is conditional, w = 0 unconditional."""
  return uncond + weight * (cond - uncond)


def dynamic_threshold(x0: jax.Array, percentile: float = 0.995) -> jax.Array:
  """Imagen's dynamic thresholding of an x0 estimate [B, ...] into [-1, 1]."""
  flat = jnp.abs(x0.reshape(x0.shape[0], -1))
  s = jnp.maximum(jnp.quantile(flat, percentile, axis=1), 1.0)
  s = s.reshape((-1,) + (1,) * (x0.ndim - 1))
  return jnp.clip(x0, -s, s) / s


def batch_noise(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
  """Standard normal noise of `shape` [B, ...]: from one key, or per example from keys [B, 2]
  (example b's noise is jax.random.normal(key[b], shape[1:]), the same values one key gives a
  batch of one)."""
  if key.ndim == 2:
    return jax.vmap(lambda k: jax.random.normal(k, tuple(shape[1:]), dtype))(key)
  return jax.random.normal(key, tuple(shape), dtype)


def fold_in(key: jax.Array, data) -> jax.Array:
  """jax.random.fold_in for one key or for each key of a batch [B, 2]."""
  if key.ndim == 2:
    return jax.vmap(lambda k: jax.random.fold_in(k, data))(key)
  return jax.random.fold_in(key, data)


def _clean_x0(x0, clip_x0, threshold):
  if threshold is not None:
    return dynamic_threshold(x0, threshold)
  if clip_x0:
    return jnp.clip(x0, -1.0, 1.0)
  return x0


# --- samplers -----------------------------------------------------------------------------------

def ddpm_sample(denoise: Denoiser, schedule: Schedule, x_T: jax.Array, key: jax.Array, *,
                prediction: str = "eps", clip_x0: bool = False, threshold: float | None = None,
                ) -> jax.Array:
  """Ancestral DDPM sampling over all T steps from noise x_T [B, ...]; returns x0 [B, ...].

  Uses the posterior q(x_{t-1} | x_t, x0_hat) with its (clipped-log) variance, as Ho et al.
  """
  num_steps = schedule.num_steps
  batch = x_T.shape[0]

  def body(i, x):
    t_scalar = num_steps - 1 - i
    t = jnp.full((batch,), t_scalar, jnp.int32)
    pred = denoise(x, t).astype(jnp.float32)
    x0, _ = to_x0_eps(schedule, x, t, pred, prediction)
    x0 = _clean_x0(x0, clip_x0, threshold)
    mean = (_bcast(schedule.posterior_coef_x0, t, x.ndim) * x0
            + _bcast(schedule.posterior_coef_xt, t, x.ndim) * x)
    std = jnp.exp(0.5 * _bcast(schedule.posterior_log_variance, t, x.ndim))
    noise = batch_noise(fold_in(key, i), x.shape)
    return jnp.where(t_scalar > 0, mean + std * noise, mean)

  return jax.lax.fori_loop(0, num_steps, body, x_T.astype(jnp.float32))


def ddim_timesteps(num_train_steps: int, num_sample_steps: int) -> np.ndarray:
  """Evenly spaced steps from T-1 down to 0 (length num_sample_steps), as static numpy ints."""
  if not 1 <= num_sample_steps <= num_train_steps:
    raise ValueError(f"sampler steps is {num_sample_steps}; expected 1..{num_train_steps}.")
  return np.round(np.linspace(num_train_steps - 1, 0, num_sample_steps)).astype(np.int32)


def ddim_sample(denoise: Denoiser, schedule: Schedule, x_T: jax.Array, key: jax.Array, *,
                num_steps: int = 50, eta: float = 0.0, prediction: str = "eps",
                clip_x0: bool = False, threshold: float | None = None) -> jax.Array:
  """DDIM (Song et al., 2021) with `num_steps` steps; eta = 0 is deterministic. Returns x0."""
  steps = jnp.asarray(ddim_timesteps(schedule.num_steps, num_steps))
  batch = x_T.shape[0]

  def body(i, x):
    t = jnp.full((batch,), steps[i], jnp.int32)
    pred = denoise(x, t).astype(jnp.float32)
    x0, eps = to_x0_eps(schedule, x, t, pred, prediction)
    if clip_x0 or threshold is not None:
      x0 = _clean_x0(x0, clip_x0, threshold)
      eps = eps_from_x0(schedule, x, t, x0)
    ab = _bcast(schedule.alpha_bars, t, x.ndim)
    is_last = i == num_steps - 1
    t_prev = jnp.full((batch,), steps[jnp.minimum(i + 1, num_steps - 1)], jnp.int32)
    ab_prev = jnp.where(is_last, 1.0, _bcast(schedule.alpha_bars, t_prev, x.ndim))
    sigma = eta * jnp.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
    noise = batch_noise(fold_in(key, i), x.shape)
    dir_xt = jnp.sqrt(jnp.maximum(1 - ab_prev - sigma ** 2, 0.0)) * eps
    return jnp.sqrt(ab_prev) * x0 + dir_xt + sigma * noise

  return jax.lax.fori_loop(0, num_steps, body, x_T.astype(jnp.float32))


SAMPLERS = ("ddpm", "ddim", "dpm")


def sample(denoise: Denoiser, schedule: Schedule, x_T: jax.Array, key: jax.Array, *,
           sampler: str = "ddpm", num_steps: int | None = None, eta: float = 0.0,
           **kwargs) -> jax.Array:
  """Dispatches to a sampler by name: 'ddpm' (all steps), 'ddim' (num_steps, eta) or 'dpm'
  (DPM-Solver++ 2M, num_steps); returns x0 [B, ...]."""
  if sampler == "ddpm":
    return ddpm_sample(denoise, schedule, x_T, key, **kwargs)
  if sampler == "ddim":
    return ddim_sample(denoise, schedule, x_T, key, num_steps=num_steps or 50, eta=eta, **kwargs)
  if sampler == "dpm":
    return dpm_solver_sample(denoise, schedule, x_T, key, num_steps=num_steps or 20, **kwargs)
  raise ValueError(f"sampler '{sampler}' is unknown; expected one of {', '.join(SAMPLERS)}.")


def dpm_solver_sample(denoise: Denoiser, schedule: Schedule, x_T: jax.Array,
                      key: jax.Array | None = None, *, num_steps: int = 20,
                      prediction: str = "eps", clip_x0: bool = False,
                      threshold: float | None = None) -> jax.Array:
  """DPM-Solver++(2M) (Lu et al., 2022) with `num_steps` model calls from x_T [B, ...]; returns x0.

  Multistep, second order in the data prediction over the log-SNR lambda = log(a / s). Steps are
  quadratic in t (DDIM's 'quad' spacing, dense near the data): with uniform steps the last
  interval spans a third of the log-SNR range and the solver loses its order there. The first
  and the last update are first order (DDIM), as DPM-Solver++ does for few steps; the last model
  call is at t = 0 and returns its x0. Deterministic: `key` is accepted for the common sampler
  signature and unused.
  """
  del key
  n, total = num_steps, schedule.num_steps
  if not 1 <= n <= total:
    raise ValueError(f"sampler steps is {n}; expected 1..{total}.")
  # Quadratic spacing from T-1 down to 0, made strictly decreasing where rounding collides.
  quad = np.round(np.linspace(np.sqrt(total - 1), 0.0, n) ** 2).astype(np.int64)
  steps_np = quad.copy()
  for i in range(n - 2, -1, -1):
    steps_np[i] = min(max(quad[i], steps_np[i + 1] + 1), total - 1 - i)
  steps = jnp.asarray(steps_np, jnp.int32)
  batch = x_T.shape[0]
  ab = jnp.take(schedule.alpha_bars, steps)
  alpha, sigma = jnp.sqrt(ab), jnp.sqrt(1.0 - ab)
  lam = jnp.log(alpha) - jnp.log(sigma)

  def body(i, carry):
    x, x0_prev = carry
    t = jnp.full((batch,), steps[i], jnp.int32)
    x0, _ = to_x0_eps(schedule, x, t, denoise(x, t).astype(jnp.float32), prediction)
    x0 = _clean_x0(x0, clip_x0, threshold)
    j = jnp.minimum(i + 1, n - 1)
    h = lam[j] - lam[i]
    h_prev = lam[i] - lam[jnp.maximum(i - 1, 0)]
    # D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1} with r = h_{i-1} / h_i.
    second = (i > 0) & (i < n - 2)
    c = jnp.where(second, 0.5 * h / jnp.where(second, h_prev, 1.0), 0.0)
    d = (1.0 + c) * x0 - c * x0_prev
    x_next = (sigma[j] / sigma[i]) * x - alpha[j] * jnp.expm1(-h) * d
    return jnp.where(i == n - 1, x0, x_next), x0

  x = x_T.astype(jnp.float32)
  x, _ = jax.lax.fori_loop(0, n, body, (x, jnp.zeros_like(x)))
  return x
