"""Windowed generation: window layout, context reuse, per-example keys, and through
VideoModel.generate with an oracle denoiser: guidance, the three samplers, constant memory."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO

from vlogger_jax import contracts
from vlogger_jax import diffusion
from vlogger_jax import head as head_lib
from vlogger_jax import windowed_sampler as ws
from vlogger_jax.data import synthetic
from vlogger_jax.models import video as video_lib
from vlogger_jax.train import config_lib

S = 16
CONFIG = os.path.join(REPO, "configs/base128.py:tiny")   # window (data.num_frames) 8, overlap 4


@pytest.fixture(scope="module")
def head_model():
  return head_lib.load_default()


def video_config(**overrides):
  return config_lib.overridden(config_lib.load_config_file(CONFIG),
                               **{"data.resolution": S, "pretrained": "none", **overrides})


def _clip(head_model, length, seed=0):
  """Motion parameters of a synthetic clip of `length` frames, reference = its first frame."""
  p = synthetic.plan_clip(seed, num_frames=length, resolution=S, head_model=head_model)
  clip = {"shape": p.shape, "fov": np.float32(p.fov), "expression": p.expression,
          "head_pose": p.head_pose, "body_keypoints": p.body_keypoints,
          "body_visibility": p.body_visibility}
  clip.update({f"ref_{k}": clip[k][0] for k in contracts.FRAME_KEYS})
  return {k: np.asarray(v, np.float32) for k, v in clip.items()}


def _batch(clips):
  return {k: np.stack([c[k] for c in clips]) for k in clips[0]}


def test_windows_advance_by_a_constant_stride_and_pad_the_end():
  np.testing.assert_array_equal(ws.window_starts(8, 8, 4), [0])
  np.testing.assert_array_equal(ws.window_starts(16, 8, 4), [0, 4, 8])
  np.testing.assert_array_equal(ws.window_starts(21, 8, 2), [0, 6, 12, 18])
  assert ws.padded_length(21, 8, 2) == 26
  np.testing.assert_array_equal(ws.window_starts(20, 8, 0), [0, 8, 16])
  assert ws.padded_length(20, 8, 0) == 24
  np.testing.assert_array_equal(ws.window_starts(5, 8, 4), [0])   # shorter than a window
  assert ws.padded_length(5, 8, 4) == 8
  for length, overlap in [(9, 4), (100, 2), (1000, 4), (57, 6), (5, 4), (1, 0), (8, 7)]:
    starts = ws.window_starts(length, 8, overlap)
    padded = ws.padded_length(length, 8, overlap)
    stride = 8 - overlap
    assert len(starts) == ws.num_windows(length, 8, overlap)
    assert starts[0] == 0 and padded == starts[-1] + 8 >= length
    assert np.all(np.diff(starts) == stride)    # constant stride: `overlap` frames of context each
    assert padded - length < stride             # the last window adds at least one real frame
  with pytest.raises(ValueError, match="length is 0 frames"):
    ws.window_starts(0, 8, 4)
  with pytest.raises(ValueError, match="overlap is 8"):
    ws.SamplerConfig(overlap=8).validate()


@pytest.mark.parametrize("length,overlap", [(21, 2), (23, 6), (5, 4)])
def test_each_window_continues_the_frames_before_it_and_the_output_is_cut(length, overlap):
  # A denoiser that predicts x0 = frame index + 1000 * window index: each frame of the output
  # tells which window generated it, so regenerated context would show.
  w, batch = 8, 2
  stride = w - overlap
  cfg = ws.SamplerConfig(window=w, overlap=overlap, sampler="ddim", num_steps=1,
                         prediction="x0")
  seen = []

  def record(*arrays):
    seen.append([np.asarray(a) for a in arrays])

  def window_cond(start, context, context_mask, valid):
    jax.debug.callback(record, start, context, context_mask, valid, ordered=True)
    frame = (start + jnp.arange(w)).astype(jnp.float32)
    return {"x0": jnp.broadcast_to(frame + 1000.0 * (start // stride), (batch, w))[..., None]}

  out = np.asarray(ws.generate(lambda x, t, cond, drop: cond["x0"], window_cond,
                               diffusion.make_schedule(10), ws.batch_keys(jax.random.PRNGKey(0),
                                                                          batch),
                               (1,), length, cfg))
  starts = ws.window_starts(length, w, overlap)
  padded = ws.padded_length(length, w, overlap)
  first = np.full(padded, -1)          # the window that generates each frame of the padded run
  for c, s in enumerate(starts):
    new = np.arange(s, s + w)[first[s:s + w] < 0]
    first[new] = c
  want = np.arange(padded) + 1000.0 * first
  assert out.shape == (batch, length, 1)
  np.testing.assert_array_equal(out[..., 0], np.broadcast_to(want[:length], (batch, length)))
  assert [int(s[0]) for s in seen] == list(starts)
  for c, (start, context, context_mask, valid) in enumerate(seen):
    keep = (np.arange(w) < overlap) & (c > 0)     # exactly `overlap` context frames, none at 0
    np.testing.assert_array_equal(context_mask, np.broadcast_to(keep, (batch, w)))
    np.testing.assert_array_equal(context[:, keep, 0],
                                  np.broadcast_to(want[start:start + w][keep], (batch, keep.sum())))
    np.testing.assert_array_equal(valid, start + np.arange(w) < length)


def test_a_batch_equals_separate_calls_with_the_matching_keys():
  cfg = ws.SamplerConfig(window=8, overlap=4, sampler="ddim", num_steps=3, eta=1.0,
                         guidance=2.0)

  def window_cond(start, context, context_mask, valid):
    return {"context": context, "mask": context_mask}

  def apply(x, t, cond, drop):   # uses x, the context and the guidance branch
    keep = 1.0 - drop.astype(jnp.float32)
    return 0.5 * x + 0.3 * cond["mask"][..., None] * cond["context"] + 0.1 * keep[:, None, None]

  gen = jax.jit(lambda keys: ws.generate(apply, window_cond, diffusion.make_schedule(100), keys,
                                         (2,), 13, cfg))
  keys = ws.batch_keys(jax.random.PRNGKey(0), 3)
  together = np.asarray(gen(keys))
  assert together.shape == (3, 13, 2)
  for i in range(3):
    np.testing.assert_allclose(together[i:i + 1], gen(keys[i:i + 1]), atol=1e-6)
  assert np.abs(together[0] - together[1]).max() > 0.1    # other keys, other samples
  with pytest.raises(ValueError, match=r"keys have shape \(2,\); expected one PRNG key"):
    ws.check_keys(jax.random.PRNGKey(0), 3)


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


class OracleVideoModel(video_lib.VideoModel):
  """The video model with the oracle in place of its network."""

  def apply(self, params, x, t, cond, rng=None):
    return _oracle(self.schedule, x, t, cond)


def _expected(controls, starts, window, weight):
  """The oracle's video [padded, S, S, 3], window by window, in numpy: what correct outpainting
  must produce from the controls of the padded sequence."""
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
  length, w = 21, 8
  model = OracleVideoModel(video_config(**{"diffusion.num_steps":
                                           50 if sampler == "ddpm" else 1000}))
  clips = [_clip(head_model, length, seed) for seed in (0, 1)]    # a batch of two people
  cfg = model.sampler_config(overlap=overlap, sampler=sampler, num_steps=3, guidance=weight)
  keys = ws.batch_keys(jax.random.PRNGKey(0), 2)
  out = np.asarray(model.jitted_generate(None, np.zeros((2, S, S, 3), np.float32),
                                         _batch(clips), keys, cfg))
  assert out.shape == (2, length, S, S, 3)
  starts = ws.window_starts(length, w, overlap)
  padded = ws.padded_length(length, w, overlap)
  for b, clip in enumerate(clips):
    controls = np.asarray(video_lib.frame_controls(
        head_model, np.broadcast_to(clip["shape"], (length, 64)), np.full(length, clip["fov"]),
        *(clip[k] for k in contracts.FRAME_KEYS), S), np.float64)
    # Frames past the end repeat the last frame's controls; they are generated, then cut.
    controls = np.concatenate([controls, np.repeat(controls[-1:], padded - length, 0)])
    want = _expected(controls, starts, w, weight)
    np.testing.assert_allclose(out[b], want[:length], atol=2e-3)
    # The check has teeth: ignoring the context would change the frames of the later windows.
    no_context = np.clip(weight * 0.3 * np.tanh(controls[..., :3] + controls[..., 3:6]), -1, 1)
    np.testing.assert_allclose(want[:w], no_context[:w])
    assert np.abs(want - no_context)[w:length].max() > 0.05


def test_real_model_memory_does_not_grow_with_length(head_model):
  model = video_lib.VideoModel(video_config())
  params = nn.meta.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0)))
  cfg = model.sampler_config(sampler="dpm", num_steps=2)
  abstract = lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype)
  temp = {}
  for length in (16, 64):
    clip = jax.tree.map(abstract, _batch([_clip(head_model, length)]))
    compiled = model.jitted_generate.lower(
        params, jax.ShapeDtypeStruct((1, S, S, 3), jnp.float32), clip,
        jax.ShapeDtypeStruct((1, 2), jnp.uint32), cfg=cfg).compile()
    mem = compiled.memory_analysis()
    temp[length] = mem.temp_size_in_bytes
    assert mem.output_size_in_bytes == length * S * S * 3 * 4
  # Four times the frames, the same working memory: anything kept per window or per frame (a
  # stacked history, controls rendered for the whole video) would add more than 12 frames' worth.
  assert temp[64] - temp[16] < 12 * S * S * 3 * 4, temp
