"""Toy task: diffusion on a 2-D Gaussian mixture, small enough to train on a laptop in a minute.

It exercises everything the real models use (schedules, losses, samplers, sharding, frozen
parameters, EMA, checkpoints, data-iterator state) and its evaluation has a closed-form answer:
samples drawn with the trained model should match the mixture's mean and covariance.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vlogger_jax import diffusion
from vlogger_jax.nn.toy import ToyDenoiser


def mixture(num_modes: int = 8, radius: float = 0.7, std: float = 0.08):
  """(weights [K], means [K, 2], covariances [K, 2, 2]) of modes on a ring."""
  angles = 2 * np.pi * np.arange(num_modes) / num_modes
  means = radius * np.stack([np.cos(angles), np.sin(angles)], -1)
  covs = np.tile((std ** 2) * np.eye(2), (num_modes, 1, 1))
  return np.full(num_modes, 1.0 / num_modes), means, covs


def mixture_moments(weights, means, covs):
  """Mean [D] and covariance [D, D] of a Gaussian mixture."""
  mean = weights @ means
  centred = means - mean
  cov = np.einsum("k,kij->ij", weights, covs) + np.einsum("k,ki,kj->ij", weights, centred, centred)
  return mean, cov


class MixtureIterator:
  """Deterministic host-local batches: batch n of process p depends only on (seed, p, n)."""

  def __init__(self, seed: int, process_index: int, local_batch: int, num_modes: int):
    self.seed, self.process_index, self.local_batch = seed, process_index, local_batch
    self.weights, self.means, covs = mixture(num_modes)
    self.chol = np.linalg.cholesky(covs)
    self.position = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    rng = np.random.default_rng([self.seed, self.process_index, self.position])
    self.position += 1
    k = rng.choice(len(self.weights), size=self.local_batch, p=self.weights)
    z = rng.standard_normal((self.local_batch, 2))
    x = self.means[k] + np.einsum("bij,bj->bi", self.chol[k], z)
    return {"x": x.astype(np.float32)}

  def get_state(self) -> dict:
    return {"position": self.position}

  def set_state(self, state: dict) -> None:
    self.position = int(state["position"])


class ToyTask:
  """Noise-prediction diffusion on 2-D points with a residual MLP."""

  def __init__(self, config):
    self.config = config
    self.schedule = diffusion.make_schedule(config.diffusion.num_steps, config.diffusion.schedule)
    self.prediction = config.diffusion.prediction
    self.model = ToyDenoiser(hidden=config.model.hidden, depth=config.model.depth,
                             dtype=jnp.dtype(config.precision.compute_dtype),
                             param_dtype=jnp.dtype(config.precision.param_dtype))
    self._sample_jit = jax.jit(self.sample, static_argnums=(2, 3, 4))

  def init(self, rng):
    x = jnp.zeros((1, 2), jnp.float32)
    return self.model.init(rng, x, jnp.zeros((1,), jnp.int32))["params"]

  def batch_spec(self, batch: int) -> dict:
    return {"x": (jax.ShapeDtypeStruct((batch, 2), jnp.float32), ("batch", None))}

  def loss(self, params, batch, rng):
    x0 = batch["x"]
    t_rng, n_rng = jax.random.split(rng)
    t = jax.random.randint(t_rng, (x0.shape[0],), 0, self.schedule.num_steps)
    eps = jax.random.normal(n_rng, x0.shape, jnp.float32)
    x_t = diffusion.q_sample(self.schedule, x0, t, eps)
    pred = self.model.apply({"params": params}, x_t, t)
    target = diffusion.training_target(self.schedule, t, x0, eps, self.prediction)
    loss = diffusion.masked_mse(pred, target)
    return loss, {"loss": loss}

  def data_iterator(self, process_index: int, process_count: int, local_batch: int):
    del process_count  # each process draws its own independent stream
    return MixtureIterator(self.config.seed, process_index, local_batch, self.config.data.num_modes)

  def sample(self, params, rng, num: int, sampler: str = "ddim", num_steps: int = 50):
    """num samples [num, 2] from the model."""
    denoise = lambda x, t: self.model.apply({"params": params}, x, t)
    x_T = jax.random.normal(rng, (num, 2), jnp.float32)
    # The data lie in [-1, 1]: clipping x0 keeps the first, noisiest steps well conditioned.
    return diffusion.sample(denoise, self.schedule, x_T, jax.random.fold_in(rng, 1),
                            sampler=sampler, num_steps=num_steps, prediction=self.prediction,
                            clip_x0=True)

  def evaluate(self, params, rng) -> dict:
    samples = np.asarray(self._sample_jit(params, rng, 4096))
    mean, cov = mixture_moments(*mixture(self.config.data.num_modes))
    _, means, covs = mixture(self.config.data.num_modes)
    dist = np.linalg.norm(samples[:, None] - means[None], axis=-1).min(1)
    return {"eval/mean_err": float(np.linalg.norm(samples.mean(0) - mean)),
            "eval/cov_err": float(np.linalg.norm(np.cov(samples.T) - cov)),
            "eval/near_mode": float(np.mean(dist < 3 * np.sqrt(covs[0, 0, 0])))}
