"""The toy model: a residual-MLP denoiser of 2-D points (the engine's smoke test)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vlogger_jax import diffusion
from vlogger_jax.models import common
from vlogger_jax.nn.toy import ToyDenoiser


class ToyModel:
  """Noise-prediction diffusion on 2-D points; `generate` draws samples [num, 2]."""

  def __init__(self, config):
    self.config = config
    self.schedule = common.schedule(config)
    self.prediction = config.diffusion.prediction
    self.net = ToyDenoiser(hidden=config.model.hidden, depth=config.model.depth,
                           **common.dtypes(config))

  def init(self, rng):
    """Boxed parameters (with logical axis names)."""
    return self.net.init(rng, jnp.zeros((1, 2), jnp.float32), jnp.zeros((1,), jnp.int32))["params"]

  def apply(self, params, x, t):
    """The denoiser: prediction [B, 2] for x_t [B, 2], t [B]."""
    return self.net.apply({"params": params}, x, t)

  def generate(self, params, rng, num: int, sampler: str = "ddim", num_steps: int = 50):
    """num samples [num, 2]; jit with num, sampler and num_steps static."""
    x_T = jax.random.normal(rng, (num, 2), jnp.float32)
    # The data lie in [-1, 1]: clipping x0 keeps the first, noisiest steps well conditioned.
    return diffusion.sample(lambda x, t: self.apply(params, x, t), self.schedule, x_T,
                            jax.random.fold_in(rng, 1), sampler=sampler, num_steps=num_steps,
                            prediction=self.prediction, clip_x0=True)
