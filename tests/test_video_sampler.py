"""Temporal outpainting: window layout, context reuse, guidance, samplers, constant memory."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlogger_jax import diffusion
from vlogger_jax import head as head_lib
from vlogger_jax import video_sampler
from vlogger_jax.data import synthetic
from vlogger_jax.nn import unet as unet_lib

S = 16


@pytest.fixture(scope="module")
def head_model():
  return head_lib.load_default()


def _clip(head_model, length, seed=0):
  """Motion parameters of a synthetic clip of `length` frames, reference = its first frame."""
  p = synthetic.plan_clip(seed, num_frames=length, resolution=S, head_model=head_model)
  clip = {"shape": p.shape, "fov": np.float32(p.fov), "expression": p.expression,
          "head_pose": p.head_pose, "body_keypoints": p.body_keypoints,
          "body_visibility": p.body_visibility}
  clip.update({f"ref_{k}": clip[k][0] for k in video_sampler.FRAME_KEYS})
  return {k: np.asarray(v, np.float32) for k, v in clip.items()}


def test_windows_cover_the_video_with_the_requested_overlap():
  np.testing.assert_array_equal(video_sampler.window_starts(8, 8, 4), [0])
  np.testing.assert_array_equal(video_sampler.window_starts(16, 8, 4), [0, 4, 8])
  np.testing.assert_array_equal(video_sampler.window_starts(21, 8, 2), [0, 6, 12, 13])
  np.testing.assert_array_equal(video_sampler.window_starts(20, 8, 0), [0, 8, 12])
  for length, overlap in [(9, 4), (100, 2), (1000, 4), (57, 6)]:
    starts = video_sampler.window_starts(length, 8, overlap)
    assert starts[0] == 0 and starts[-1] + 8 == length
    assert np.all(np.diff(starts)[:-1] == 8 - overlap)       # constant stride ...
    assert 0 < np.diff(starts)[-1] <= 8 - overlap             # ... the last window shifted back
  with pytest.raises(ValueError, match="length is 5 frames"):
    video_sampler.window_starts(5, 8, 4)
  with pytest.raises(ValueError, match="overlap is 8"):
    video_sampler.SamplerConfig(overlap=8).validate()


def _oracle(schedule, x_t, t, cond):
  """A perfect denoiser of a known rule, as ε: x0 = 0.5 * (mean of the context frames) plus a
  per-frame signal from the controls; 0 when cond['drop'] (the unconditional branch)."""
  mask = cond["context_mask"][..., None, None, None]
  ctx = jnp.sum(cond["context"] * mask, axis=1, keepdims=True) / jnp.maximum(
      jnp.sum(mask, axis=1, keepdims=True), 1.0)
  signal = 0.3 * jnp.tanh(cond["controls"][..., :3] + cond["controls"][..., 3:6])
  x0 = 0.5 * ctx + signal
  if "drop" in cond:
    x0 = x0 * (1.0 - cond["drop"].astype(jnp.float32))[:, None, None, None, None]
  return diffusion.eps_from_x0(schedule, x_t, t, x0)


def _expected(controls, starts, window, weight):
  """The oracle's video, window by window, in numpy: what correct outpainting must produce."""
  out = np.zeros(controls.shape[:1] + (S, S, 3), np.float64)
  known = 0
  for s in starts:
    idx = np.arange(s, s + window)
    mask = idx < known
    ctx = out[idx[mask]].mean(0) if mask.any() else np.zeros((S, S, 3))
    signal = 0.3 * np.tanh(controls[idx, ..., :3] + controls[idx, ..., 3:6])
    new = np.clip(weight * (0.5 * ctx + signal), -1, 1)
    out[idx[~mask]] = new[~mask]
    known = s + window
  return out


@pytest.mark.parametrize("sampler,overlap,weight", [("ddim", 4, 1.0), ("dpm", 2, 1.0),
                                                    ("ddpm", 4, 2.0)])
def test_outpainting_returns_every_frame_and_conditions_on_the_previous_window(
    head_model, sampler, overlap, weight):
  length = 21
  schedule = diffusion.make_schedule(50 if sampler == "ddpm" else 1000)
  clip = _clip(head_model, length)
  cfg = video_sampler.SamplerConfig(window=8, overlap=overlap, sampler=sampler, num_steps=3,
                                    guidance=weight)
  apply = lambda params, x, t, cond: _oracle(schedule, x, t, cond)
  gen = jax.jit(functools.partial(video_sampler.generate, apply, cfg=cfg))
  out = np.asarray(gen(None, schedule, head_model, np.zeros((S, S, 3), np.float32), clip,
                       jax.random.PRNGKey(0)))
  assert out.shape == (length, S, S, 3)
  controls = np.asarray(video_sampler.frame_controls(
      head_model, np.broadcast_to(clip["shape"], (length, 64)), np.full(length, clip["fov"]),
      *(clip[k] for k in video_sampler.FRAME_KEYS), S), np.float64)
  starts = video_sampler.window_starts(length, 8, overlap)
  want = _expected(controls, starts, 8, weight)
  np.testing.assert_allclose(out, want, atol=2e-3)
  # The check has teeth: ignoring the context would change the frames of the later windows.
  no_context = np.clip(weight * 0.3 * np.tanh(controls[..., :3] + controls[..., 3:6]), -1, 1)
  np.testing.assert_allclose(want[:8], no_context[:8])
  assert np.abs(want - no_context)[8:].max() > 0.05


def test_real_model_memory_does_not_grow_with_length(head_model):
  cfg = unet_lib.control_config("tiny")
  model = unet_lib.ControlledVideoUNet(cfg)
  cc = cfg.control_channels
  cond = {"ref": np.zeros((1, S, S, 3), np.float32),
          "ref_controls": np.zeros((1, S, S, cc), np.float32),
          "controls": np.zeros((1, 8, S, S, cc), np.float32)}
  params = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, 8, S, S, 3), np.float32),
                         np.zeros((1,), np.int32), cond)["params"])
  apply = lambda p, x, t, c: model.apply({"params": p}, x, t, c)
  schedule = diffusion.make_schedule(1000)
  scfg = video_sampler.SamplerConfig(sampler="dpm", num_steps=2)
  gen = jax.jit(functools.partial(video_sampler.generate, apply, cfg=scfg))
  abstract = lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype)
  temp = {}
  for length in (16, 64):
    clip = jax.tree.map(abstract, _clip(head_model, length))
    compiled = gen.lower(params, schedule, head_model, jax.ShapeDtypeStruct((S, S, 3), jnp.float32),
                         clip, jax.random.PRNGKey(0)).compile()
    mem = compiled.memory_analysis()
    temp[length] = mem.temp_size_in_bytes
    assert mem.output_size_in_bytes == length * S * S * 3 * 4
  # Four times the frames, the same working memory: anything kept per window or per frame (a
  # stacked history, controls rendered for the whole video) would add more than 12 frames' worth.
  assert temp[64] - temp[16] < 12 * S * S * 3 * 4, temp
