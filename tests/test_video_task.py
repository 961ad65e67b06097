"""The video task: pre-training first (the stage chain), loading the image model, freezing,
sharding, learning."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, run_python
from vlogger_jax import head as head_lib
from vlogger_jax import render
from vlogger_jax.data import builders
from vlogger_jax.data import synthetic
from vlogger_jax.models import loading
from vlogger_jax.models.image import to_pixels
from vlogger_jax.models.params import merge
from vlogger_jax.nn import unet as unet_lib
from vlogger_jax.train import config_lib, loop, stages
from vlogger_jax.train.tasks import make_task, video

S, FRAMES, PRETRAIN_STEPS = 16, 24, 100
CONFIG = os.path.join(REPO, "configs/base128.py:tiny")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  """A dataset of one synthetic clip (parameters of the generator, frames drawn by the project's
  renderer) in both splits, built by the real folder builder."""
  model = head_lib.load_default()
  p = synthetic.plan_clip(0, num_frames=FRAMES, resolution=S, head_model=model)
  rgb = jax.jit(lambda *a: render.render_controls(model, *a, size=S)["rgb"])(
      p.shape, p.expression, p.head_pose, p.body_keypoints, p.body_visibility, p.fov)
  clip = {"id": "clip0", "frames": np.round(np.asarray(rgb) * 255).astype(np.uint8),
          "audio": p.audio, "shape": p.shape, "fov": np.float32(p.fov),
          "expression": p.expression, "head_pose": p.head_pose,
          "body_keypoints": p.body_keypoints, "body_visibility": p.body_visibility}
  root = tmp_path_factory.mktemp("clips")
  for split in ("train", "test"):
    os.makedirs(root / split)
    np.savez(root / split / "clip0.npz", **clip)
  return builders.build_folder(str(root), str(tmp_path_factory.mktemp("data")))


def tiny_config(dataset, **overrides):
  data = {"data.dataset": "folder", "data.path": dataset, "data.resolution": S,
          "data.min_ref_distance": 8}
  defaults = {**data, "batch_size": 2, "log_every": 10, "optimizer.lr": 3e-3,
              "evaluation.num_clips": 1, "evaluation.num_steps": 2,
              "checkpoint.async_save": False, "pretrain_stage.num_train_steps": PRETRAIN_STEPS,
              "pretrain_stage.batch_size": 4, "pretrain_stage.log_every": 20,
              "pretrain_stage.checkpoint.every": PRETRAIN_STEPS,
              "pretrain_stage.checkpoint.async_save": False}
  return config_lib.overridden(config_lib.load_config_file(CONFIG), **{**defaults, **overrides})


# The control stage of the chained run takes one step: the tests below train their own.
CHAIN = {"num_train_steps": 1, "eval_every": 0}


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
  """(control-stage config, workdir) after the stage chain pre-trained the image model in
  <workdir>/pretrain and started the control stage on it."""
  workdir = str(tmp_path_factory.mktemp("run"))
  stages.run(tiny_config(dataset, **CHAIN), workdir)
  return stages.plan(tiny_config(dataset), workdir)[-1].config, workdir


def test_config_variants_and_bad_settings(dataset):
  paper = config_lib.load_config_file(os.path.join(REPO, "configs/base128.py"))
  assert (paper.task, paper.optimizer.lr, paper.optimizer.schedule, paper.batch_size,
          paper.num_train_steps, paper.data.num_frames, paper.data.resolution,
          paper.model.name, paper.diffusion.schedule, paper.precision.compute_dtype) == (
              "video", 5e-5, "constant", 128, 280_000, 8, 128, "base128", "cosine", "bfloat16")
  assert tuple(paper.frozen) == unet_lib.FROZEN_PATTERNS
  assert paper.pretrain_stage.task == "image"
  tiny_pre = config_lib.load_config_file(os.path.join(REPO, "configs/base128.py:tiny_pretrain"))
  assert tiny_pre.task == "image" and tuple(tiny_pre.frozen) == ()
  with pytest.raises(ValueError, match="config.pretrained is empty"):
    video.VideoTask(tiny_config(dataset))
  task = video.VideoTask(tiny_config(dataset, pretrained=dataset))
  with pytest.raises(loading.LoadError, match="is neither a run directory holding checkpoints/"):
    task.prepare()          # the image model is loaded before tracing, not when the task is made
  with pytest.raises(ValueError, match="config.task 'image_model' is unknown"):
    make_task(tiny_config(dataset, task="image_model", pretrained="none"))


def test_paper_size_control_step_traces_with_only_the_copy_trainable():
  config = config_lib.overridden(
      config_lib.load_config_file(os.path.join(REPO, "configs/base128.py")), pretrained="none",
      batch_size=8)
  trainer = loop.Trainer(config, make_task(config))   # shapes only: none of the 730 M exists
  state = trainer.abstract_state
  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
  assert 500e6 < count(state.frozen) < 520e6 and 200e6 < count(state.params) < 240e6
  # Adam's two moments of the trainable part and a few step counters; nothing for the frozen.
  assert 0 <= count(state.opt_state) - 2 * count(state.params) < 16
  lowered = trainer.train_step.lower(state, trainer.abstract_batch)
  assert "dot_general" in lowered.as_text() or "convolution" in lowered.as_text()


def test_data_iterators_yield_the_batch_spec(dataset):
  for name, frames in (("image", 1), ("video", 8)):
    task = make_task(tiny_config(dataset, task=name, pretrained="none"))
    batch = next(task.data_iterator(0, 1, 3))
    spec = task.batch_spec(3)
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
        k: (s.shape, s.dtype) for k, (s, _) in spec.items()}
    assert batch["frames"].shape == (3, frames, S, S, 3)


def test_example_batch_has_the_spec_and_renders_people(dataset):
  # Benchmarks time the step on this batch: its parameters must be the synthetic generator's, so
  # the rendered controls show a person of plausible size (uniform random ones do not).
  for name, frames in (("image", 1), ("video", 8)):
    task = make_task(tiny_config(dataset, task=name, pretrained="none"))
    batch = task.example_batch(3, seed=1)
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
        k: (s.shape, s.dtype) for k, (s, _) in task.batch_spec(3).items()}
  for k, v in task.example_batch(3, seed=1).items():
    np.testing.assert_array_equal(v, batch[k])
  controls, ref_controls = jax.jit(task.model.controls)(batch)
  mask = np.asarray(controls[..., -1]) > 0               # the last channel is the foreground
  assert controls.shape == (3, frames, S, S, render.CONTROL_CHANNELS)
  assert 0.03 < mask.mean() < 0.9 and mask.reshape(3 * frames, -1).any(axis=1).all()
  assert np.asarray(ref_controls[..., -1]).any()


def test_tiny_image_model_is_pretrained_first_and_overfits_one_clip(run):
  config, workdir = run
  pre = os.path.join(workdir, stages.PRETRAIN_SUBDIR)
  assert config.pretrained == pre
  # The control stage trained on the finished image model and recorded the step it was built on.
  saved, _, _ = loading.read_config(workdir)
  assert (saved.task, saved.pretrained, saved.pretrained_step) == ("video", pre, PRETRAIN_STEPS)
  with open(os.path.join(pre, "metrics.jsonl")) as f:
    losses = [m["loss"] for m in map(json.loads, f) if "loss" in m]
  assert len(losses) == PRETRAIN_STEPS // 20
  assert losses[-1] < losses[0] / 3, losses        # the untrained model predicts ε = 0: loss ~1
  # A finished pre-training is reused, not repeated (the finished control stage only resumes).
  stages.run(tiny_config(config.data.path, **CHAIN), workdir)
  with open(os.path.join(pre, "metrics.jsonl")) as f:
    assert len(f.readlines()) == len(losses)


@pytest.fixture(scope="module")
def control(run):
  config, _ = run
  trainer = loop.Trainer(config, make_task(config))
  batch = next(trainer.task.data_iterator(0, 1, trainer.local_batch))
  return trainer, batch


def test_control_stage_starts_as_the_pretrained_image_model(run, control):
  config, _ = run
  trainer, batch = control
  task = trainer.task
  state = trainer.init_state()
  image_params = loading.load(config.pretrained, expect=("image",)).params
  image = unet_lib.UNet(task.model.network.unet)
  x = jax.random.normal(jax.random.PRNGKey(0), batch["frames"].shape, jnp.float32)
  t = jnp.array([400, 900], jnp.int32)
  ref = to_pixels(batch["ref_frame"])
  controls, ref_controls = jax.jit(task.model.controls)(batch)
  cond = {"ref": ref, "ref_controls": ref_controls, "controls": controls,
          "context": to_pixels(batch["frames"]), "context_mask": jnp.ones((2, 8))}
  got = jax.jit(task.model.apply)(merge(state.params, state.frozen), x, t, cond)
  want = jax.jit(image.apply)({"params": image_params}, x, t, ref)
  assert float(jnp.abs(want).mean()) > 0.05          # a trained model, not the zero output conv
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert float(jnp.abs(controls).max()) > 0          # the head is in the frames


def _paired_loss(trainer, state, batch, draws=range(1000, 1004)) -> float:
  """Mean loss of `state`'s parameters over fixed noise draws (the train step's own randomness at
  fixed step numbers), so that two parameter sets are compared on the same draws."""
  losses = []
  for d in draws:
    # The step committed to its device like the rest of the state: with an uncommitted one the
    # train step compiled once more (~25 s) instead of loading the stage chain's from the cache.
    copy = jax.tree.map(jnp.copy, state).replace(
        step=jax.device_put(jnp.asarray(d, jnp.int32), state.step.sharding))
    losses.append(float(trainer.train_step(copy, batch)[1]["loss"]))
  return float(np.mean(losses))


def test_train_step_freezes_the_image_model_and_learns(control):
  trainer, batch = control
  batch = trainer.device_batch(batch)
  state = trainer.init_state()
  frozen = jax.tree.map(np.asarray, state.frozen)
  assert set(frozen) == {"unet"} and "unet" not in state.params
  opt_paths = [jax.tree_util.keystr(p) for p, _ in
               jax.tree_util.tree_flatten_with_path(state.opt_state)[0]]
  assert opt_paths and not any("'unet'" in p for p in opt_paths)
  before = _paired_loss(trainer, state, batch)
  for _ in range(60):
    state, metrics = trainer.train_step(state, batch)
  after = _paired_loss(trainer, state, batch)
  jax.tree.map(np.testing.assert_array_equal, frozen, jax.tree.map(np.asarray, state.frozen))
  assert np.isfinite(float(metrics["loss"])) and int(state.step) == 60
  assert after < 0.9 * before, (before, after)


def test_evaluation_reenacts_held_out_windows(control):
  trainer, _ = control
  state = trainer.init_state()
  scores = trainer.task.evaluate(trainer.eval_params(state), jax.random.PRNGKey(0))
  assert set(scores) == {"eval/psnr", "eval/l1", "eval/psnr_repeat_ref"}
  assert all(np.isfinite(v) for v in scores.values()), scores
  assert 0 < scores["eval/l1"] < 1 and scores["eval/psnr_repeat_ref"] > 5, scores


_SHARDED = """
import json, sys
import jax, numpy as np
from vlogger_jax.train import config_lib, loop
from vlogger_jax.train.tasks import make_task
cfg = config_lib.overridden(config_lib.load_config_file(sys.argv[1]), **json.loads(sys.argv[2]))
trainer = loop.Trainer(cfg, make_task(cfg))
state = trainer.init_state()
frozen = jax.tree.map(np.asarray, state.frozen)
data = trainer.task.data_iterator(0, 1, trainer.local_batch)
losses = []
for _ in range(2):
  state, metrics = trainer.train_step(state, trainer.device_batch(next(data)))
  losses.append(float(metrics['loss']))
same = all(np.array_equal(a, np.asarray(b)) for a, b in
           zip(jax.tree.leaves(frozen), jax.tree.leaves(state.frozen)))
specs = sorted({str(x.sharding.spec) for x in jax.tree.leaves((state.params, state.frozen))})
print('RESULT', json.dumps(dict(losses=losses, same=same, specs=specs, n=jax.device_count())))
"""


def test_train_step_runs_sharded_on_eight_devices(run):
  config, _ = run
  overrides = {"data.dataset": "folder", "data.path": config.data.path,
               "data.resolution": S, "data.min_ref_distance": 8, "batch_size": 8,
               "mesh.shape": (2, 4), "pretrained": config.pretrained}
  proc = run_python(["-c", _SHARDED, CONFIG, json.dumps(overrides)], devices=8)
  result = json.loads(proc.stdout.split("RESULT ", 1)[1])
  assert result["n"] == 8 and result["same"]
  assert all(np.isfinite(result["losses"]))
  assert any("fsdp" in s for s in result["specs"]), result["specs"]
