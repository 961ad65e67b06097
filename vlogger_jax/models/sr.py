"""The super-resolution stages (paper §3.2, Supp. C.2): 128² -> 256² and 256² -> 512², each an
Efficient U-Net with temporal layers (vlogger_jax/nn/efficient_unet.py) conditioned on the
low-resolution video and on the controls rendered at its own resolution.

The low-resolution input is made the same way in training and in generation: frames at
`low_resolution` (the previous stage's output; in training, the true frames box-filtered down on
the device) are upsampled bicubically to `size` and corrupted by the noise-conditioning
augmentation of Imagen: x_low = sqrt(ᾱ(u)) up + sqrt(1 - ᾱ(u)) ε with the continuous cosine
level u in [0, 1] (u = 0 leaves it unchanged), u drawn in [0, config.sr.train_aug_max) in
training and fixed at config.sampling.aug_level in generation; the network is told u. This is
what keeps a cascade robust to the errors of the stage before it.

Long videos follow the base model's temporal outpainting: `generate` runs the one windowed sampler
with the previous `overlap` high-resolution frames as clean context, in chunks that continue each
other (windowed_sampler.generate). The augmentation noise of frame f of example b is drawn from
fold_in(fold_in(keys[b], AUG_STREAM), f), so a frame gets the same noise in every window and
every chunking.

With config.sr.residual (x0-prediction only) the denoiser predicts the frame as the bicubic
upsampling of the clean low-resolution frames plus the network's output: the zero-initialised
output layer makes an untrained stage return exactly bicubic, and training learns only the
detail that bicubic misses (what short runs need; the paper's recipe is plain ε-prediction). The
bicubic base skips the augmentation: the network sees the augmented input and corrects the base.

The network is described completely by config.model.network (EfficientUNetConfig fields), which
`resolve` writes into a run's config from the preset config.model.name.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections

from vlogger_jax import contracts
from vlogger_jax import diffusion
from vlogger_jax import head as head_lib
from vlogger_jax import render
from vlogger_jax import windowed_sampler
from vlogger_jax.models import common
from vlogger_jax.models import image as image_lib
from vlogger_jax.models import video as video_lib
from vlogger_jax.nn import efficient_unet as eunet
from vlogger_jax.nn.unet import cond_array

AUG_STREAM = 0x7FFFFFFF   # the augmentation noise's key stream (window numbers never reach it)


def sr_network(config) -> eunet.EfficientUNetConfig:
  """The EfficientUNetConfig of a run: config.model.network when resolved, else the preset
  config.model.name with config.model's overrides. The attention implementation is a runtime
  choice (config.model.attention_impl), not part of the weights."""
  m = config.model
  impl = m.get("attention_impl") or None
  network = m.get("network")
  if network:
    cfg = eunet.EfficientUNetConfig(**image_lib.as_tuples(dict(network["sr"])))
    cfg = dataclasses.replace(cfg, attention_impl=impl)
    cfg.validate()
    return cfg
  return eunet.network_config(m.name, dropout=m.dropout, temporal_blocks=m.temporal_blocks,
                              attention_impl=impl)


def downsample(x: jax.Array, factor: int) -> jax.Array:
  """Box filter: [..., H, W, C] -> [..., H / factor, W / factor, C] (the data's resizing)."""
  *lead, h, w, c = x.shape
  if h % factor or w % factor:
    raise ValueError(f"frames of {h}x{w} cannot be reduced by {factor}; expected sizes "
                     f"divisible by it.")
  x = x.reshape(tuple(lead) + (h // factor, factor, w // factor, factor, c))
  return x.mean(axis=(-4, -2))


def upsample(x: jax.Array, size: int) -> jax.Array:
  """Bicubic: [..., h, w, C] -> [..., size, size, C] (also the baseline SR is judged against)."""
  *lead, _, _, c = x.shape
  return jax.image.resize(x, tuple(lead) + (size, size, c), method="cubic")


def augment(up: jax.Array, level: jax.Array, noise: jax.Array) -> jax.Array:
  """Noise-conditioning augmentation of the upsampled video up [B, T, S, S, C] at continuous
  cosine levels `level` [B] in [0, 1] with `noise` like up; level 0 returns up unchanged."""
  a = diffusion.cosine_alpha_bar(level)[:, None, None, None, None]
  return jnp.sqrt(a) * up + jnp.sqrt(1.0 - a) * noise


class SRModel:
  """Frames [B, N, S, S, 3] from noise, the frames at `low_resolution` and each frame's
  controls at S; built from a run's config."""

  def __init__(self, config):
    self.config = config
    self.network = sr_network(config)
    self.schedule = common.schedule(config)
    self.prediction = config.diffusion.prediction
    self.residual = bool(config.sr.get("residual", False))
    if self.residual and self.prediction != "x0":
      raise ValueError(f"config.sr.residual is set with diffusion.prediction "
                       f"'{self.prediction}'; expected 'x0' (the residual is added to the "
                       "predicted frame).")
    self.size = config.data.resolution
    self.low_size = config.sr.low_resolution
    if self.size % self.low_size:
      raise ValueError(f"config.sr.low_resolution is {self.low_size}; expected a divisor of "
                       f"config.data.resolution = {self.size}.")
    self.factor = self.size // self.low_size
    self.num_frames = config.data.num_frames
    self.head_model = head_lib.load_default()
    self.net = eunet.EfficientUNet(self.network, **common.dtypes(config))

  @staticmethod
  def resolve(config) -> ml_collections.ConfigDict:
    """`config` with its network spelled out in config.model.network."""
    fields = dataclasses.asdict(sr_network(config))
    fields.pop("attention_impl")
    return image_lib.with_network(config, {"sr": fields})

  def _dummy(self, size: int | None = None):
    s, n = size or self.size, self.num_frames
    cond = {"low": jnp.zeros((1, n, s, s, 3)), "base": jnp.zeros((1, n, s, s, 3)),
            "controls": jnp.zeros((1, n, s, s, render.CONTROL_CHANNELS)),
            "context": jnp.zeros((1, n, s, s, 3)), "context_mask": jnp.zeros((1, n)),
            "aug_level": jnp.zeros((1,))}
    return jnp.zeros((1, n, s, s, 3)), jnp.zeros((1,), jnp.int32), cond

  def init(self, rng, size: int | None = None):
    """Boxed parameters (they do not depend on the frame size: `size` only shapes the trace)."""
    return self.net.init(rng, *self._dummy(size))["params"]

  def apply(self, params, x, t, cond, rng=None):
    """The denoiser: prediction [B, N, S, S, 3] for x [B, N, S, S, 3], t [B] and the
    conditioning dict of EfficientUNet (with config.sr.residual also 'base', the bicubic
    frames [B, N, S, S, 3] the prediction is added to: `base_input`); `rng` turns on dropout
    (training)."""
    rngs = common.dropout_rngs(self.config, rng)
    out = self.net.apply({"params": params}, x, t, cond, train=rng is not None, rngs=rngs)
    if self.residual:
      out = out + cond_array(cond, "base", x.shape, True).astype(out.dtype)
    return out

  def controls(self, batch: dict, size: int | None = None) -> jax.Array:
    """Controls [B, N, S, S, 22] of a batch's frames, rendered at the output size."""
    per = [jnp.asarray(batch[k], jnp.float32) for k in contracts.FRAME_KEYS]
    return video_lib.example_controls(self.head_model, jnp.asarray(batch["shape"], jnp.float32),
                                      jnp.asarray(batch["fov"], jnp.float32), per,
                                      size or self.size)

  def base_input(self, low: jax.Array, size: int | None = None) -> jax.Array:
    """cond['base'] of a residual stage: frames [B, T, s, s, 3] upsampled to the output size."""
    return upsample(low, size or self.size)

  def low_input(self, low: jax.Array, level: jax.Array, noise: jax.Array,
                size: int | None = None) -> jax.Array:
    """The network's 'low' input: frames [B, T, s, s, 3] upsampled to the output size and
    augmented at `level` [B] with `noise` [B, T, S, S, 3]."""
    return augment(upsample(low, size or self.size), level, noise)

  # --- generation ---

  def sampler_config(self, **overrides) -> windowed_sampler.SamplerConfig:
    """config.sampling with `overrides` (window = data.num_frames, pixels clipped to [-1, 1]).
    The stage trains without dropping its conditioning, so it samples without guidance."""
    s = self.config.sampling
    kw = dict(window=self.num_frames, overlap=s.overlap, sampler=s.sampler,
              num_steps=s.num_steps, eta=s.eta, guidance=1.0, prediction=self.prediction,
              clip_x0=True)
    kw.update(overrides)
    if kw["guidance"] != 1.0:
      raise ValueError(f"super-resolution guidance is {kw['guidance']}; expected 1 (the stage "
                       "is trained without dropping its conditioning).")
    return windowed_sampler.SamplerConfig(**kw)

  @functools.cached_property
  def jitted_generate(self):
    """`generate` under jax.jit (cfg static); compiled once per shapes and cfg."""
    return jax.jit(self.generate, static_argnames=("cfg",))

  def generate(self, params, low: jax.Array, clip: dict, keys: jax.Array,
               cfg: windowed_sampler.SamplerConfig | None = None,
               context: jax.Array | None = None, first_window=0,
               aug_level: float | jax.Array | None = None) -> jax.Array:
    """Frames [B, T, S, S, 3] in [-1, 1] for the low-resolution frames `low` [B, T, s, s, 3] in
    [-1, 1], their motion parameters (`clip`: shape [B, 64], fov [B] and the per-frame
    contracts.FRAME_KEYS [B, T, ...]) and one key per example [B, 2]; pure, jit it with `cfg`
    static. `aug_level` defaults to config.sampling.aug_level. `context` [B, overlap, S, S, 3]
    and `first_window` continue an earlier chunk (windowed_sampler.generate). The frame size
    follows `low`: S = factor x its size (a stage trained at one size runs at another)."""
    cfg = cfg or self.sampler_config()
    missing = [k for k in ("shape", "fov") + contracts.FRAME_KEYS if k not in clip]
    if missing:
      raise ValueError(f"clip lacks '{missing[0]}'; expected shape, fov and "
                       f"{', '.join(contracts.FRAME_KEYS)}.")
    if low.ndim != 5 or low.shape[2] != low.shape[3] or low.shape[-1] != 3:
      raise ValueError(f"low has shape {tuple(low.shape)}; expected [B, T, s, s, 3].")
    b, length, s = low.shape[0], low.shape[1], low.shape[2]
    size = s * self.factor
    windowed_sampler.check_keys(keys, b)
    level = self.config.sampling.aug_level if aug_level is None else aug_level
    level = jnp.broadcast_to(jnp.asarray(level, jnp.float32), (b,))
    w, stride = cfg.window, cfg.window - cfg.overlap
    padded = windowed_sampler.padded_length(length, w, cfg.overlap)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    shape, fov = f32(clip["shape"]), f32(clip["fov"])
    per_frame = {k: windowed_sampler.pad_frames(f32(clip[k]), padded)
                 for k in contracts.FRAME_KEYS}
    low = windowed_sampler.pad_frames(f32(low), padded)
    aug_keys = diffusion.fold_in(keys, AUG_STREAM)
    frame_noise = jax.vmap(jax.vmap(lambda k, f: jax.random.normal(
        jax.random.fold_in(k, f), (size, size, 3)), (None, 0)), (0, None))

    def window_cond(start, context, context_mask, valid):
      del valid  # padded frames are generated like the others
      seg = [jax.lax.dynamic_slice_in_dim(per_frame[k], start, w, axis=1)
             for k in contracts.FRAME_KEYS]
      frames = first_window * stride + start + jnp.arange(w)
      low_w = jax.lax.dynamic_slice_in_dim(low, start, w, axis=1)
      up = upsample(low_w, size)
      return {"low": augment(up, level, frame_noise(aug_keys, frames)), "base": up,
              "aug_level": level,
              "controls": video_lib.example_controls(self.head_model, shape, fov, seg, size),
              "context": context, "context_mask": context_mask}

    def apply(x, t, cond, drop):
      del drop  # sampled without guidance (sampler_config)
      return self.apply(params, x, t, cond)

    return windowed_sampler.generate(apply, window_cond, self.schedule, keys, (size, size, 3),
                                     length, cfg, context=context, first_window=first_window)
