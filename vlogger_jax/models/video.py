"""The base video model at 128² (paper §3.2, Supp. C.2): the frozen image model steered by a
trainable control copy, with temporal layers, and temporal outpainting of any length.

The network is ControlledVideoUNet (vlogger_jax/nn/unet.py): the image model under 'unet/'
(frozen in training, config.frozen), its zero-initialised control copy under 'control/', temporal
convolutions named '.../temporal/...'. Controls are rendered from motion parameters on the device
(vlogger_jax/render.py), inside the train step and inside every window of generation. The
network is described completely by config.model.network ({'unet': UNetConfig fields, 'control':
the remaining ControlConfig fields}), written into a run's config by `resolve`.

A clip is a dict of motion parameters (contracts.CLIP_KEYS) with a leading batch dimension:
shape [B, 64], fov [B], expression [B, T, 64], head_pose [B, T, 9], body_keypoints
[B, T, 75, 2], body_visibility [B, T, 75] and the reference frame's ref_expression [B, 64],
ref_head_pose [B, 9], ref_body_keypoints [B, 75, 2], ref_body_visibility [B, 75].
"""

from __future__ import annotations

import functools

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vlogger_jax import contracts
from vlogger_jax import head as head_lib
from vlogger_jax import render
from vlogger_jax import windowed_sampler
from vlogger_jax.models import common
from vlogger_jax.models import image as image_lib
from vlogger_jax.nn import unet as unet_lib


def frame_controls(head_model, shape, fov, expression, head_pose, body_keypoints,
                   body_visibility, size: int) -> jax.Array:
  """Control input [..., size, size, 22] of frames with leading dims L: shape [L, 64], fov [L],
  expression [L, 64], head_pose [L, 9], body_keypoints [L, 75, 2], body_visibility [L, 75]."""
  lead = expression.shape[:-1]
  n = math.prod(lead)
  flat = lambda a, tail: jnp.reshape(a, (n,) + tail)
  c = render.render_controls(head_model, flat(shape, shape.shape[len(lead):]), flat(expression,
                             (expression.shape[-1],)), flat(head_pose, (head_pose.shape[-1],)),
                             flat(body_keypoints, body_keypoints.shape[-2:]),
                             flat(body_visibility, body_visibility.shape[-1:]), flat(fov, ()),
                             size)
  x = render.controls_to_input(c)
  return x.reshape(lead + x.shape[1:])


def example_controls(head_model, shape, fov, frames: list, size: int) -> jax.Array:
  """Controls [B, N, size, size, 22] of a batch: shape [B, 64], fov [B] and the per-frame
  parameters `frames` (contracts.FRAME_KEYS order, each [B, N, ...]).

  Rendered example by example (lax.map): the rasterizer sizes its work by the number of frames
  it is given, which must stay static when the batch is symbolic (export), and picks its splat
  window by a data-dependent switch that vmap would turn into running every branch (25 times
  slower on the CPU)."""
  def render(args):
    shape_b, fov_b, *frames_b = args
    n = frames_b[0].shape[0]
    return frame_controls(head_model, jnp.broadcast_to(shape_b, (n,) + shape_b.shape),
                          jnp.broadcast_to(fov_b, (n,)), *frames_b, size)

  return jax.lax.map(render, (shape, fov, *frames))


def control_network(config) -> unet_lib.ControlConfig:
  """The ControlConfig of a run: config.model.network when resolved, else the preset
  config.model.name with config.model's temporal settings."""
  m = config.model
  ucfg = image_lib.unet_network(config)
  network = m.get("network")
  if network:
    fields = image_lib.as_tuples(dict(network["control"]))
    cfg = unet_lib.ControlConfig(unet=ucfg, **fields)
    cfg.validate()
    return cfg
  return unet_lib.control_config(m.name, unet=ucfg, temporal=m.temporal,
                                 temporal_blocks=m.temporal_blocks)


def _host_constant(a) -> jax.Array:
  # A callback rather than a captured constant: gigabytes of weights embedded in the init
  # program would make XLA compile them (and exceed protobuf's 2 GB limit at paper size).
  return jax.pure_callback(lambda: a, jax.ShapeDtypeStruct(a.shape, a.dtype))


class VideoModel:
  """Frames [B, N, S, S, 3] from noise, a reference image and the controls of each frame."""

  def __init__(self, config):
    self.config = config
    self.network = control_network(config)
    self.schedule = common.schedule(config)
    self.prediction = config.diffusion.prediction
    self.size = config.data.resolution
    self.num_frames = config.data.num_frames
    self.head_model = head_lib.load_default()
    self.net = unet_lib.ControlledVideoUNet(self.network, **common.dtypes(config))

  @staticmethod
  def resolve(config) -> ml_collections.ConfigDict:
    """`config` with its network spelled out in config.model.network."""
    cfg = control_network(config)
    control = dataclasses.asdict(cfg)
    control.pop("unet")
    return image_lib.with_network(config, {"unet": image_lib.unet_fields(cfg.unet),
                                           "control": control})

  def _dummy_cond(self):
    s, n, cc = self.size, self.num_frames, render.CONTROL_CHANNELS
    return {"ref": jnp.zeros((1, s, s, 3)), "ref_controls": jnp.zeros((1, s, s, cc)),
            "controls": jnp.zeros((1, n, s, s, cc)), "context": jnp.zeros((1, n, s, s, 3)),
            "context_mask": jnp.zeros((1, n)), "drop": jnp.zeros((1,), bool)}

  def init(self, rng, image_params: dict | None = None):
    """Boxed parameters; with `image_params` (host arrays of a trained ImageModel of the same
    UNet) the frozen image model and the control copy start as that model."""
    s, n = self.size, self.num_frames
    x, t = jnp.zeros((1, n, s, s, 3)), jnp.zeros((1,), jnp.int32)
    params = self.net.init(rng, x, t, self._dummy_cond())["params"]
    if image_params is not None:
      params = unet_lib.control_params_from_unet(params, jax.tree.map(_host_constant,
                                                                      image_params))
    return params

  def apply(self, params, x, t, cond, rng=None):
    """The denoiser: prediction [B, N, S, S, 3] for x [B, N, S, S, 3], t [B] and the
    conditioning dict of ControlledVideoUNet; `rng` turns on dropout (training)."""
    rngs = common.dropout_rngs(self.config, rng)
    return self.net.apply({"params": params}, x, t, cond, train=rng is not None, rngs=rngs)

  def controls(self, batch: dict) -> tuple[jax.Array, jax.Array]:
    """(controls [B, N, S, S, 22], ref_controls [B, S, S, 22]) rendered from a batch's
    parameters, targets and reference in one render call laid out [B, N + 1] so that the frames
    of one example stay on the device that holds the example."""
    b, n = batch["expression"].shape[:2]
    cat = lambda k: jnp.concatenate([batch[k], batch[f"ref_{k}"][:, None]], axis=1)
    per = lambda a: jnp.broadcast_to(a[:, None], (b, n + 1) + a.shape[1:])
    c = frame_controls(self.head_model, per(batch["shape"]), per(batch["fov"]),
                       *(cat(k) for k in contracts.FRAME_KEYS), self.size)
    c = nn.with_logical_constraint(c, ("batch", None, None, None, None))
    return c[:, :n], c[:, n]

  # --- generation ---

  def sampler_config(self, **overrides) -> windowed_sampler.SamplerConfig:
    """config.sampling with `overrides` (window = data.num_frames, pixels clipped to [-1, 1])."""
    s = self.config.sampling
    kw = dict(window=self.num_frames, overlap=s.overlap, sampler=s.sampler,
              num_steps=s.num_steps, eta=s.eta, guidance=s.guidance, prediction=self.prediction,
              clip_x0=True)
    kw.update(overrides)
    return windowed_sampler.SamplerConfig(**kw)

  @functools.cached_property
  def jitted_generate(self):
    """`generate` under jax.jit (cfg static); compiled once per shapes and cfg."""
    return jax.jit(self.generate, static_argnames=("cfg",))

  def generate(self, params, ref_image: jax.Array, clip: dict, keys: jax.Array,
               cfg: windowed_sampler.SamplerConfig | None = None,
               context: jax.Array | None = None, first_window=0) -> jax.Array:
    """Frames [B, T, S, S, 3] in [-1, 1] for reference images [B, S, S, 3] in [-1, 1], a batch
    of clips of motion parameters (module doc) and one key per example [B, 2]; pure, jit it
    with `cfg` static. Controls are rendered window by window (constant memory). `context`
    [B, overlap, S, S, 3] and `first_window` continue an earlier chunk
    (windowed_sampler.generate)."""
    cfg = cfg or self.sampler_config()
    missing = [k for k in contracts.CLIP_KEYS if k not in clip]
    if missing:
      raise ValueError(f"clip lacks '{missing[0]}'; expected the keys "
                       f"{', '.join(contracts.CLIP_KEYS)}.")
    size = self.size
    b = ref_image.shape[0]
    if ref_image.shape[1:] != (size, size, 3):
      raise ValueError(f"ref_image has shape {tuple(ref_image.shape)}; expected [B, {size}, "
                       f"{size}, 3] for this {size}² model.")
    windowed_sampler.check_keys(keys, b)
    length, w = clip["expression"].shape[1], cfg.window
    padded = windowed_sampler.padded_length(length, w, cfg.overlap)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    shape, fov = f32(clip["shape"]), f32(clip["fov"])
    # Frames past the end repeat the last one: they are generated, then cut off.
    per_frame = {k: windowed_sampler.pad_frames(f32(clip[k]), padded)
                 for k in contracts.FRAME_KEYS}

    ref_frames = [f32(clip[f"ref_{k}"])[:, None] for k in contracts.FRAME_KEYS]
    ref_controls = example_controls(self.head_model, shape, fov, ref_frames, size)[:, 0]
    ref = f32(ref_image)

    def window_cond(start, context, context_mask, valid):
      del valid  # padded frames are generated like the others
      seg = [jax.lax.dynamic_slice_in_dim(per_frame[k], start, w, axis=1)
             for k in contracts.FRAME_KEYS]
      return {"ref": ref, "ref_controls": ref_controls,
              "controls": example_controls(self.head_model, shape, fov, seg, size),
              "context": context, "context_mask": context_mask}

    def apply(x, t, cond, drop):
      return self.apply(params, x, t, dict(cond, drop=drop))

    return windowed_sampler.generate(apply, window_cond, self.schedule, keys, (size, size, 3),
                                     length, cfg, context=context, first_window=first_window)
