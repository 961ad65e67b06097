"""What every model shares: precision, the diffusion schedule and the dropout key of a config."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vlogger_jax import diffusion
from vlogger_jax.nn import layers


def dtypes(config) -> dict:
  """{'dtype': compute dtype, 'param_dtype': parameter dtype} of config.precision."""
  return dict(dtype=jnp.dtype(config.precision.compute_dtype),
              param_dtype=jnp.dtype(config.precision.param_dtype))


def schedule(config) -> diffusion.Schedule:
  """The noise schedule of config.diffusion."""
  return diffusion.make_schedule(config.diffusion.num_steps, config.diffusion.schedule)


def dropout_rngs(config, rng: jax.Array | None) -> dict | None:
  """Flax `rngs` for a training forward pass (None: deterministic, no dropout)."""
  if rng is None:
    return None
  return {"dropout": layers.dropout_key(rng, config.model.get("dropout_prng", "threefry"))}
