"""The image model (paper §3.2): the Imagen-style UNet that denoises single frames conditioned on
a reference image of the same person. It is pre-trained first (no Imagen weights are public) and
then frozen inside the video model.

The network is described completely by config.model.network ({'unet': UNetConfig fields}), which
`resolve` writes into a run's config from the preset config.model.name, so a saved run loads
exactly as trained even if the presets in vlogger_jax/nn/unet.py change.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from vlogger_jax.models import common
from vlogger_jax.nn import unet as unet_lib


def to_pixels(frames: jax.Array) -> jax.Array:
  """uint8 frames [...] -> float32 in [-1, 1]."""
  return frames.astype(jnp.float32) / 127.5 - 1.0


def as_tuples(d: dict) -> dict:
  # JSON round trips turn tuples into lists; the network configs are frozen dataclasses of tuples.
  return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def unet_network(config) -> unet_lib.UNetConfig:
  """The UNetConfig of a run: config.model.network['unet'] when resolved, else the preset
  config.model.name with its overrides. Attention's implementation is a runtime choice
  (config.model.attention_impl), not part of the weights."""
  m = config.model
  network = m.get("network")
  impl = m.get("attention_impl") or None
  if network:
    ucfg = unet_lib.UNetConfig(**as_tuples(dict(network["unet"])))
    ucfg = dataclasses.replace(ucfg, attention_impl=impl)
    ucfg.validate()
    return ucfg
  return unet_lib.unet_config(m.name, dropout=m.dropout, attention_impl=impl)


def unet_fields(ucfg: unet_lib.UNetConfig) -> dict:
  """The weight-shaping fields of a UNetConfig, for a saved config."""
  d = dataclasses.asdict(ucfg)
  d.pop("attention_impl")
  return d


def with_network(config, network: dict) -> ml_collections.ConfigDict:
  """A copy of `config` with config.model.network = network (locked like the original)."""
  d = config.to_dict()
  d["model"]["network"] = network
  out = ml_collections.ConfigDict(d)
  out.lock()
  return out


class ImageModel:
  """eps/x0/v prediction [B, 1, S, S, 3] of noisy frames given a reference image [B, S, S, 3]."""

  def __init__(self, config):
    self.config = config
    self.network = unet_network(config)
    self.schedule = common.schedule(config)
    self.prediction = config.diffusion.prediction
    self.size = config.data.resolution
    self.net = unet_lib.UNet(self.network, **common.dtypes(config))

  @staticmethod
  def resolve(config) -> ml_collections.ConfigDict:
    """`config` with its network spelled out in config.model.network."""
    return with_network(config, {"unet": unet_fields(unet_network(config))})

  def init(self, rng):
    """Boxed parameters (with logical axis names)."""
    s = self.size
    return self.net.init(rng, jnp.zeros((1, 1, s, s, 3)), jnp.zeros((1,), jnp.int32),
                         jnp.zeros((1, s, s, 3)))["params"]

  def apply(self, params, x, t, ref, rng=None):
    """The denoiser: x [B, N, S, S, 3], t [B], ref [B, S, S, 3] -> prediction like x; `rng`
    turns on dropout (training)."""
    rngs = common.dropout_rngs(self.config, rng)
    return self.net.apply({"params": params}, x, t, ref, train=rng is not None, rngs=rngs)
