"""Small Linen building blocks shared by the networks: sharded Dense, timestep embeddings."""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def sharded_dense(features: int, axes: Sequence[str | None], *, dtype: Dtype, param_dtype: Dtype,
                  zero_init: bool = False, use_bias: bool = True, name: str | None = None
                  ) -> nn.Dense:
  """nn.Dense whose kernel [in, out] carries logical axis names `axes` (bias: axes[1])."""
  kinit = nn.initializers.zeros_init() if zero_init else nn.initializers.lecun_normal()
  return nn.Dense(
      features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, name=name,
      kernel_init=nn.with_logical_partitioning(kinit, tuple(axes)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[1],)))


PRNG_IMPLS = ("threefry", "rbg")


def dropout_key(key: jax.Array, impl: str = "rbg") -> jax.Array:
  """A key for `rngs={'dropout': ...}` derived from `key`, of PRNG implementation `impl`.

  'rbg' keys draw their bits with one XLA RngBitGenerator op (Philox on GPUs); the default
  threefry keys spell out the 20-round threefry hash in elementwise integer ops, which a video
  UNet with dropout after every residual block runs on hundreds of millions of activations per
  step. 'threefry' returns `key` unchanged. Either way the result is a pure function of `key`.
  """
  if impl == "threefry":
    return key
  if impl != "rbg":
    raise ValueError(f"dropout PRNG '{impl}' is unknown; expected one of {PRNG_IMPLS}.")
  return jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl="rbg")


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal embedding of (possibly fractional) steps t [B] -> [B, dim] float32."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t.astype(jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


class TimeEmbed(nn.Module):
  """Sinusoidal step embedding followed by a two-layer MLP: t [B] -> [B, hidden]."""
  hidden: int
  time_dim: int = 64
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, t: jax.Array) -> jax.Array:
    dense = lambda f, axes, name: sharded_dense(f, axes, dtype=self.dtype,
                                                param_dtype=self.param_dtype, name=name)
    h = dense(self.hidden, (None, "embed"), "dense_0")(timestep_embedding(t, self.time_dim))
    return dense(self.hidden, ("mlp", "embed"), "dense_1")(nn.silu(h))
