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
from vlogger_jax.models.toy import ToyModel


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
  """Trains a ToyModel; its evaluation compares samples with the mixture's moments."""

  def __init__(self, config, model: ToyModel | None = None):
    self.config = config
    self.model = model or ToyModel(config)
    self._generate = jax.jit(self.model.generate, static_argnums=(2, 3, 4))

  def init(self, rng):
    return self.model.init(rng)

  def batch_spec(self, batch: int) -> dict:
    return {"x": (jax.ShapeDtypeStruct((batch, 2), jnp.float32), ("batch", None))}

  def loss(self, params, batch, rng):
    x0 = batch["x"]
    schedule = self.model.schedule
    t_rng, n_rng = jax.random.split(rng)
    t = jax.random.randint(t_rng, (x0.shape[0],), 0, schedule.num_steps)
    eps = jax.random.normal(n_rng, x0.shape, jnp.float32)
    x_t = diffusion.q_sample(schedule, x0, t, eps)
    pred = self.model.apply(params, x_t, t)
    target = diffusion.training_target(schedule, t, x0, eps, self.model.prediction)
    loss = diffusion.masked_mse(pred, target)
    return loss, {"loss": loss}

  def data_iterator(self, process_index: int, process_count: int, local_batch: int):
    del process_count  # each process draws its own independent stream
    return MixtureIterator(self.config.seed, process_index, local_batch, self.config.data.num_modes)

  def evaluate(self, params, rng) -> dict:
    samples = np.asarray(self._generate(params, rng, 4096))
    mean, cov = mixture_moments(*mixture(self.config.data.num_modes))
    _, means, covs = mixture(self.config.data.num_modes)
    dist = np.linalg.norm(samples[:, None] - means[None], axis=-1).min(1)
    return {"eval/mean_err": float(np.linalg.norm(samples.mean(0) - mean)),
            "eval/cov_err": float(np.linalg.norm(np.cov(samples.T) - cov)),
            "eval/near_mode": float(np.mean(dist < 3 * np.sqrt(covs[0, 0, 0])))}
