"""The model layer: outputs as before the redesign, batches equal separate calls, exported samplers
equal in-process ones, the saved config spells out the network, and models import no trainer.

tests/data/generation_reference.npz holds what commit 0e09035 (before the model layer) generated
from the tiny motion and video models initialised with seed 0, with its inputs: motion windows
of 96 frames with overlap 48 for 60 and 170 frames of random mel (DDIM-10, guidance 5 and 1),
and 16 frames of a synthetic clip's motion at 32² (DDIM-5 with eta 1, DPM-Solver-5 with
guidance 2, DDIM-5 with no overlap), and one forward pass of the tiny image model. Those lengths
are ones where the old and the new window layouts agree (the old video sampler shifted its last
window back; the windowed sampler pads the end instead).
"""

import ast
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, run_python
from jax import export
from ml_collections import ConfigDict

from vlogger_jax import contracts
from vlogger_jax import models
from vlogger_jax import windowed_sampler
from vlogger_jax.models.image import ImageModel
from vlogger_jax.models.motion import MotionModel
from vlogger_jax.models.video import VideoModel
from vlogger_jax.train import config_lib

REFERENCE = os.path.join(REPO, "tests", "data", "generation_reference.npz")


def _config(spec, **overrides):
  return config_lib.overridden(config_lib.load_config_file(os.path.join(REPO, spec)),
                               **overrides)


def _init(model, seed=0):
  return nn.meta.unbox(jax.jit(model.init)(jax.random.PRNGKey(seed)))


@pytest.fixture(scope="module")
def reference():
  return dict(np.load(REFERENCE))


@pytest.fixture(scope="module")
def motion():
  model = MotionModel(_config("configs/motion.py:tiny", **{"data.max_frames": 96,
                                                            "sampling.overlap": 48}))
  return model, _init(model)


@pytest.fixture(scope="module")
def video():
  model = VideoModel(_config("configs/base128.py:tiny", pretrained="none"))
  return model, _init(model)


def _clip(reference, batch=1):
  return {k: np.repeat(reference[f"video_clip_{k}"][None], batch, 0) for k in contracts.CLIP_KEYS}


# Sampler settings, each compiled once for the module: the recorded outputs, the batch and the
# exported function reuse them (CPU compilation, not sampling, is what these tests cost).
MOTION_CFG = dict(sampler="ddim", num_steps=10, guidance=5.0)
VIDEO_CFG = dict(sampler="dpm", num_steps=5, guidance=2.0)


def _two_clips(reference):
  """Two different clips and references of the recorded clip's length."""
  clip = _clip(reference, 2)
  clip["expression"][1] = np.roll(clip["expression"][1], 3, axis=0)
  clip["shape"][1] *= -0.5
  return np.stack([reference["video_ref"], -reference["video_ref"]]), clip


# --- the same outputs as before the redesign ---

def test_motion_generation_matches_the_recorded_outputs(motion, reference):
  model, params = motion
  for length in (60, 170):
    mel = reference[f"motion_mel_{length}"][None]
    for name, kw in (("ddim10_g5", MOTION_CFG),
                     ("ddim10_g1", dict(MOTION_CFG, guidance=1.0))):
      got = model.jitted_generate(params, mel, jax.random.PRNGKey(7)[None],
                                  model.sampler_config(**kw))
      np.testing.assert_allclose(np.asarray(got), reference[f"motion_{length}_{name}"],
                                 atol=1e-5)


def test_video_generation_matches_the_recorded_outputs(video, reference):
  model, params = video
  for name, kw in (("dpm5_g2", VIDEO_CFG),
                   ("ddim5_overlap0", dict(sampler="ddim", num_steps=5, overlap=0))):
    got = model.jitted_generate(params, reference["video_ref"][None], _clip(reference),
                                jax.random.PRNGKey(11)[None], model.sampler_config(**kw))
    np.testing.assert_allclose(np.asarray(got)[0], reference[f"video_{name}"], atol=1e-5)


def test_image_model_matches_the_recorded_forward_pass(reference):
  model = ImageModel(_config("configs/base128.py:tiny_pretrain"))
  ref = np.repeat(reference["video_ref"][None], 2, 0)
  # Jitted: one program, not hundreds of eager ones (the recording is matched either way).
  got = jax.jit(model.apply)(_init(model), reference["image_x"], jnp.array([10, 500]), ref)
  np.testing.assert_allclose(np.asarray(got), reference["image_out"], atol=1e-5)


# --- batches ---

def test_batched_video_generation_equals_separate_calls(video, reference):
  model, params = video
  refs, clip = _two_clips(reference)
  keys = jax.random.split(jax.random.PRNGKey(5), 2)
  cfg = model.sampler_config(**VIDEO_CFG)
  both = np.asarray(model.jitted_generate(params, refs, clip, keys, cfg))
  for i in range(2):
    one = model.jitted_generate(params, refs[i:i + 1], {k: v[i:i + 1] for k, v in clip.items()},
                                keys[i:i + 1], cfg)
    np.testing.assert_allclose(both[i], np.asarray(one)[0], atol=1e-5)
  assert np.abs(both[0] - both[1]).mean() > 1e-3        # the examples are not one sample twice


def test_batched_motion_generation_equals_separate_calls(motion, reference):
  model, params = motion
  mel = np.stack([reference["motion_mel_170"], reference["motion_mel_170"][::-1]])
  keys = windowed_sampler.batch_keys(jax.random.PRNGKey(2), 2)
  cfg = model.sampler_config(**MOTION_CFG)
  both = np.asarray(model.jitted_generate(params, mel, keys, cfg))
  for i in range(2):
    one = np.asarray(model.jitted_generate(params, mel[i:i + 1], keys[i:i + 1], cfg))[0]
    np.testing.assert_allclose(both[i], one, atol=1e-5)
  assert np.abs(both[0] - both[1]).mean() > 1e-3


def test_bad_sampler_inputs_give_one_sentence(video, motion, reference):
  model, params = video
  with pytest.raises(ValueError, match=r"keys have shape \(2,\); expected one PRNG key"):
    model.generate(params, reference["video_ref"][None], _clip(reference),
                   jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="expected \\[B, 32, 32, 3\\]"):
    model.generate(params, np.zeros((1, 16, 16, 3)), _clip(reference), jax.random.PRNGKey(0)[None])
  with pytest.raises(ValueError, match="overlap is 8"):
    model.sampler_config(overlap=8).validate()
  mmodel, mparams = motion
  with pytest.raises(ValueError, match="mel has shape"):
    mmodel.generate(mparams, np.zeros((10, 256)), jax.random.PRNGKey(0)[None])


# --- export ---

def _abstract(tree):
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def test_motion_sampler_exports_with_a_symbolic_batch(motion, reference):
  model, params = motion
  cfg = model.sampler_config(**MOTION_CFG)
  b, = export.symbolic_shape("b")
  exported = export.export(jax.jit(model.generate, static_argnames=("cfg",)))(
      _abstract(params), jax.ShapeDtypeStruct((b, 170, 256), jnp.float32),
      jax.ShapeDtypeStruct((b, 2), jnp.uint32), cfg=cfg)
  restored = export.deserialize(exported.serialize())
  mel = np.stack([reference["motion_mel_170"], reference["motion_mel_170"][::-1]])
  for n in (1, 2):
    keys = windowed_sampler.batch_keys(jax.random.PRNGKey(2), 2)[:n]
    np.testing.assert_allclose(np.asarray(restored.call(params, mel[:n], keys)),
                               np.asarray(model.jitted_generate(params, mel[:n], keys, cfg)),
                               atol=1e-5)


def test_video_sampler_exports_with_a_symbolic_batch(video, reference):
  model, params = video
  cfg = model.sampler_config(**VIDEO_CFG)
  b, = export.symbolic_shape("b")
  length = reference["video_clip_expression"].shape[0]
  clip_spec = {k: jax.ShapeDtypeStruct((b,) + s, jnp.float32)
               for k, s in contracts.clip_shapes(length).items()}
  exported = export.export(jax.jit(model.generate, static_argnames=("cfg",)))(
      _abstract(params), jax.ShapeDtypeStruct((b, 32, 32, 3), jnp.float32), clip_spec,
      jax.ShapeDtypeStruct((b, 2), jnp.uint32), cfg=cfg)
  restored = export.deserialize(exported.serialize())
  refs, clip = _two_clips(reference)
  keys = jax.random.split(jax.random.PRNGKey(5), 2)
  for n in (1, 2):
    part = {k: v[:n] for k, v in clip.items()}
    np.testing.assert_allclose(
        np.asarray(restored.call(params, refs[:n], part, keys[:n])),
        np.asarray(model.jitted_generate(params, refs[:n], part, keys[:n], cfg)), atol=1e-5)


# --- configs and layering ---

def test_a_resolved_config_spells_out_the_network_and_builds_the_same_model():
  config = _config("configs/base128.py:tiny", pretrained="none")
  resolved = models.resolve(config)
  net = resolved.model.network
  assert tuple(net.unet.channel_mult) == (1, 2) and net.unet.channels == 16
  assert tuple(net.control.hint_channels) == (16,) and net.control.temporal == "control"
  # Saved as JSON and read back (lists for tuples), it builds the network it was resolved from,
  # whatever the preset table says now.
  reread = ConfigDict(json.loads(json.dumps(resolved.to_dict())))
  assert VideoModel(reread).network == VideoModel(config).network
  reread.model.name = "small"            # the preset name no longer decides
  assert VideoModel(reread).network == VideoModel(config).network
  assert models.kind(ConfigDict({"task": "video", "stage": "pretrain"})) == "image"
  with pytest.raises(ValueError, match="config.task 'nope' is unknown"):
    models.kind(ConfigDict({"task": "nope"}))


def _imports(path):
  tree = ast.parse(open(path).read())
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
  return names


def test_model_modules_import_nothing_from_train_or_data():
  folder = os.path.join(REPO, "vlogger_jax", "models")
  for name in sorted(os.listdir(folder)):
    if name.endswith(".py"):
      bad = [m for m in _imports(os.path.join(folder, name))
             if m.startswith(("vlogger_jax.train", "vlogger_jax.data", "vlogger_jax.inference"))]
      assert not bad, f"models/{name} imports {bad}"
  # And at run time: loading a model pulls in no trainer and no dataset code.
  proc = run_python(["-c", "import sys, vlogger_jax.models.loading; print(sorted(m for m in "
                     "sys.modules if m.startswith(('vlogger_jax.train', 'vlogger_jax.data'))))"])
  assert proc.stdout.strip() == "[]", proc.stdout
