"""Imagen-style UNet (the frozen image model) and its temporal, ControlNet-controlled extension.

Paper §3.2 / Supp. C.2 (see docs/video_model.md). Everything is channels-last; video tensors are
[B, T, H, W, C] outside and frames are folded into the batch, [B*T, H, W, C], inside the spatial
layers, so the image model denoises every frame as if it were alone.

- `UNet`: ε-prediction image model. Input = noisy frame | reference image (channels); GroupNorm +
  Swish residual blocks with FiLM step conditioning norm(h)·(1+scale)+shift, self-attention at the
  levels that ask for it, skip connections scaled by 2^-½ (Imagen), zero-initialised output conv.
- `ControlledVideoUNet`: the frozen `UNet` (params under 'unet/') plus a trainable copy of its
  step embedding and encoder (params under 'control/'), a hint encoder of the controls, zero 1×1
  convolutions into the frozen decoder's skips and middle, and zero-initialised temporal 1-D
  convolutions (params named '.../temporal/...'). At initialisation it equals the image model.
- `control_params_from_unet` copies a trained image model into the frozen and copied parts.

Every parameter carries logical axis names; activations carry ('batch', ...) constraints.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from vlogger_jax.nn.layers import TimeEmbed, sharded_dense

Dtype = Any
CONV_AXES = ("conv_h", "conv_w", "conv_in", "conv_out")
TEMPORAL_AXES = ("conv_t", "conv_h", "conv_w", "conv_in", "conv_out")
FOLDED = ("batch", None, None, None)   # activations [B*T, H, W, C]
VIDEO = ("batch", None, None, None, None)


# ----------------------------------------------------------------------------------------------
# Configurations


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  """The image model. Per-level tuples run from the input resolution down."""
  channels: int = 192                      # width of level 0; level i has channels * mult[i]
  channel_mult: tuple = (1, 2, 4, 6)
  num_res_blocks: tuple = (2, 3, 3, 3)
  attention: tuple = (False, False, True, True)
  mid_attention: bool = True
  head_dim: int = 64
  num_groups: int = 32
  dropout: float = 0.1
  image_channels: int = 3                  # noisy frame in, ε out
  ref_channels: int = 3                    # reference image concatenated to the input; 0: none
  emb_mult: int = 4                        # step embedding width = channels * emb_mult
  attention_impl: str | None = None        # None: cuDNN flash attention on GPU, else XLA

  def validate(self) -> None:
    """Raises ValueError with one sentence for a configuration no model could use."""
    n = len(self.channel_mult)
    if not (len(self.num_res_blocks) == n and len(self.attention) == n):
      raise ValueError(f"UNetConfig per-level tuples differ in length (channel_mult {n}, "
                       f"num_res_blocks {len(self.num_res_blocks)}, attention "
                       f"{len(self.attention)}); expected one entry per level.")
    for m in self.channel_mult:
      if (self.channels * m) % self.num_groups:
        raise ValueError(f"UNetConfig width {self.channels * m} is not a multiple of "
                         f"num_groups={self.num_groups}; expected every level width to be.")
    if self.attention_impl not in (None, "xla", "cudnn"):
      raise ValueError(f"UNetConfig.attention_impl '{self.attention_impl}' is unknown; expected "
                       "None, 'xla' or 'cudnn'.")


@dataclasses.dataclass(frozen=True)
class ControlConfig:
  """The video model: the frozen image model, its control copy and the temporal layers."""
  unet: UNetConfig = UNetConfig()
  control_channels: int = 22               # vlogger_jax.render.CONTROL_CHANNELS per control image
  outpaint: bool = True                    # hint also takes context frames + a per-frame mask
  hint_channels: tuple = (32, 64)          # hint encoder widths before its zero conv
  temporal: str = "control"                # where temporal convs sit: 'none' | 'control' | 'both'
  temporal_blocks: str = "first"           # 'first' res block of each down level, or 'all'
  temporal_kernel: int = 3

  @property
  def hint_in_channels(self) -> int:
    """ref image | ref controls | frame controls | (context frame | context mask)."""
    c = self.unet.image_channels + 2 * self.control_channels
    return c + (self.unet.image_channels + 1 if self.outpaint else 0)

  def validate(self) -> None:
    """Raises ValueError with one sentence for a configuration no model could use."""
    self.unet.validate()
    if self.temporal not in ("none", "control", "both"):
      raise ValueError(f"ControlConfig.temporal '{self.temporal}' is unknown; expected 'none', "
                       "'control' or 'both'.")
    if self.temporal_blocks not in ("first", "all"):
      raise ValueError(f"ControlConfig.temporal_blocks '{self.temporal_blocks}' is unknown; "
                       "expected 'first' or 'all'.")
    if self.temporal_kernel % 2 != 1:
      raise ValueError(f"ControlConfig.temporal_kernel is {self.temporal_kernel}; expected an "
                       "odd size so frames stay centred.")


_UNETS = {
    # Paper size for 128²: 128 -> 64 -> 32 -> 16, attention at 32² and 16² and in the middle.
    # See docs/video_model.md for its parameter count and FLOPs per frame.
    "base128": UNetConfig(),
    # Short accelerator runs (BENCHMARKS.md, issue 6 learning run): the base128 layout at a
    # third of the width and two blocks per level, ~1/20 of its FLOPs.
    "small": UNetConfig(channels=64, channel_mult=(1, 2, 3, 4), num_res_blocks=(2, 2, 2, 2),
                        attention=(False, False, True, True)),
    # The shipped default weights (launch/generate.py without a run directory): sized so that a
    # 2-core CPU generates 128² video in minutes; one block at the two top levels, attention only
    # at 16². docs/video_model.md has its parameters and FLOPs.
    "demo": UNetConfig(channels=24, channel_mult=(1, 2, 4, 6), num_res_blocks=(1, 1, 2, 2),
                       attention=(False, False, False, True), head_dim=32, num_groups=8,
                       dropout=0.0),
    # CPU tests: a few hundred thousand parameters, two levels, attention at the lower one.
    "tiny": UNetConfig(channels=16, channel_mult=(1, 2), num_res_blocks=(1, 1),
                       attention=(False, True), head_dim=16, num_groups=8, dropout=0.0),
}
_HINTS = {"base128": (32, 64), "small": (16, 32), "demo": (16, 32), "tiny": (16,)}


def unet_config(name: str, **overrides) -> UNetConfig:
  """The image-model configuration `name` ('base128' | 'small' | 'demo' | 'tiny'), fields overridden."""
  if name not in _UNETS:
    raise ValueError(f"UNet configuration '{name}' is unknown; expected one of: "
                     f"{', '.join(sorted(_UNETS))}.")
  cfg = dataclasses.replace(_UNETS[name], **overrides)
  cfg.validate()
  return cfg


def control_config(name: str, **overrides) -> ControlConfig:
  """The video-model configuration `name` ('base128' | 'small' | 'demo' | 'tiny'), fields overridden."""
  cfg = dataclasses.replace(ControlConfig(unet=unet_config(name), hint_channels=_HINTS[name]),
                            **overrides)
  cfg.validate()
  return cfg


# ----------------------------------------------------------------------------------------------
# Layers


def conv(features: int, kernel: int, *, dtype: Dtype, param_dtype: Dtype, name: str,
          strides: int = 1, zero_init: bool = False, axes: Sequence[str | None] = CONV_AXES
          ) -> nn.Conv:
  kinit = nn.initializers.zeros_init() if zero_init else nn.initializers.lecun_normal()
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), (strides, strides), padding=((pad, pad), (pad, pad)),
                 dtype=dtype, param_dtype=param_dtype, name=name,
                 kernel_init=nn.with_logical_partitioning(kinit, tuple(axes)),
                 bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                        (axes[-1],)))


def group_norm(groups: int, *, dtype: Dtype, param_dtype: Dtype, name: str) -> nn.GroupNorm:
  return nn.GroupNorm(num_groups=groups, epsilon=1e-5, dtype=dtype, param_dtype=param_dtype,
                      name=name,
                      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(),
                                                              ("norm",)),
                      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                             ("norm",)))


class _TimeConv(nn.Module):
  """The temporal convolution's kernel [k, 1, 1, C, F] applied as a 2-D (k, 1) convolution over
  [B, T, H*W, C]: the same products as the (k, 1, 1) 3-D convolution, on the 2-D NHWC path for
  which cuDNN has the most tuned kernels (the two were not yet timed apart on a GPU)."""
  features: int
  kernel: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, v: jax.Array) -> jax.Array:
    """v [B, T, H, W, C] -> [B, T, H, W, features]."""
    b, t, hh, ww, c = v.shape
    k = self.param("kernel", nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                          TEMPORAL_AXES),
                   (self.kernel, 1, 1, c, self.features), self.param_dtype)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                           ("conv_out",)),
                      (self.features,), self.param_dtype)
    v, k, bias = nn.dtypes.promote_dtype(v, k, bias, dtype=self.dtype)
    pad = self.kernel // 2
    # Zero padding in time: the first and last frames see no phantom neighbours.
    y = jax.lax.conv_general_dilated(
        v.reshape(b, t, hh * ww, c), k.reshape(self.kernel, 1, c, self.features), (1, 1),
        ((pad, pad), (0, 0)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y.reshape(b, t, hh, ww, self.features) + bias


class TemporalConv(nn.Module):
  """h + conv_t(h): a 1-D convolution over time, zero-initialised so it starts as the identity."""
  kernel: int = 3
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h: jax.Array, num_frames: int) -> jax.Array:
    """h [B*T, H, W, C] -> [B*T, H, W, C], mixing each pixel with its neighbours in time."""
    n, hh, ww, c = h.shape
    v = nn.with_logical_constraint(h.reshape(n // num_frames, num_frames, hh, ww, c), VIDEO)
    out = _TimeConv(c, self.kernel, self.dtype, self.param_dtype, name="conv")(v)
    return (v + out.astype(v.dtype)).reshape(h.shape)


class ResBlock(nn.Module):
  """GroupNorm-Swish-Conv, FiLM on the step, GroupNorm-Swish-Dropout-Conv, plus the skip."""
  cfg: Any                            # reads num_groups, dropout (UNetConfig, EfficientUNetConfig)
  features: int
  temporal: bool = False
  temporal_kernel: int = 3
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, emb: jax.Array, *, num_frames: int, train: bool) -> jax.Array:
    """x [N, H, W, Cin], emb [N, E] -> [N, H, W, features]."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    g = self.cfg.num_groups
    h = nn.swish(group_norm(g, name="norm_0", **kw)(x))
    h = conv(self.features, 3, name="conv_0", **kw)(h)
    if self.temporal:
      # Paper: "after the first Swish activation in each downsampling block"; here after the
      # block's first layer (Swish -> conv) and before its second GroupNorm.
      h = TemporalConv(self.temporal_kernel, name="temporal", **kw)(h, num_frames)
    film = sharded_dense(2 * self.features, ("mlp", "conv_out"), name="film", **kw)(nn.swish(emb))
    scale, shift = jnp.split(film[:, None, None, :], 2, axis=-1)
    h = group_norm(g, name="norm_1", **kw)(h) * (1 + scale) + shift
    h = nn.Dropout(self.cfg.dropout)(nn.swish(h), deterministic=not train)
    h = conv(self.features, 3, name="conv_1", **kw)(h)
    if x.shape[-1] != self.features:
      x = conv(self.features, 1, name="skip", **kw)(x)
    return nn.with_logical_constraint(x + h, FOLDED)


def attention_implementation(requested: str | None, dtype: Dtype, head_dim: int) -> str:
  """The jax.nn.dot_product_attention implementation to use: `requested` if given, else cuDNN's
  fused flash attention on a GPU for bf16/fp16 heads it supports, else XLA.

  jax's own `implementation=None` means XLA today, which materialises every [L, L] logit
  matrix in float32: at 32² that is 4 MiB per head and frame, written and re-read several times
  in the forward and backward passes (BENCHMARKS.md, issue 6).
  """
  if requested:
    return requested
  fused_ok = (jax.default_backend() == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
              and head_dim % 8 == 0 and head_dim <= 128)
  return "cudnn" if fused_ok else "xla"


class Attention(nn.Module):
  """Pre-norm multi-head self-attention over the pixels of each frame, residual."""
  cfg: Any                            # reads head_dim, num_groups, attention_impl
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x [N, H, W, C] -> [N, H, W, C]."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    n, hh, ww, c = x.shape
    heads = max(c // self.cfg.head_dim, 1)
    h = group_norm(self.cfg.num_groups, name="norm", **kw)(x).reshape(n, hh * ww, c)
    qkv = sharded_dense(3 * c, ("embed", "heads"), name="qkv", **kw)(h)
    q, k, v = jnp.split(qkv.reshape(n, hh * ww, 3 * heads, c // heads), 3, axis=2)
    impl = attention_implementation(self.cfg.attention_impl, q.dtype, c // heads)
    o = jax.nn.dot_product_attention(q, k, v, implementation=impl)
    o = sharded_dense(c, ("heads", "embed"), name="out", **kw)(o.reshape(n, hh * ww, c))
    return nn.with_logical_constraint(x + o.reshape(x.shape), FOLDED)


def _use_temporal(blocks: str, j: int) -> bool:
  return blocks == "all" or j == 0


class Encoder(nn.Module):
  """Input conv, down levels and the middle: the part the control copy duplicates."""
  cfg: UNetConfig
  temporal: bool = False
  temporal_blocks: str = "first"
  temporal_kernel: int = 3
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, emb: jax.Array, *, num_frames: int, train: bool,
               hint: jax.Array | None = None) -> tuple[list, jax.Array]:
    """x [N, H, W, Cin], emb [N, E], hint [N, H, W, C0] -> (skips [N, h, w, c] list, middle)."""
    cfg, kw = self.cfg, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = conv(cfg.channels, 3, name="conv_in", **kw)(x)
    if hint is not None:
      h = h + hint.astype(h.dtype)
    h = nn.with_logical_constraint(h, FOLDED)
    skips = [h]
    last = len(cfg.channel_mult) - 1
    for i, mult in enumerate(cfg.channel_mult):
      for j in range(cfg.num_res_blocks[i]):
        h = ResBlock(cfg, cfg.channels * mult, self.temporal and
                     _use_temporal(self.temporal_blocks, j), self.temporal_kernel,
                     name=f"down_{i}_{j}", **kw)(h, emb, num_frames=num_frames, train=train)
        if cfg.attention[i]:
          h = Attention(cfg, name=f"down_{i}_{j}_attn", **kw)(h)
        skips.append(h)
      if i != last:
        h = conv(h.shape[-1], 3, strides=2, name=f"downsample_{i}", **kw)(h)
        skips.append(nn.with_logical_constraint(h, FOLDED))
    c_mid = h.shape[-1]
    h = ResBlock(cfg, c_mid, name="mid_0", **kw)(h, emb, num_frames=num_frames, train=train)
    if cfg.mid_attention:
      h = Attention(cfg, name="mid_attn", **kw)(h)
    h = ResBlock(cfg, c_mid, name="mid_1", **kw)(h, emb, num_frames=num_frames, train=train)
    return skips, h


class Decoder(nn.Module):
  """Up levels fed by the (2^-½-scaled) skips, then GroupNorm-Swish and the zero output conv."""
  cfg: UNetConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, skips: list, h: jax.Array, emb: jax.Array, *, train: bool) -> jax.Array:
    """skips (from Encoder), middle [N, h, w, c], emb [N, E] -> ε [N, H, W, image_channels]."""
    cfg, kw = self.cfg, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    skips = list(skips)
    for i in reversed(range(len(cfg.channel_mult))):
      for j in range(cfg.num_res_blocks[i] + 1):
        # Imagen scales the skip so the concatenation keeps the residual stream's variance.
        h = jnp.concatenate([h, skips.pop() * (2 ** -0.5)], axis=-1)
        h = ResBlock(cfg, cfg.channels * cfg.channel_mult[i], name=f"up_{i}_{j}", **kw)(
            h, emb, num_frames=1, train=train)
        if cfg.attention[i]:
          h = Attention(cfg, name=f"up_{i}_{j}_attn", **kw)(h)
      if i:
        h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)   # nearest-neighbour x2
        h = conv(h.shape[-1], 3, name=f"upsample_{i}", **kw)(h)
        h = nn.with_logical_constraint(h, FOLDED)
    h = nn.swish(group_norm(cfg.num_groups, name="norm_out", **kw)(h))
    # Zero output: the untrained model predicts ε = 0. Few output channels: never sharded.
    return conv(cfg.image_channels, 3, zero_init=True, name="conv_out",
                 axes=("conv_h", "conv_w", "conv_in", None), **kw)(h)


def _check_video(x: jax.Array, t: jax.Array, cfg: UNetConfig) -> None:
  if x.ndim != 5 or x.shape[-1] != cfg.image_channels:
    raise ValueError(f"x has shape {x.shape}; expected [B, T, H, W, {cfg.image_channels}].")
  if t.shape != x.shape[:1]:
    raise ValueError(f"t has shape {t.shape}; expected [B] = {x.shape[:1]}.")
  div = 2 ** (len(cfg.channel_mult) - 1)
  if x.shape[2] % div or x.shape[3] % div:
    raise ValueError(f"x frames are {x.shape[2]}x{x.shape[3]}; expected sizes divisible by {div} "
                     f"for {len(cfg.channel_mult)} levels.")


def _frames_input(x: jax.Array, ref: jax.Array | None, cfg: UNetConfig) -> jax.Array:
  """x [B, T, H, W, C], ref [B, H, W, Cr] -> folded network input [B*T, H, W, C + Cr]."""
  b, t = x.shape[:2]
  if cfg.ref_channels:
    want = (b,) + x.shape[2:4] + (cfg.ref_channels,)
    if ref is None or ref.shape != want:
      raise ValueError(f"ref has shape {None if ref is None else ref.shape}; expected {want} "
                       "(the reference image; zeros when dropped).")
    x = jnp.concatenate([x, jnp.broadcast_to(ref[:, None].astype(x.dtype), x.shape[:4] +
                                             (cfg.ref_channels,))], axis=-1)
  return nn.with_logical_constraint(x.reshape((b * t,) + x.shape[2:]), FOLDED)


def _step_embedding(cfg: UNetConfig, t: jax.Array, num_frames: int, kw: dict) -> jax.Array:
  emb = TimeEmbed(cfg.channels * cfg.emb_mult, cfg.channels, name="time_embed", **kw)(t)
  return jnp.repeat(emb, num_frames, axis=0)   # [B*T, E], frame-major within each example


class UNet(nn.Module):
  """The image model: ε-prediction for every frame of x on its own (unless temporal=True)."""
  cfg: UNetConfig
  temporal: bool = False              # trainable temporal convs inside this (frozen) encoder
  temporal_blocks: str = "first"
  temporal_kernel: int = 3
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, ref: jax.Array | None = None, *,
               train: bool = False, control: tuple | None = None) -> jax.Array:
    """x [B, T, H, W, C], t [B], ref [B, H, W, Cr] -> ε [B, T, H, W, C] float32.

    `control` = (skip residuals list, middle residual) from `ControlBranch`, added to the skips.
    """
    cfg, kw = self.cfg, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    _check_video(x, t, cfg)
    b, nf = x.shape[:2]
    emb = _step_embedding(cfg, t, nf, kw)
    skips, mid = Encoder(cfg, self.temporal, self.temporal_blocks, self.temporal_kernel,
                         name="encoder", **kw)(_frames_input(x, ref, cfg), emb, num_frames=nf,
                                               train=train)
    if control is not None:
      res, res_mid = control
      skips = [s + r.astype(s.dtype) for s, r in zip(skips, res, strict=True)]
      mid = mid + res_mid.astype(mid.dtype)
    out = Decoder(cfg, name="decoder", **kw)(skips, mid, emb, train=train)
    return out.reshape(x.shape).astype(jnp.float32)


class HintEncoder(nn.Module):
  """A few Swish convs over the stacked controls; the last conv is zero-initialised."""
  channels: tuple
  out_channels: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, c: jax.Array) -> jax.Array:
    """c [N, H, W, Cin] -> [N, H, W, out_channels] (all zeros at initialisation)."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = c
    for i, ch in enumerate(self.channels):
      h = nn.swish(conv(ch, 3, name=f"conv_{i}", **kw)(h))
    return conv(self.out_channels, 3, zero_init=True, name="conv_out", **kw)(h)


class ControlBranch(nn.Module):
  """Trainable copy of the step embedding and encoder, hint encoder and zero 1×1 convolutions."""
  cfg: ControlConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, ref: jax.Array | None, hint: jax.Array, *,
               train: bool) -> tuple[list, jax.Array]:
    """x [B, T, H, W, C], t [B], ref [B, H, W, Cr], hint [B*T, H, W, Ch] -> residuals."""
    ucfg, kw = self.cfg.unet, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    nf = x.shape[1]
    emb = _step_embedding(ucfg, t, nf, kw)
    hint = HintEncoder(self.cfg.hint_channels, ucfg.channels, name="hint", **kw)(hint)
    skips, mid = Encoder(ucfg, self.cfg.temporal != "none", self.cfg.temporal_blocks,
                         self.cfg.temporal_kernel, name="encoder", **kw)(
                             _frames_input(x, ref, ucfg), emb, num_frames=nf, train=train,
                             hint=hint)
    zero = lambda c, name: conv(c, 1, zero_init=True, name=name, **kw)
    res = [zero(s.shape[-1], f"zero_{k}")(s) for k, s in enumerate(skips)]
    return res, zero(mid.shape[-1], "zero_mid")(mid)


class ControlledVideoUNet(nn.Module):
  """Frozen image UNet ('unet/') steered by its trainable control copy ('control/')."""
  cfg: ControlConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, cond: dict, *, train: bool = False
               ) -> jax.Array:
    """x [B, T, H, W, C], t [B], cond (see `hint_input`) -> ε [B, T, H, W, C] float32."""
    cfg, kw = self.cfg, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    _check_video(x, t, cfg.unet)
    keep = _keep(cond, x.shape[0])
    ref = cond.get("ref")
    if ref is not None:
      ref = ref * keep[:, None, None, None].astype(ref.dtype)
    hint = hint_input(cfg, x.shape, cond)
    control = ControlBranch(cfg, name="control", **kw)(x, t, ref, hint, train=train)
    return UNet(cfg.unet, cfg.temporal == "both", cfg.temporal_blocks, cfg.temporal_kernel,
                name="unet", **kw)(x, t, ref, train=train, control=control)


def _keep(cond: dict, batch: int) -> jax.Array:
  drop = cond.get("drop")
  if drop is None:
    return jnp.ones((batch,), jnp.float32)
  if drop.shape != (batch,):
    raise ValueError(f"cond['drop'] has shape {drop.shape}; expected [B] = ({batch},).")
  return 1.0 - drop.astype(jnp.float32)


def cond_array(cond: dict, key: str, shape: Sequence[int], required: bool = False
               ) -> jax.Array:
  """cond[key] as float32, checked to have `shape`; zeros of that shape when it is missing,
  unless `required` (then a ValueError names it)."""
  v = cond.get(key)
  if v is None:
    if required:
      raise ValueError(f"cond['{key}'] is missing; expected an array of shape {tuple(shape)}.")
    return jnp.zeros(shape, jnp.float32)
  if tuple(v.shape) != tuple(shape):
    raise ValueError(f"cond['{key}'] has shape {tuple(v.shape)}; expected {tuple(shape)}.")
  return v.astype(jnp.float32)


def hint_input(cfg: ControlConfig, x_shape: Sequence[int], cond: dict) -> jax.Array:
  """Stacked hint channels [B*T, H, W, cfg.hint_in_channels] from the conditioning dict.

  cond: 'ref' [B, H, W, 3] reference image; 'ref_controls' [B, H, W, 22] controls rendered for
  the reference; 'controls' [B, T, H, W, 22] controls of each target frame; with cfg.outpaint,
  optionally 'context' [B, T, H, W, 3] known frames and 'context_mask' [B, T] (1 = known);
  optionally 'drop' [B] bool: zero every hint and the reference of that example (guidance).
  Missing entries are zeros, except 'controls', which is required.
  """
  b, nf, h, w, c = x_shape
  keep = _keep(cond, b)
  get = lambda key, shape, required=False: cond_array(cond, key, shape, required)  # noqa: E731

  cc = cfg.control_channels
  frame = lambda a: jnp.broadcast_to(a[:, None], (b, nf) + a.shape[1:])
  parts = [frame(get("ref", (b, h, w, c))), frame(get("ref_controls", (b, h, w, cc))),
           get("controls", (b, nf, h, w, cc), required=True)]
  if cfg.outpaint:
    mask = get("context_mask", (b, nf))
    parts += [get("context", (b, nf, h, w, c)) * mask[..., None, None, None],
              jnp.broadcast_to(mask[..., None, None, None], (b, nf, h, w, 1))]
  hint = jnp.concatenate(parts, axis=-1) * keep[:, None, None, None, None]
  return nn.with_logical_constraint(hint.reshape((b * nf, h, w, hint.shape[-1])), FOLDED)


# ----------------------------------------------------------------------------------------------
# Parameters


def _value(leaf):
  return leaf.unbox() if isinstance(leaf, nn.meta.AxisMetadata) else leaf


def control_params_from_unet(params: dict, unet_params: dict) -> dict:
  """ControlledVideoUNet params (fresh init) -> same tree with 'unet/' = the image model and
  'control/' time_embed + encoder = copies of it; temporal, hint and zero convs keep their init.

  Works on plain or boxed (nn.Partitioned) leaves; `unet_params` is a `UNet` params dict.
  """
  src = {k: _value(v) for k, v in traverse_util.flatten_dict(unet_params, sep="/").items()}
  flat = traverse_util.flatten_dict(params, sep="/")
  used, out = set(), {}
  for path, leaf in flat.items():
    top, _, rest = path.partition("/")
    copied = (top == "unet" or (top == "control" and rest.split("/")[0] in
                                ("time_embed", "encoder")))
    if copied and "temporal" not in path.split("/"):
      if rest not in src:
        raise ValueError(f"image-model params lack '{rest}', which the video model's '{path}' "
                         "copies; expected params of a UNet with the same UNetConfig.")
      new = src[rest]
      if new.shape != _value(leaf).shape:
        raise ValueError(f"image-model param '{rest}' has shape {new.shape}; expected "
                         f"{_value(leaf).shape} for '{path}' (same UNetConfig).")
      new = jnp.asarray(new, _value(leaf).dtype)
      leaf = leaf.replace_boxed(new) if isinstance(leaf, nn.meta.AxisMetadata) else new
      used.add(rest)
    out[path] = leaf
  unused = sorted(set(src) - used)
  if unused:
    raise ValueError(f"image-model param '{unused[0]}' has no place in the video model; "
                     "expected params of a UNet with the same UNetConfig.")
  return traverse_util.unflatten_dict(out, sep="/")


# The engine's regex split (config.frozen): everything under 'unet/' except temporal layers.
FROZEN_PATTERNS = (r"^unet/(?!.*/temporal/)",)


def num_params(tree) -> int:
  """Number of scalars in a (possibly boxed or abstract) parameter tree."""
  leaves = jax.tree.leaves(tree, is_leaf=lambda v: isinstance(v, nn.meta.AxisMetadata))
  return sum(math.prod(_value(x).shape) for x in leaves)


def size_report(name: str, size: int | None = None, num_frames: int = 8) -> str:
  """One line: parameters and analytic forward FLOPs per frame of configuration `name` (no
  allocation: shapes come from jax.eval_shape)."""
  from vlogger_jax.flops import count_flops
  ccfg = control_config(name)
  size = size or (32 if name == "tiny" else 128)
  s = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  x, t, ref = s(1, num_frames, size, size, 3), jax.ShapeDtypeStruct((1,), jnp.int32), s(1, size,
                                                                                     size, 3)
  cond = {"ref": ref, "ref_controls": s(1, size, size, ccfg.control_channels),
          "controls": s(1, num_frames, size, size, ccfg.control_channels)}
  unet = UNet(ccfg.unet, dtype=jnp.bfloat16)
  video = ControlledVideoUNet(ccfg, dtype=jnp.bfloat16)
  rng = jax.random.PRNGKey(0)
  up = nn.meta.unbox(jax.eval_shape(lambda *a: unet.init(rng, *a)["params"], x, t, ref))
  vp = nn.meta.unbox(jax.eval_shape(lambda *a: video.init(rng, *a)["params"], x, t, cond))
  uf = count_flops(lambda p, *a: unet.apply({"params": p}, *a), up, x, t, ref) / num_frames
  vf = count_flops(lambda p, *a: video.apply({"params": p}, *a), vp, x, t, cond) / num_frames
  flat = traverse_util.flatten_dict(vp, sep="/")
  frozen = num_params([v for k, v in flat.items() if re.search(FROZEN_PATTERNS[0], k)])
  return (f"{name} at {size}x{size}: image UNet {num_params(up) / 1e6:.1f} M params, "
          f"{uf / 1e9:.1f} GFLOPs/frame; video model {num_params(vp) / 1e6:.1f} M params "
          f"({(num_params(vp) - frozen) / 1e6:.1f} M trainable), {vf / 1e9:.1f} GFLOPs/frame "
          f"(T={num_frames}, forward)")


if __name__ == "__main__":
  for _name in sorted(_UNETS):
    print(size_report(_name))
