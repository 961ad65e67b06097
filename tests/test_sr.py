"""The super-resolution stages: the Efficient U-Net, the noise-conditioning augmentation, training
a tiny stage on one clip, chunked windowed sampling and the cascade up to 512²."""

import dataclasses
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import REPO, random_params
from vlogger_jax import models
from vlogger_jax import video_eval
from vlogger_jax.data import synthetic
from vlogger_jax.inference import pipeline as pipeline_lib
from vlogger_jax.inference import reference as reference_lib
from vlogger_jax.models import sr as sr_lib
from vlogger_jax.models import weights
from vlogger_jax.models.image import to_pixels
from vlogger_jax.nn import efficient_unet as eunet
from vlogger_jax.nn.unet import num_params
from vlogger_jax.train import config_lib
from vlogger_jax.train.tasks.sr import SRTask


def _config(spec="configs/sr256.py:tiny", **overrides):
  return config_lib.overridden(config_lib.load_config_file(os.path.join(REPO, spec)),
                               **overrides)


def _cond(b, n, s, key=0):
  k = jax.random.split(jax.random.PRNGKey(key), 3)
  return {"low": jax.random.normal(k[0], (b, n, s, s, 3)),
          "controls": jax.random.normal(k[1], (b, n, s, s, 22)),
          "aug_level": jnp.full((b,), 0.1)}


def test_temporal_layers_are_the_identity_at_initialisation():
  """With every other layer random, frames stay independent until a temporal kernel is set."""
  cfg = eunet.network_config("tiny")
  net = eunet.EfficientUNet(cfg)
  x = jax.random.normal(jax.random.PRNGKey(1), (1, 4, 16, 16, 3))
  t, cond = jnp.array([500]), _cond(1, 4, 16)
  params = nn.meta.unbox(net.init(jax.random.PRNGKey(0), x, t, cond))["params"]
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  temporal = [p for p, _ in flat if "temporal" in jax.tree_util.keystr(p)]
  assert temporal and all(not np.any(v) for p, v in flat if "temporal" in jax.tree_util.keystr(p)
                          and "kernel" in jax.tree_util.keystr(p))
  rng = np.random.default_rng(0)
  # Random everything (the zero output conv too), temporal kernels back to zero.
  params = jax.tree_util.tree_map_with_path(
      lambda p, v: (jnp.zeros_like(v) if "temporal" in jax.tree_util.keystr(p) else
                    jnp.asarray(rng.normal(0, 0.2, v.shape), v.dtype)), params)
  moved = x.at[:, 2].add(1.0)
  apply = jax.jit(lambda p, v: net.apply({"params": p}, v, t, cond))
  out, out_moved = (apply(params, v) for v in (x, moved))
  np.testing.assert_array_equal(out[:, [0, 1, 3]], out_moved[:, [0, 1, 3]])
  assert not np.allclose(out[:, 2], out_moved[:, 2])
  mixed = jax.tree_util.tree_map_with_path(
      lambda p, v: (jnp.asarray(rng.normal(0, 0.2, v.shape), v.dtype)
                    if "temporal" in jax.tree_util.keystr(p) else v), params)
  out, out_moved = (apply(mixed, v) for v in (x, moved))
  assert not np.allclose(out[:, 1], out_moved[:, 1])   # frame 2's neighbour now sees it


@pytest.mark.parametrize("name,size", [("sr256", 256), ("sr512", 512)])
def test_paper_networks_hold_their_shapes(name, size):
  """The paper-size networks at their output size (abstractly: nothing is allocated)."""
  net = eunet.EfficientUNet(eunet.network_config(name), dtype=jnp.bfloat16)
  s = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  x, t = s(2, 8, size, size, 3), jax.ShapeDtypeStruct((2,), jnp.int32)
  cond = {"low": s(2, 8, size, size, 3), "controls": s(2, 8, size, size, 22),
          "context": s(2, 8, size, size, 3), "context_mask": s(2, 8), "aug_level": s(2)}
  params = jax.eval_shape(lambda *a: net.init(jax.random.PRNGKey(0), *a), x, t, cond)["params"]
  out = jax.eval_shape(lambda p, *a: net.apply({"params": p}, *a), nn.meta.unbox(params), x, t,
                       cond)
  assert out.shape == (2, 8, size, size, 3) and out.dtype == jnp.float32
  assert 100e6 < num_params(params) < 1e9   # Imagen's SR models are a few hundred million


def test_noise_augmentation_at_level_zero_leaves_the_input_unchanged():
  up = jax.random.uniform(jax.random.PRNGKey(0), (2, 3, 16, 16, 3), minval=-1, maxval=1)
  noise = jax.random.normal(jax.random.PRNGKey(1), up.shape)
  np.testing.assert_array_equal(sr_lib.augment(up, jnp.zeros(2), noise), up)
  some = sr_lib.augment(up, jnp.array([0.0, 0.3]), noise)
  np.testing.assert_array_equal(some[0], up[0])
  assert float(jnp.mean(jnp.abs(some[1] - up[1]))) > 0.1
  full = sr_lib.augment(up, jnp.ones(2), noise)   # level 1 is pure noise
  np.testing.assert_allclose(full, noise, atol=1e-3)
  # The model's input at level 0 is exactly bicubic upsampling of the low-resolution frames.
  model = sr_lib.SRModel(_config())
  low = up[..., ::2, ::2, :]
  np.testing.assert_array_equal(model.low_input(low, jnp.zeros(2), noise, 16),
                                sr_lib.upsample(low, 16))


def _one_clip(size, frames):
  clip = synthetic.generate_clip(7, num_frames=frames, resolution=size)
  batch = {k: np.asarray(clip[k])[None] for k in ("frames", "expression", "head_pose",
                                                  "body_keypoints", "body_visibility")}
  batch["shape"], batch["fov"] = np.asarray(clip["shape"])[None], np.asarray([clip["fov"]])
  return batch


def test_tiny_sr_overfits_one_clip_and_beats_bicubic():
  """16² -> 32² on one 4-frame window: after a few hundred steps the sampled frames are closer
  to the truth than bicubic upsampling of the same low-resolution frames."""
  config = _config(**{"sr.low_resolution": 16, "data.resolution": 32, "sr.train_aug_max": 0.05})
  assert config.diffusion.prediction == "x0"   # configs/sr256.py: what minutes of training need
  task = SRTask(config)
  batch = _one_clip(32, 4)
  params = nn.meta.unbox(task.init(jax.random.PRNGKey(0)))
  opt = optax.adam(3e-3)

  @jax.jit
  def step(params, state, key):
    grads = jax.grad(lambda p: task.loss(p, batch, key)[0])(params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  state = opt.init(params)
  for i in range(150):
    params, state = step(params, state, jax.random.PRNGKey(i))
  model = task.model
  truth = to_pixels(batch["frames"])
  low = sr_lib.downsample(truth, 2)
  cfg = model.sampler_config(sampler="ddim", num_steps=10, overlap=2)
  out = model.jitted_generate(params, low, batch, jax.random.PRNGKey(0)[None], cfg,
                              aug_level=0.0)
  bicubic = np.clip(sr_lib.upsample(low, 32), -1, 1)
  sr_psnr, bicubic_psnr = video_eval.psnr(out[0], truth[0]), video_eval.psnr(bicubic[0], truth[0])
  assert sr_psnr > bicubic_psnr + 1.0, (sr_psnr, bicubic_psnr)


def test_cascade_makes_a_long_video_at_512(tiny_weights, tiny_reference, tmp_path):
  """Base 32² -> SR 128² -> SR 512² over two windows in two chunks: the requested number of
  frames at 512²; and at 128², chunked generation equals one chunk for the whole video, so each
  stage continues its own windows across chunks exactly (augmentation noise included)."""
  def save(spec, name, **overrides):
    config = models.resolve(_config(spec, **overrides))
    return weights.save(str(tmp_path / f"{name}.npz"), config,
                        random_params(models.build(config)), 0, dtype="float32")

  # Four-frame windows keep the 512² stage cheap on a CPU (about 1 s per frame and step).
  video = save("configs/base128.py:tiny", "video", pretrained="none", **{"data.num_frames": 4})
  sr = tuple(save("configs/sr256.py:tiny", f"sr{size}", **{"sr.low_resolution": low,
                                                           "data.resolution": size})
             for low, size in ((32, 128), (128, 512)))
  pipe = pipeline_lib.Pipeline.load(None, video, sr, need_motion=False)
  assert pipe.resolutions == (32, 128, 512)
  ref = reference_lib.load(tiny_reference)
  frames = 6   # windows [0, 4) and [2, 6)
  driving = {"expression": np.zeros((frames, 64), np.float32),
             "head_pose": np.tile(np.asarray(ref.head_pose, np.float32), (frames, 1)),
             "body_keypoints": np.tile(np.asarray(ref.body_keypoints, np.float32)[None],
                                       (frames, 1, 1))}
  driving["expression"][:, 0] = np.linspace(0, 1, frames)   # the jaw opens: frames differ
  options = pipeline_lib.Options(video_sampler="ddim", video_steps=1, sr_sampler="ddim",
                                 sr_steps=1, video_overlap=2,
                                 windows_per_chunk=1)
  video = pipe.generate(ref, driving=driving, options=options).frames
  assert video.shape == (1, frames, 512, 512, 3) and video.dtype == np.uint8
  at128 = dataclasses.replace(options, resolution=128)
  chunked = pipe.generate(ref, driving=driving, options=at128).frames
  whole = pipe.generate(ref, driving=driving,
                        options=dataclasses.replace(at128, windows_per_chunk=2)).frames
  assert chunked.shape == (1, frames, 128, 128, 3)
  np.testing.assert_array_equal(chunked, whole)
  with pytest.raises(pipeline_lib.InputError, match="resolution 1024 cannot be reached"):
    pipe.check(dataclasses.replace(options, resolution=1024))
