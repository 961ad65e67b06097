"""The audio-to-motion model: causality, masking, guidance, learning and long-audio generation."""

import copy
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import REPO

from vlogger_jax import audio as audio_lib
from vlogger_jax import motion as motion_lib
from vlogger_jax import windowed_sampler
from vlogger_jax.train import config_lib
from vlogger_jax.train.tasks.motion import MotionTask

W = 96  # a short window keeps CPU tests fast; the paper's is 240


def tiny_task(stats=None, **overrides):
  base = config_lib.load_config_file(os.path.join(REPO, "configs/motion.py:tiny"))
  task = MotionTask(config_lib.overridden(
      base, **{"data.max_frames": W, "sampling.overlap": W // 2, **overrides}))
  task.stats = stats or motion_lib.Stats.identity()
  return task


def speechlike(seconds, seed):
  """Audio of voiced syllables with pauses, and its per-frame loudness (the 'mouth opening')."""
  rng = np.random.default_rng(seed)
  n = int(seconds * audio_lib.SAMPLE_RATE)
  t = np.arange(n) / audio_lib.SAMPLE_RATE
  env = np.zeros(n)
  pos = 0
  while pos < n:
    length = int(rng.uniform(0.12, 0.3) * audio_lib.SAMPLE_RATE)
    if rng.uniform() < 0.75:
      env[pos:pos + length] = np.sin(np.linspace(0, np.pi, len(env[pos:pos + length]))) \
          * rng.uniform(0.4, 1.0)
    pos += length
  wave = env * (np.sin(2 * np.pi * 140 * t) + 0.5 * np.sin(2 * np.pi * 700 * t)
                + 0.3 * np.sin(2 * np.pi * 1200 * t))
  frames = audio_lib.num_frames(n)
  centers = audio_lib.frame_centers(frames)
  opening = env[np.minimum(centers, n - 1)]
  return wave.astype(np.float32) * 0.3, opening.astype(np.float32)


def motion_from_opening(opening):
  """Motion vectors whose jaw_open (dim 0) follows the opening; the rest small and smooth."""
  m = np.zeros((len(opening), motion_lib.MOTION_DIM), np.float32)
  m[:, 0] = opening
  m[:, 6] = 0.3 * opening
  return m


def _apply_params(task):
  return task.init(jax.random.PRNGKey(0))


def test_causal_mask_holds():
  task = tiny_task()
  params = _apply_params(task)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(1, W, 223)), jnp.float32)
  mel = jnp.asarray(rng.normal(size=(1, W, 256)), jnp.float32)
  mask = jnp.ones((1, W))
  t = jnp.array([500])
  i = 40
  out = task.model.apply(params, x, t, mel, mask)
  x2 = x.at[:, i + 1:].set(rng.normal(size=(1, W - i - 1, 223)))
  mel2 = mel.at[:, i + 1:].set(5.0)
  out2 = task.model.apply(params, x2, t, mel2, mask)
  np.testing.assert_allclose(out2[:, :i + 1], out[:, :i + 1], atol=1e-5)
  assert float(jnp.abs(out2[:, i + 1:] - out[:, i + 1:]).max()) > 1e-3  # later frames do change


def test_padded_frames_contribute_nothing_to_the_loss():
  task = tiny_task()
  params = _apply_params(task)
  rng = np.random.default_rng(1)
  valid = 60
  mask = (np.arange(W) < valid).astype(np.float32)[None].repeat(2, 0)
  batch = {"motion": rng.normal(size=(2, W, 223)).astype(np.float32),
           "mel": rng.normal(size=(2, W, 256)).astype(np.float32), "mask": mask}
  garbage = {k: v.copy() for k, v in batch.items()}
  garbage["motion"][:, valid:] = 1e3
  garbage["mel"][:, valid:] = -1e3
  key = jax.random.PRNGKey(3)
  l1, _ = task.loss(params, batch, key)
  l2, _ = task.loss(params, garbage, key)
  assert float(l1) == pytest.approx(float(l2), rel=1e-6)


def test_guidance_weight_one_is_conditional_and_zero_unconditional():
  task = tiny_task()
  params = _apply_params(task)
  rng = np.random.default_rng(2)
  mel = jnp.asarray(rng.normal(size=(2, W, 256)), jnp.float32)   # one window: no context
  keys = windowed_sampler.batch_keys(jax.random.PRNGKey(0), 2)

  def run(guidance, keep=None):
    model = task.model
    if keep is not None:   # the model with its audio kept (1) or dropped (0) whatever the sampler
      model = copy.copy(task.model)
      model.apply = lambda p, x, t, m, k, c, cm, _: task.model.apply(p, x, t, m, k, c, cm, keep)
      guidance = 1.0
    cfg = model.sampler_config(guidance=guidance, sampler="ddim", num_steps=5, window=W)
    return model.generate(params, mel, keys, cfg)

  np.testing.assert_allclose(run(1.0), run(None, keep=jnp.ones(2)), atol=1e-5)
  np.testing.assert_allclose(run(0.0), run(None, keep=jnp.zeros(2)), atol=1e-4)
  assert float(jnp.abs(run(5.0) - run(1.0)).max()) > 1e-3


@pytest.fixture(scope="module")
def overfit():
  """A tiny model trained on windows of one speech-like clip (20 s)."""
  wave, opening = speechlike(20.0, seed=0)
  mel = np.asarray(audio_lib.mel_features(wave))
  target = motion_from_opening(opening)
  stats = motion_lib.Stats.from_vectors(target)
  norm = stats.normalize(target)
  task = tiny_task(stats, **{"context.p": 0.5})
  params = _apply_params(task)
  tx = optax.adam(optax.cosine_onecycle_schedule(1000, 2e-3))
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, batch, key):
    (loss, _), g = jax.value_and_grad(task.loss, has_aux=True)(params, batch, key)
    upd, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, upd), opt, loss

  rng = np.random.default_rng(0)
  losses = []
  for i in range(1000):
    starts = rng.integers(0, len(mel) - W, size=8)
    batch = {"mel": np.stack([mel[s:s + W] for s in starts]),
             "motion": np.stack([norm[s:s + W] for s in starts]),
             "mask": np.ones((8, W), np.float32)}
    params, opt, loss = step(params, opt, batch, jax.random.PRNGKey(i))
    losses.append(float(loss))
  return task, params, stats, losses, (mel, opening)


def test_tiny_model_overfits_one_clip_and_tracks_the_mouth(overfit):
  task, params, stats, losses, (mel, opening) = overfit
  assert np.mean(losses[-50:]) < np.mean(losses[:20]) / 5
  cfg = task.model.sampler_config(sampler="ddim", num_steps=25, guidance=2.0, window=W,
                                  overlap=W // 2)
  samples = jnp.broadcast_to(jnp.asarray(mel[:W * 2]), (2, W * 2, mel.shape[1]))
  keys = windowed_sampler.batch_keys(jax.random.PRNGKey(1), 2)
  motion = np.asarray(task.model.jitted_generate(params, samples, keys, cfg))
  jaw = stats.denormalize(motion)[..., 0]
  corrs = [np.corrcoef(sample, opening[:W * 2])[0, 1] for sample in jaw]
  print("mouth correlation per sample:", corrs)
  assert min(corrs) > 0.8


def test_sixty_seconds_of_audio_give_1440_frames_without_seams(overfit):
  task, params, stats, _, _ = overfit
  wave, _ = speechlike(60.0, seed=5)
  mel = audio_lib.mel_features(wave)
  assert mel.shape == (1440, 256)
  overlap = W // 2
  cfg = task.model.sampler_config(sampler="ddim", num_steps=20, guidance=2.0, window=W,
                                  overlap=overlap)
  motion = np.asarray(task.model.jitted_generate(params, jnp.asarray(mel)[None],
                                                 jax.random.PRNGKey(0)[None], cfg))[0]
  assert motion.shape == (1440, 223)
  assert np.isfinite(motion).all()
  jumps = np.abs(np.diff(motion[:, :9], axis=0)).max(axis=1)   # [1439] per-frame change
  stride = W - overlap
  n = windowed_sampler.num_windows(1440, W, overlap)
  seams = [k * stride + overlap - 1 for k in range(1, n)]      # jump into each window's first new frame
  inside = np.delete(jumps, seams)
  assert jumps[seams].max() <= inside.max()
