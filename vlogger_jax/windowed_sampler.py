"""The one windowed sampler: sequences of any length in overlapping windows (paper §3.1, §3.2).

The motion model (audio -> motion), the base video model (motion -> frames) and, next, the
super-resolution stages all generate long sequences the same way. A model denoises `window`
frames at a time. The first window starts from noise; window c > 0 starts `stride = window -
overlap` frames after the previous one and receives its first `overlap` frames, already generated,
as clean context (with a mask, as the models were trained), so it continues them instead of
starting afresh. The sequence is padded at the end to `(num_windows - 1) * stride + window`
frames (`valid` marks the real ones) and cut back to its length afterwards, so every window keeps
exactly `overlap` context frames, as in training.

Everything is one pure function: `lax.scan` over windows whose carry is the output buffer,
`lax.fori_loop` over denoising steps (vlogger_jax/diffusion.py). Memory does not grow with the
length beyond the buffer itself; jit compiles once per (length, batch, SamplerConfig). Every
shape may be symbolic in the batch dimension, so the samplers export with `jax.export`.

Randomness is per example: `keys` [B, 2] holds one PRNG key per batch element, and window c of
example b draws its starting noise from fold_in(fold_in(keys[b], c), 0) and its sampler noise from
fold_in(fold_in(keys[b], c), 1). A batch therefore equals separate calls with the matching keys.

Classifier-free guidance doubles the batch: [conditional; unconditional], the second half with
`drop` set, in one model call per step.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from vlogger_jax import diffusion

SAMPLERS = diffusion.SAMPLERS
# apply(x [B', W, *F], t [B'], cond (pytree, leading dim B'), drop [B'] bool) -> prediction
Apply = Callable[[jax.Array, jax.Array, Any, jax.Array], jax.Array]
# window_cond(start, context [B, W, *F], context_mask [B, W], valid [W]) -> cond (leading dim B)
WindowCond = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], Any]


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """How to generate: window and overlap, the diffusion sampler and its steps, guidance."""
  window: int = 8                 # frames the model denoises together
  overlap: int = 4                # context frames kept from the previous window
  sampler: str = "ddpm"           # 'ddpm' (all steps, the paper's) | 'ddim' | 'dpm' (DPM-Solver++)
  num_steps: int = 50             # for 'ddim' and 'dpm'
  eta: float = 0.0                # 'ddim' noise: 0 deterministic, 1 ancestral
  guidance: float = 1.0           # 1: conditional only; w: uncond + w (cond - uncond)
  prediction: str = "eps"         # the model's parameterisation: 'eps' | 'x0' | 'v'
  clip_x0: bool = False           # clip x0 estimates and the output to [-1, 1] (pixels)

  def validate(self) -> None:
    """Raises ValueError with one sentence for a configuration no run could use."""
    if self.window < 1:
      raise ValueError(f"sampler window is {self.window}; expected at least 1 frame.")
    if not 0 <= self.overlap < self.window:
      raise ValueError(f"sampler overlap is {self.overlap}; expected 0 <= overlap < window "
                       f"= {self.window} so that every window adds new frames.")
    if self.sampler not in SAMPLERS:
      raise ValueError(f"sampler '{self.sampler}' is unknown; expected one of {SAMPLERS}.")
    if self.num_steps is None or self.num_steps < 1:
      raise ValueError(f"sampler num_steps is {self.num_steps}; expected a positive number.")
    if self.prediction not in diffusion.PREDICTIONS:
      raise ValueError(f"sampler prediction '{self.prediction}' is unknown; expected one of "
                       f"{diffusion.PREDICTIONS}.")


def num_windows(length: int, window: int, overlap: int) -> int:
  """Windows needed to cover `length` frames."""
  if length < 1:
    raise ValueError(f"sequence length is {length} frames; expected at least 1.")
  stride = window - overlap
  return 1 if length <= window else 1 + -(-(length - window) // stride)


def window_starts(length: int, window: int, overlap: int) -> np.ndarray:
  """First frame of each window [num_windows]: 0, stride, 2 stride, ..."""
  return (np.arange(num_windows(length, window, overlap)) * (window - overlap)).astype(np.int32)


def padded_length(length: int, window: int, overlap: int) -> int:
  """Frames the windows cover: `length` rounded up to the last window's end."""
  return int(window_starts(length, window, overlap)[-1]) + window


def batch_keys(key: jax.Array, num: int) -> jax.Array:
  """`num` independent keys [num, 2] from one key (example i gets jax.random.split(key, num)[i])."""
  return jax.random.split(key, num)


def example_keys(key: jax.Array, num: int) -> jax.Array:
  """Keys [num, 2] with example i's key fold_in(key, i): an example's sample does not depend on
  how many examples are generated with it (example 0 of a batch is the one-example call)."""
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(np.arange(num, dtype=np.uint32))


def check_keys(keys: jax.Array, batch: int) -> None:
  """Raises ValueError unless `keys` is one raw PRNG key per example, shape [batch, 2]."""
  if keys.ndim != 2 or keys.shape[1] != 2 or keys.shape[0] != batch:
    raise ValueError(f"keys have shape {tuple(keys.shape)}; expected one PRNG key per example, "
                     f"[{batch}, 2] (e.g. windowed_sampler.batch_keys(key, {batch})).")


def _guided(apply: Apply, cond, batch, weight: float):
  """denoise(x, t) for one window, with classifier-free guidance when weight != 1."""
  if weight == 1.0:
    drop = jnp.zeros((batch,), bool)
    return lambda x, t: apply(x, t, cond, drop)
  both = jax.tree.map(lambda v: jnp.concatenate([v, v]), cond)
  drop = jnp.concatenate([jnp.zeros((batch,), bool), jnp.ones((batch,), bool)])

  def denoise(x, t):
    out = apply(jnp.concatenate([x, x]), jnp.concatenate([t, t]), both, drop)
    c, u = jnp.split(out.astype(jnp.float32), 2)
    return diffusion.guide(c, u, weight)

  return denoise


def generate(apply: Apply, window_cond: WindowCond, schedule: diffusion.Schedule,
             keys: jax.Array, frame_shape: tuple, length: int, cfg: SamplerConfig,
             context: jax.Array | None = None, first_window: int | jax.Array = 0
             ) -> jax.Array:
  """A batch of sequences [B, length, *frame_shape] (B = keys.shape[0]); see the module doc.

  `window_cond(start, context, context_mask, valid)` returns the model's conditioning for the
  window of frames [start, start + window) of the padded sequence: the model slices its own
  per-frame inputs (padded to `padded_length`), `context` holds the window's frames so far and
  `context_mask` [B, window] marks those that are final, `valid` [window] the frames before
  `length`. `apply(x, t, cond, drop)` is the denoiser, `drop` [B'] marking the unconditional
  half of a guided batch.

  Chunks: `context` [B, overlap, *frame_shape] gives the sequence's first `overlap` frames,
  already generated, to its first window as clean context (they are returned unchanged), and
  `first_window` numbers the windows from there (for their keys; window numbers above 0 take
  their first `overlap` frames as context, so a chunk with first_window 0 ignores `context`, and
  one compiled function serves the first chunk and the rest). Splitting a long sequence into
  chunks whose starts are window starts, each chunk given the previous one's last `overlap`
  frames and its own first window's number, reproduces one call over the whole sequence exactly,
  in the memory of one chunk (vlogger_jax/inference/pipeline.py does this).
  """
  cfg.validate()
  w, o = cfg.window, cfg.overlap
  starts = window_starts(length, w, o)
  padded = int(starts[-1]) + w
  batch = keys.shape[0]
  valid_all = jnp.arange(padded) < length

  has_context = context is not None
  if has_context and tuple(context.shape) != (batch, o) + tuple(frame_shape):
    raise ValueError(f"context has shape {tuple(context.shape)}; expected the first overlap = "
                     f"{o} frames, [{batch}, {o}, {', '.join(map(str, frame_shape))}].")

  def one_window(buffer, xs):
    start, index = xs
    window_context = jax.lax.dynamic_slice_in_dim(buffer, start, w, axis=1)
    first = (jnp.arange(w) < o) & (index + first_window > 0)
    context_mask = jnp.broadcast_to(first.astype(jnp.float32), (batch, w))
    valid = jax.lax.dynamic_slice_in_dim(valid_all, start, w)
    cond = window_cond(start, window_context, context_mask, valid)
    k = diffusion.fold_in(keys, index + first_window)
    x_T = diffusion.batch_noise(diffusion.fold_in(k, 0), (batch, w) + tuple(frame_shape))
    out = diffusion.sample(_guided(apply, cond, batch, cfg.guidance), schedule, x_T,
                           diffusion.fold_in(k, 1), sampler=cfg.sampler,
                           num_steps=cfg.num_steps, eta=cfg.eta, prediction=cfg.prediction,
                           clip_x0=cfg.clip_x0)
    if cfg.clip_x0:
      out = jnp.clip(out, -1.0, 1.0)
    mask = context_mask.reshape((batch, w) + (1,) * len(frame_shape))
    out = jnp.where(mask > 0, window_context, out)
    return jax.lax.dynamic_update_slice_in_dim(buffer, out, start, axis=1), None

  buffer = jnp.zeros((batch, padded) + tuple(frame_shape), jnp.float32)
  if has_context:
    buffer = buffer.at[:, :o].set(jnp.asarray(context, jnp.float32))
  xs = (jnp.asarray(starts), jnp.arange(len(starts), dtype=jnp.int32))
  buffer, _ = jax.lax.scan(one_window, buffer, xs)
  return buffer[:, :length]


def pad_frames(x: jax.Array, padded: int, axis: int = 1, mode: str = "edge") -> jax.Array:
  """x with its frame axis padded at the end to `padded` frames ('edge' repeats the last frame,
  'constant' pads zeros)."""
  pad = [(0, 0)] * x.ndim
  pad[axis] = (0, padded - x.shape[axis])
  return jnp.pad(x, pad, mode=mode)
