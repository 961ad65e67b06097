"""Imagen's Efficient U-Net with temporal layers: the super-resolution stages (paper §3.2, Supp.
C.2: "For the super-resolution modules, we extend the efficient U-Net architecture").

Everything is channels-last; video tensors are [B, T, H, W, C] outside and frames are folded
into the batch inside the spatial layers, as in vlogger_jax/nn/unet.py, whose residual block,
attention and temporal convolution this network reuses.

What makes it Imagen's Efficient U-Net (Saharia et al. 2022, appendix B.1):
- more residual blocks at the low resolutions, few at the high ones (`num_res_blocks`);
- a down level downsamples *before* its convolutions and an up level upsamples *after* them, so
  the full-resolution level runs the fewest, cheapest layers;
- one skip per level, scaled by 2^-½ where the up level concatenates it.

Its input is the noisy frame | the low-resolution video upsampled to the output size (corrupted
by the noise-conditioning augmentation; the network is told the augmentation level) | the
controls rendered at the output size | the outpainting context frame and its mask. Temporal 1-D
convolutions (kernel 3, zero-initialised, so the identity at initialisation) follow the first
layer of the first (or every) residual block of each level, as in the base model. ε-prediction;
the schedule is the model's (vlogger_jax/models/sr.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlogger_jax.nn.layers import TimeEmbed
from vlogger_jax.nn.unet import FOLDED, Attention, ResBlock, cond_array, conv, group_norm

Dtype = Any
AUG_SCALE = 1000.0   # the augmentation level u in [0, 1] is embedded like step u * 1000


@dataclasses.dataclass(frozen=True)
class EfficientUNetConfig:
  """A super-resolution network. Per-level tuples run from the output resolution down."""
  channels: int = 128
  channel_mult: tuple = (1, 2, 4, 8)
  num_res_blocks: tuple = (2, 4, 8, 8)
  attention: tuple = (False, False, False, True)
  head_dim: int = 64
  num_groups: int = 32
  dropout: float = 0.0
  image_channels: int = 3          # noisy frame in, prediction out; also the low-res video's
  control_channels: int = 22       # vlogger_jax.render.CONTROL_CHANNELS
  outpaint: bool = True            # context frame + its mask as input (temporal outpainting)
  temporal_blocks: str = "first"   # temporal conv in the 'first' res block of a level, or 'all'
  temporal_kernel: int = 3
  emb_mult: int = 4
  attention_impl: str | None = None

  @property
  def in_channels(self) -> int:
    """noisy frame | low-res video | controls | (context frame | context mask)."""
    c = 2 * self.image_channels + self.control_channels
    return c + (self.image_channels + 1 if self.outpaint else 0)

  def validate(self) -> None:
    """Raises ValueError with one sentence for a configuration no model could use."""
    n = len(self.channel_mult)
    if not (len(self.num_res_blocks) == n and len(self.attention) == n):
      raise ValueError(f"EfficientUNetConfig per-level tuples differ in length (channel_mult "
                       f"{n}, num_res_blocks {len(self.num_res_blocks)}, attention "
                       f"{len(self.attention)}); expected one entry per level.")
    if min(self.num_res_blocks) < 1:
      raise ValueError(f"EfficientUNetConfig.num_res_blocks is {self.num_res_blocks}; expected "
                       "at least one block per level.")
    for m in self.channel_mult:
      if (self.channels * m) % self.num_groups:
        raise ValueError(f"EfficientUNetConfig width {self.channels * m} is not a multiple of "
                         f"num_groups={self.num_groups}; expected every level width to be.")
    if self.temporal_blocks not in ("first", "all"):
      raise ValueError(f"EfficientUNetConfig.temporal_blocks '{self.temporal_blocks}' is "
                       "unknown; expected 'first' or 'all'.")
    if self.temporal_kernel % 2 != 1:
      raise ValueError(f"EfficientUNetConfig.temporal_kernel is {self.temporal_kernel}; "
                       "expected an odd size so frames stay centred.")
    if self.attention_impl not in (None, "xla", "cudnn"):
      raise ValueError(f"EfficientUNetConfig.attention_impl '{self.attention_impl}' is "
                       "unknown; expected None, 'xla' or 'cudnn'.")


_NETWORKS = {
    # Paper size, 128² -> 256² (Imagen's 64 -> 256 Efficient U-Net: width 128, multipliers
    # 1-2-4-8, 2-4-8-8 blocks, attention at the lowest level, here 32²). Parameters and FLOPs
    # per frame: docs/super_resolution.md.
    "sr256": EfficientUNetConfig(),
    # Paper size, 256² -> 512² (Imagen's 256 -> 1024 model: the same layout without
    # self-attention; the lowest level is 64²).
    "sr512": EfficientUNetConfig(attention=(False, False, False, False)),
    # Ten-minute GPU runs (BENCHMARKS.md, issue 14) and CPU generation at 256²/512².
    "short": EfficientUNetConfig(channels=32, channel_mult=(1, 2, 4, 8),
                                 num_res_blocks=(1, 2, 3, 3),
                                 attention=(False, False, False, False), num_groups=8),
    # CPU tests (no attention: XLA's attention on a CPU costs five times the convolutions here).
    "tiny": EfficientUNetConfig(channels=16, channel_mult=(1, 2), num_res_blocks=(1, 2),
                                attention=(False, False), head_dim=16, num_groups=8),
}


def network_config(name: str, **overrides) -> EfficientUNetConfig:
  """The super-resolution network `name` ('sr256' | 'sr512' | 'short' | 'tiny'), overridden."""
  if name not in _NETWORKS:
    raise ValueError(f"super-resolution network '{name}' is unknown; expected one of: "
                     f"{', '.join(sorted(_NETWORKS))}.")
  cfg = dataclasses.replace(_NETWORKS[name], **overrides)
  cfg.validate()
  return cfg


def _upsample(h: jax.Array) -> jax.Array:
  return jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)   # nearest-neighbour x2


class EfficientUNet(nn.Module):
  """ε (or x0/v) prediction [B, T, S, S, 3] of noisy frames given the low-resolution video."""
  cfg: EfficientUNetConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, cond: dict, *, train: bool = False
               ) -> jax.Array:
    """x [B, T, S, S, 3], t [B], cond (see `network_input`) -> prediction [B, T, S, S, 3]."""
    cfg, kw = self.cfg, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, nf = x.shape[:2]
    div = 2 ** (len(cfg.channel_mult) - 1)
    if x.ndim != 5 or x.shape[-1] != cfg.image_channels or x.shape[2] % div or x.shape[3] % div:
      raise ValueError(f"x has shape {x.shape}; expected [B, T, H, W, {cfg.image_channels}] "
                       f"with H and W divisible by {div}.")
    if t.shape != (b,):
      raise ValueError(f"t has shape {t.shape}; expected [B] = ({b},).")
    aug = cond.get("aug_level")
    aug = jnp.zeros((b,), jnp.float32) if aug is None else jnp.asarray(aug, jnp.float32)
    if aug.shape != (b,):
      raise ValueError(f"cond['aug_level'] has shape {aug.shape}; expected [B] = ({b},).")
    e = cfg.channels * cfg.emb_mult
    emb = (TimeEmbed(e, cfg.channels, name="time_embed", **kw)(t)
           + TimeEmbed(e, cfg.channels, name="aug_embed", **kw)(aug * AUG_SCALE))
    emb = jnp.repeat(emb, nf, axis=0)   # [B*T, E], frame-major within each example

    h = conv(cfg.channels, 3, name="conv_in", **kw)(network_input(cfg, x, cond))
    h = nn.with_logical_constraint(h, FOLDED)
    block = lambda features, temporal, name: ResBlock(
        cfg, features, temporal, cfg.temporal_kernel, name=name, **kw)
    skips = []
    for i, mult in enumerate(cfg.channel_mult):
      if i:   # downsample first: the level's blocks run at its lower resolution
        h = conv(h.shape[-1], 3, strides=2, name=f"downsample_{i}", **kw)(h)
      for j in range(cfg.num_res_blocks[i]):
        temporal = cfg.temporal_blocks == "all" or j == 0
        h = block(cfg.channels * mult, temporal, f"down_{i}_{j}")(h, emb, num_frames=nf,
                                                                  train=train)
        if cfg.attention[i]:
          h = Attention(cfg, name=f"down_{i}_{j}_attn", **kw)(h)
      skips.append(h)
    for i in reversed(range(len(cfg.channel_mult))):
      h = jnp.concatenate([h, skips.pop() * (2 ** -0.5)], axis=-1)
      for j in range(cfg.num_res_blocks[i]):
        h = block(cfg.channels * cfg.channel_mult[i], False, f"up_{i}_{j}")(
            h, emb, num_frames=nf, train=train)
        if cfg.attention[i]:
          h = Attention(cfg, name=f"up_{i}_{j}_attn", **kw)(h)
      if i:   # upsample last: the next level's blocks run at its higher resolution
        h = conv(cfg.channels * cfg.channel_mult[i - 1], 3, name=f"upsample_{i}", **kw)(
            _upsample(h))
        h = nn.with_logical_constraint(h, FOLDED)
    h = nn.swish(group_norm(cfg.num_groups, name="norm_out", **kw)(h))
    out = conv(cfg.image_channels, 3, zero_init=True, name="conv_out",
               axes=("conv_h", "conv_w", "conv_in", None), **kw)(h)
    return out.reshape(x.shape).astype(jnp.float32)


def network_input(cfg: EfficientUNetConfig, x: jax.Array, cond: dict) -> jax.Array:
  """The folded input [B*T, S, S, cfg.in_channels] of noisy frames x [B, T, S, S, 3].

  cond: 'low' [B, T, S, S, 3] the low-resolution video upsampled to S (after the noise
  augmentation); 'controls' [B, T, S, S, 22] the controls of each frame at S; with cfg.outpaint,
  optionally 'context' [B, T, S, S, 3] known frames and 'context_mask' [B, T] (1 = known);
  'aug_level' [B] (read by the network, not here). 'low' and 'controls' are required.
  """
  b, nf, s1, s2, c = x.shape
  get = lambda key, shape, required=False: cond_array(  # noqa: E731
      cond, key, shape, required).astype(x.dtype)

  parts = [x, get("low", (b, nf, s1, s2, c), True),
           get("controls", (b, nf, s1, s2, cfg.control_channels), True)]
  if cfg.outpaint:
    mask = get("context_mask", (b, nf))
    parts += [get("context", (b, nf, s1, s2, c)) * mask[..., None, None, None],
              jnp.broadcast_to(mask[..., None, None, None], (b, nf, s1, s2, 1)).astype(x.dtype)]
  h = jnp.concatenate(parts, axis=-1)
  return nn.with_logical_constraint(h.reshape((b * nf, s1, s2, h.shape[-1])), FOLDED)
