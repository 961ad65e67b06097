"""Audio of any length -> motion at 24 fps with the causal motion model (paper §3.1).

Long audio is generated in windows of `window` frames that advance by `window - overlap`; each
window after the first receives the last `overlap` frames already generated as known context
(the model was trained with random clean context prefixes), so it continues them instead of
starting afresh: there is no seam. The whole generation, every window and every denoising step, is
one pure function (`lax.scan` over windows, `lax.fori_loop` over steps) that jits once per audio
length and number of samples.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from vlogger_jax import diffusion
from vlogger_jax import motion as motion_lib

# apply(params, x_t, t, mel, mask, context, context_mask, audio_keep) -> prediction [B, W, 223]
ApplyFn = Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  window: int = 240
  overlap: int = 120
  sampler: str = "ddpm"          # ddpm (the paper's, all steps) | ddim
  num_steps: int | None = None   # ddim steps
  guidance: float = 5.0          # classifier-free guidance weight on the audio; 1 = conditional
  prediction: str = "x0"

  def __post_init__(self):
    if not 0 <= self.overlap < self.window:
      raise ValueError(f"overlap {self.overlap} must lie in [0, window={self.window}).")


def num_windows(num_frames: int, window: int, overlap: int) -> int:
  """Windows needed to cover `num_frames` frames."""
  stride = window - overlap
  return max(1, -(-(num_frames - overlap) // stride)) if num_frames > window else 1


def sample_window(apply: ApplyFn, params, schedule: diffusion.Schedule, mel, mask, context,
                  context_mask, key, cfg: SamplerConfig):
  """One window: mel [B,W,256], mask/context_mask [B,W], context [B,W,223] -> motion [B,W,223]."""
  b = mel.shape[0]

  def denoise(x, t):
    if cfg.guidance == 1.0:
      return apply(params, x, t, mel, mask, context, context_mask, jnp.ones((b,)))
    two = lambda a: jnp.concatenate([a, a], axis=0)
    keep = jnp.concatenate([jnp.ones((b,)), jnp.zeros((b,))])
    pred = apply(params, two(x), two(t), two(mel), two(mask), two(context), two(context_mask),
                 keep)
    return diffusion.guide(pred[:b], pred[b:], cfg.guidance)

  x_T = jax.random.normal(jax.random.fold_in(key, 0), context.shape, jnp.float32)
  out = diffusion.sample(denoise, schedule, x_T, jax.random.fold_in(key, 1), sampler=cfg.sampler,
                         num_steps=cfg.num_steps, prediction=cfg.prediction)
  return jnp.where(context_mask[..., None] > 0, context, out)


def generate(apply: ApplyFn, params, schedule: diffusion.Schedule, mel, key,
             cfg: SamplerConfig, num_samples: int = 1):
  """Normalised motion [num_samples, T, 223] for mel [T, 256] (T any length)."""
  num_frames = mel.shape[0]
  w, o = cfg.window, cfg.overlap
  stride = w - o
  n = num_windows(num_frames, w, o)
  padded = (n - 1) * stride + w
  mel = jnp.pad(mel, ((0, padded - num_frames), (0, 0)))
  valid = (jnp.arange(padded) < num_frames).astype(jnp.float32)
  mel = jnp.broadcast_to(mel, (num_samples,) + mel.shape)
  buffer = jnp.zeros((num_samples, padded, motion_lib.MOTION_DIM), jnp.float32)

  def one_window(buffer, k):
    start = k * stride
    win = lambda a: jax.lax.dynamic_slice_in_dim(a, start, w, axis=1)
    ctx_mask = jnp.where(k > 0, (jnp.arange(w) < o).astype(jnp.float32), 0.0)
    ctx_mask = jnp.broadcast_to(ctx_mask, (num_samples, w))
    mask = jnp.broadcast_to(jax.lax.dynamic_slice_in_dim(valid, start, w), (num_samples, w))
    out = sample_window(apply, params, schedule, win(mel), mask, win(buffer), ctx_mask,
                        jax.random.fold_in(key, k), cfg)
    return jax.lax.dynamic_update_slice_in_dim(buffer, out, start, axis=1), None

  buffer, _ = jax.lax.scan(one_window, buffer, jnp.arange(n))
  return buffer[:, :num_frames]
