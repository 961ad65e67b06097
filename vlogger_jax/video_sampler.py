"""Video generation with the base video model: temporal outpainting over any length (paper §3.2).

The first window of N frames is generated from noise; every later window keeps the last N - N'
frames already generated as clean context (passed with their mask, as in training) and generates
N' new ones. Windows are a `lax.scan` whose carry is the output video, and controls are rendered
from the motion parameters inside each step, so memory does not grow with the length beyond the
output itself; jit compiles once per (length, SamplerConfig). The last window is shifted back to
end exactly at the last frame, so it may keep more context frames than the others. Each window
runs a whole diffusion sampler: DDPM (all steps, the paper's), DDIM or DPM-Solver++(2M),
optionally with classifier-free guidance on the controls and the reference (`cond['drop']` gives
the unconditional branch).

A clip is a dict of motion parameters without a batch dimension (the video batch of the data
pipelines, one example): shape [64], fov [], expression [T, 64], head_pose [T, 9],
body_keypoints [T, 75, 2], body_visibility [T, 75], and the reference frame's ref_expression [64],
ref_head_pose [9], ref_body_keypoints [75, 2], ref_body_visibility [75].
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vlogger_jax import diffusion
from vlogger_jax import render

SAMPLERS = ("ddpm", "ddim", "dpm")
FRAME_KEYS = ("expression", "head_pose", "body_keypoints", "body_visibility")
CLIP_KEYS = ("shape", "fov") + FRAME_KEYS + tuple(f"ref_{k}" for k in FRAME_KEYS)
# apply(params, x [B, N, R, R, 3], t [B], cond) -> prediction [B, N, R, R, 3]
Apply = Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """How to generate: window N, overlap N - N', sampler and its steps, guidance weight."""
  window: int = 8                 # N frames the model denoises together
  overlap: int = 4                # context frames kept from the previous window (50 %)
  sampler: str = "ddpm"           # 'ddpm' (all steps) | 'ddim' | 'dpm' (DPM-Solver++ 2M)
  num_steps: int = 50             # for 'ddim' and 'dpm'
  eta: float = 0.0                # 'ddim' noise: 0 deterministic, 1 ancestral (forgiving of an
                                  # undertrained model, like DDPM)
  guidance: float = 1.0           # 1: conditional only; w: uncond + w (cond - uncond)
  prediction: str = "eps"
  clip_x0: bool = True            # frames live in [-1, 1]

  def validate(self) -> None:
    """Raises ValueError with one sentence for a configuration no run could use."""
    if self.window < 1:
      raise ValueError(f"sampler window is {self.window}; expected at least 1 frame.")
    if not 0 <= self.overlap < self.window:
      raise ValueError(f"sampler overlap is {self.overlap}; expected 0 <= overlap < window "
                       f"= {self.window} so that every window adds new frames.")
    if self.sampler not in SAMPLERS:
      raise ValueError(f"sampler '{self.sampler}' is unknown; expected one of {SAMPLERS}.")
    if self.num_steps < 1:
      raise ValueError(f"sampler num_steps is {self.num_steps}; expected a positive number.")


def window_starts(length: int, window: int, overlap: int) -> np.ndarray:
  """First frame of each window [num_windows]: stride window - overlap, the last one ending at
  `length` exactly."""
  if length < window:
    raise ValueError(f"video length is {length} frames; expected at least the window of "
                     f"{window} frames.")
  stride = window - overlap
  count = 1 + math.ceil((length - window) / stride)
  return np.minimum(np.arange(count) * stride, length - window).astype(np.int32)


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


def _run_sampler(denoise, schedule, x_T, key, cfg: SamplerConfig):
  return diffusion.sample(denoise, schedule, x_T, key, sampler=cfg.sampler,
                          num_steps=cfg.num_steps, eta=cfg.eta, prediction=cfg.prediction,
                          clip_x0=cfg.clip_x0)


def _guided(apply: Apply, params, cond: dict, weight: float):
  """denoise(x, t) for one window, with classifier-free guidance when weight != 1."""
  if weight == 1.0:
    return lambda x, t: apply(params, x, t, cond)
  # Both branches in one call: the batch is [conditional, unconditional].
  both = {k: jnp.concatenate([v, v]) for k, v in cond.items()}
  both["drop"] = jnp.array([False, True])

  def denoise(x, t):
    out = apply(params, jnp.concatenate([x, x]), jnp.concatenate([t, t]), both)
    c, u = jnp.split(out.astype(jnp.float32), 2)
    return diffusion.guide(c, u, weight)

  return denoise


def generate(apply: Apply, params, schedule: diffusion.Schedule, head_model, ref_image: jax.Array,
             clip: dict, key: jax.Array, cfg: SamplerConfig = SamplerConfig()) -> jax.Array:
  """Frames [T, R, R, 3] in [-1, 1] for a reference image [R, R, 3] in [-1, 1] and a clip of T
  frames of motion parameters (module doc); jit it with `apply` and `cfg` static."""
  cfg.validate()
  missing = [k for k in CLIP_KEYS if k not in clip]
  if missing:
    raise ValueError(f"clip lacks '{missing[0]}'; expected the keys {', '.join(CLIP_KEYS)}.")
  size = ref_image.shape[0]
  if ref_image.shape != (size, size, 3):
    raise ValueError(f"ref_image has shape {ref_image.shape}; expected [R, R, 3].")
  length, n = clip["expression"].shape[0], cfg.window
  starts = window_starts(length, n, cfg.overlap)
  # Frames [0, known[c]) are final when window c starts: all that the earlier windows covered.
  known = np.concatenate([[0], starts[:-1] + n]).astype(np.int32)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  shape, fov = f32(clip["shape"]), f32(clip["fov"])
  per_frame = {k: f32(clip[k]) for k in FRAME_KEYS}
  ref_controls = frame_controls(head_model, shape[None], fov[None],
                                *(f32(clip[f"ref_{k}"])[None] for k in FRAME_KEYS), size)
  ref = f32(ref_image)[None]

  def window(out, xs):
    start, known_end, index = xs
    seg = {k: jax.lax.dynamic_slice_in_dim(v, start, n) for k, v in per_frame.items()}
    controls = frame_controls(head_model, jnp.broadcast_to(shape, (n,) + shape.shape),
                              jnp.broadcast_to(fov, (n,)), *(seg[k] for k in FRAME_KEYS), size)
    context = jax.lax.dynamic_slice_in_dim(out, start, n)
    mask = (start + jnp.arange(n) < known_end).astype(jnp.float32)
    cond = {"ref": ref, "ref_controls": ref_controls, "controls": controls[None],
            "context": context[None], "context_mask": mask[None]}
    k = jax.random.fold_in(key, index)
    x_T = jax.random.normal(jax.random.fold_in(k, 0), (1, n, size, size, 3), jnp.float32)
    x0 = _run_sampler(_guided(apply, params, cond, cfg.guidance), schedule, x_T,
                      jax.random.fold_in(k, 1), cfg)[0]
    frames = jnp.where(mask[:, None, None, None] > 0, context, jnp.clip(x0, -1.0, 1.0))
    return jax.lax.dynamic_update_slice_in_dim(out, frames, start, 0), None

  out0 = jnp.zeros((length, size, size, 3), jnp.float32)
  xs = (jnp.asarray(starts), jnp.asarray(known), jnp.arange(len(starts), dtype=jnp.int32))
  out, _ = jax.lax.scan(window, out0, xs)
  return out
