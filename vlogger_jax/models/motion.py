"""The audio-to-motion model M (paper §3.1, Supp. A.2, C.1): the causal transformer, its
normalisation statistics and windowed generation of any length.

Parameters are {'model': the network's, 'stats': {'mean', 'std'} [223]}: the dataset's
normalisation of the motion vector travels with the weights (frozen in training), so a trained
model generates without its dataset. `init` takes the statistics (identity when none are given,
e.g. for benchmarks and shapes).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vlogger_jax import contracts
from vlogger_jax import motion as motion_lib
from vlogger_jax import windowed_sampler
from vlogger_jax.models import common
from vlogger_jax.nn.motion_transformer import MotionTransformer


class MotionModel:
  """mel [B, T, 256] -> normalised motion [B, T, 223]; built from a run's config."""

  def __init__(self, config):
    self.config = config
    self.schedule = common.schedule(config)
    self.prediction = config.diffusion.prediction
    self.window = config.data.max_frames
    m = config.model
    self.net = MotionTransformer(width=m.width, depth=m.depth, heads=m.heads,
                                 time_dim=m.time_dim, dropout=m.dropout, **common.dtypes(config))

  def init(self, rng, stats: motion_lib.Stats | None = None):
    """{'model': boxed network parameters, 'stats': the normalisation [223] (identity if None)}."""
    w, d = self.window, contracts.MOTION_DIM
    net = self.net.init(rng, jnp.zeros((1, w, d)), jnp.zeros((1,), jnp.int32),
                        jnp.zeros((1, w, contracts.MEL_BINS)), jnp.ones((1, w)))["params"]
    stats = stats or motion_lib.Stats.identity()
    return {"model": net, "stats": {"mean": jnp.asarray(stats.mean), "std": jnp.asarray(stats.std)}}

  def apply(self, params, x_t, t, mel, mask, context=None, context_mask=None, audio_keep=None,
            rng=None):
    """The denoiser: prediction [B, W, 223] in the configured parameterisation; `rng` turns on
    dropout (training)."""
    rngs = common.dropout_rngs(self.config, rng)
    return self.net.apply({"params": params["model"]}, x_t, t, mel, mask, context=context,
                          context_mask=context_mask, audio_keep=audio_keep,
                          deterministic=rngs is None, rngs=rngs)

  @staticmethod
  def stats(params) -> motion_lib.Stats:
    """The normalisation statistics held in `params`."""
    return motion_lib.Stats(np.asarray(params["stats"]["mean"]),
                            np.asarray(params["stats"]["std"]))

  # --- generation ---

  def sampler_config(self, **overrides) -> windowed_sampler.SamplerConfig:
    """config.sampling with `overrides` (window = data.max_frames)."""
    s = self.config.sampling
    kw = dict(window=self.window, overlap=s.overlap, sampler=s.sampler, num_steps=s.num_steps,
              guidance=s.guidance, prediction=self.prediction)
    kw.update(overrides)
    return windowed_sampler.SamplerConfig(**kw)

  @functools.cached_property
  def jitted_generate(self):
    """`generate` under jax.jit (cfg static); compiled once per shapes and cfg."""
    return jax.jit(self.generate, static_argnames=("cfg",))

  def generate(self, params, mel: jax.Array, keys: jax.Array,
               cfg: windowed_sampler.SamplerConfig | None = None,
               context: jax.Array | None = None, first_window=0) -> jax.Array:
    """Normalised motion [B, T, 223] for mel [B, T, 256] (any T) and one key per example
    [B, 2]; pure, jit it with `cfg` static. `context` [B, overlap, 223] and `first_window`
    continue an earlier chunk (windowed_sampler.generate)."""
    cfg = cfg or self.sampler_config()
    if mel.ndim != 3 or mel.shape[2] != contracts.MEL_BINS:
      raise ValueError(f"mel has shape {tuple(mel.shape)}; expected [B, T, "
                       f"{contracts.MEL_BINS}].")
    b, length = mel.shape[:2]
    windowed_sampler.check_keys(keys, b)
    padded = windowed_sampler.padded_length(length, cfg.window, cfg.overlap)
    mel = windowed_sampler.pad_frames(jnp.asarray(mel, jnp.float32), padded, mode="constant")
    w = cfg.window

    def window_cond(start, context, context_mask, valid):
      return {"mel": jax.lax.dynamic_slice_in_dim(mel, start, w, axis=1),
              "mask": jnp.broadcast_to(valid.astype(jnp.float32), (b, w)),
              "context": context, "context_mask": context_mask}

    def apply(x, t, cond, drop):
      return self.apply(params, x, t, cond["mel"], cond["mask"], cond["context"],
                        cond["context_mask"], 1.0 - drop.astype(jnp.float32))

    return windowed_sampler.generate(apply, window_cond, self.schedule, keys,
                                     (contracts.MOTION_DIM,), length, cfg, context=context,
                                     first_window=first_window)

  def to_parameters(self, params, motion: np.ndarray, ref_head_pose: np.ndarray,
                    ref_body_keypoints: np.ndarray):
    """(expression [T, 64], head_pose [T, 9], body_keypoints [T, 75, 2]) of one normalised
    motion sequence [T, 223], relative to the reference frame's pose."""
    stats = self.stats(params)
    return motion_lib.unpack(stats.denormalize(np.asarray(motion)), ref_head_pose,
                             ref_body_keypoints, self.config.data.absolute)
