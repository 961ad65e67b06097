"""A residual MLP denoiser for low-dimensional data: the toy task that exercises the engine."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlogger_jax.nn.layers import TimeEmbed, sharded_dense


class ToyDenoiser(nn.Module):
  """x_t [B, D], t [B] -> prediction [B, D]."""
  hidden: int = 128
  depth: int = 3
  time_dim: int = 64
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
    dense = lambda f, axes, **kw: sharded_dense(f, axes, dtype=self.dtype,
                                                param_dtype=self.param_dtype, **kw)
    emb = TimeEmbed(self.hidden, self.time_dim, self.dtype, self.param_dtype,
                    name="time_embed")(t)
    h = dense(self.hidden, (None, "embed"), name="input")(x) + emb
    for i in range(self.depth):
      r = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name=f"norm_{i}")(h)
      r = dense(self.hidden * 2, ("embed", "mlp"), name=f"up_{i}")(r)
      r = dense(self.hidden, ("mlp", "embed"), name=f"down_{i}")(nn.silu(r))
      h = h + r
    h = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="norm_out")(h)
    # Zero-initialised output: the untrained model predicts 0, a neutral start for any target.
    out = dense(x.shape[-1], ("embed", None), zero_init=True, name="output")(h)
    return out.astype(jnp.float32)
