"""Stage chaining and weights-only loading, through launch/train.py as a user runs it.

One tiny video run (image pre-training, then the control stage) and one tiny motion run, each in
its own workdir with its own synthetic dataset: SIGTERM during pre-training stops the chain
before the control stage, the rerun of the same command finishes pre-training and trains the
control stage on exactly those weights, a control run built on another pre-training step is
refused, and both runs load in a fresh process after their dataset folder has been deleted, and
generate.
"""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from conftest import REPO, run_python

PRETRAIN_STEPS, CONTROL_STEPS = 60, 4


def _video_flags(data_dir, pretrain_steps=PRETRAIN_STEPS):
  return ["--config=configs/base128.py:tiny", f"--config.data.data_dir={data_dir}",
          f"--config.num_train_steps={CONTROL_STEPS}", "--config.batch_size=2",
          "--config.log_every=2", f"--config.checkpoint.every={CONTROL_STEPS}",
          "--config.evaluation.num_clips=0",
          f"--config.pretrain_stage.num_train_steps={pretrain_steps}",
          "--config.pretrain_stage.batch_size=2", "--config.pretrain_stage.log_every=1",
          "--config.pretrain_stage.checkpoint.every=1000"]


def _env():
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _train(args, timeout=600):
  return subprocess.run([sys.executable, "launch/train.py", *args], cwd=REPO, env=_env(),
                        capture_output=True, text=True, timeout=timeout)


def _steps(workdir):
  folder = os.path.join(workdir, "checkpoints")
  return sorted(int(p) for p in os.listdir(folder) if p.isdigit()) if os.path.isdir(folder) else []


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
  """(workdir, data_dir, outputs of the three commands) of the interrupted and resumed chain."""
  root = tmp_path_factory.mktemp("video")
  workdir, data_dir = str(root / "run"), str(root / "data")
  args = _video_flags(data_dir) + [f"--workdir={workdir}"]
  # 1. SIGTERM as soon as pre-training has taken its first step.
  proc = subprocess.Popen([sys.executable, "launch/train.py", *args], cwd=REPO, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if line.startswith("step 1/"):
      proc.send_signal(signal.SIGTERM)
      break
  rest, _ = proc.communicate(timeout=300)
  first = "".join(lines) + rest
  assert proc.returncode == 0, first
  after_stop = (_steps(os.path.join(workdir, "pretrain")), _steps(workdir))
  # 2. The same command again; 3. pre-training made longer under the finished control stage.
  second = _train(args)
  third = _train(_video_flags(data_dir, PRETRAIN_STEPS + 2) + [f"--workdir={workdir}"])
  return workdir, data_dir, (first, after_stop), second, third


def test_sigterm_in_pretraining_stops_the_chain_before_the_control_stage(video_run):
  _, _, (first, (pretrain_steps, control_steps)), _, _ = video_run
  assert "stage 1 of 2 (pretrain)" in first and "stage 2 of 2" not in first, first
  assert "the control stage has not started" in first, first
  assert "Rerun the same command to resume it." in first, first
  assert pretrain_steps and pretrain_steps[-1] < PRETRAIN_STEPS, first   # a checkpoint of the stop
  assert control_steps == []                                 # no control checkpoint at all


def test_the_rerun_finishes_pretraining_and_builds_on_its_weights(video_run):
  workdir, _, _, second, _ = video_run
  assert second.returncode == 0, second.stderr[-3000:]
  assert "image: resumed from step" in second.stdout, second.stdout
  assert PRETRAIN_STEPS in _steps(os.path.join(workdir, "pretrain"))
  assert _steps(workdir)[-1] == CONTROL_STEPS
  with open(os.path.join(workdir, "config.json")) as f:
    saved = json.load(f)
  assert saved["pretrained_step"] == PRETRAIN_STEPS
  assert saved["model"]["network"]["unet"]["channels"] == 16     # the network is spelled out
  # The frozen image model of the control run is exactly the finished pre-training's EMA.
  check = f"""
import jax, numpy as np
from vlogger_jax.models import loading
image = loading.load({os.path.join(workdir, "pretrain")!r}, step={PRETRAIN_STEPS}, expect=("image",))
video = loading.load({workdir!r}, expect=("video",))
a, b = jax.tree.leaves(image.params), jax.tree.leaves(video.params["unet"])
print("SAME", image.step, len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b)))
"""
  proc = run_python(["-c", check])
  assert proc.stdout.split("SAME ", 1)[1].split() == [str(PRETRAIN_STEPS), "True"], proc.stdout


def test_a_control_run_on_another_pretraining_step_is_refused(video_run):
  workdir, _, _, _, third = video_run
  assert third.returncode == 1
  err = third.stderr.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: the control stage in"), third.stderr
  assert f"built on step {PRETRAIN_STEPS}" in err[0]
  assert f"now ends at step {PRETRAIN_STEPS + 2}" in err[0]
  assert _steps(workdir)[-1] == CONTROL_STEPS                # nothing trained on the new step


_GENERATE = """
import sys, jax, numpy as np
from vlogger_jax import contracts
from vlogger_jax.models import loading
video = loading.load(sys.argv[1], expect=("video",))
motion = loading.load(sys.argv[2], expect=("motion",))
mel = np.random.default_rng(0).normal(-8, 2, (1, 30, 256)).astype(np.float32)
m = motion.model.jitted_generate(motion.params, mel, jax.random.PRNGKey(0)[None],
                                 motion.model.sampler_config(sampler="ddim", num_steps=3))
expression, head_pose, keypoints = motion.model.to_parameters(
    motion.params, np.asarray(m[0]), np.array([1, 0, 0, 0, 1, 0, 0, 0, 0.6], np.float32),
    np.full((75, 2), 0.5, np.float32))
clip = {k: np.zeros((1,) + s, np.float32) for k, s in contracts.clip_shapes(30).items()}
clip.update(expression=expression[None], head_pose=head_pose[None],
            body_keypoints=keypoints[None], fov=np.full((1,), 30, np.float32))
clip["ref_head_pose"] = head_pose[None, 0]
frames = video.model.jitted_generate(video.params, np.zeros((1, 32, 32, 3), np.float32), clip,
                                     jax.random.PRNGKey(1)[None],
                                     video.model.sampler_config(sampler="ddim", num_steps=2))
frames = np.asarray(frames)
print("OK", m.shape, frames.shape, bool(np.isfinite(frames).all()), float(np.abs(frames).max()))
"""


def test_runs_load_without_their_dataset_and_generate(video_run, tmp_path):
  workdir, data_dir, _, second, _ = video_run
  assert second.returncode == 0
  motion_dir = str(tmp_path / "motion")
  motion_data = str(tmp_path / "motion_data")
  proc = _train(["--config=configs/motion.py:tiny", f"--workdir={motion_dir}",
                 f"--config.data.data_dir={motion_data}", "--config.data.config_name=tiny",
                 "--config.num_train_steps=4", "--config.batch_size=2", "--config.log_every=2",
                 "--config.eval_every=0", "--config.checkpoint.every=4",
                 "--config.data.min_frames=24", "--config.data.max_frames=48",
                 "--config.sampling.overlap=24"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  for folder in (data_dir, motion_data):
    shutil.rmtree(folder)
  before = {p: os.path.getmtime(os.path.join(workdir, p)) for p in os.listdir(workdir)}
  proc = run_python(["-c", _GENERATE, workdir, motion_dir])
  ok = proc.stdout.split("OK ", 1)[1]
  assert ok.startswith("(1, 30, 223) (1, 30, 32, 32, 3) True"), proc.stdout
  assert 0 < float(ok.split()[-1]) <= 1.0
  assert not os.path.exists(data_dir) and not os.path.exists(motion_data)   # nothing rebuilt
  assert {p: os.path.getmtime(os.path.join(workdir, p)) for p in os.listdir(workdir)} == before


def test_loading_names_what_is_wrong(tmp_path, video_run):
  workdir = video_run[0]
  empty = tmp_path / "empty"
  (empty / "checkpoints").mkdir(parents=True)
  cases = [(str(tmp_path), "video", "is neither a run directory holding checkpoints/"),
           (str(empty), "video", "has no checkpoint; expected a run of launch/train.py"),
           (workdir, "motion", "holds a 'video' model; expected 'motion'"),
           (os.path.join(workdir, "checkpoints", "999"), "video", "is neither a run directory")]
  script = f"""
from vlogger_jax.models import loading
for path, expect in {[(p, e) for p, e, _ in cases]!r}:
  try:
    loading.load(path, expect=(expect,))
    print("LOADED")
  except loading.LoadError as e:
    print("ERR", e)
"""
  out = run_python(["-c", script]).stdout.strip().splitlines()
  assert len(out) == len(cases), out
  for line, (path, _, message) in zip(out, cases):
    assert line.startswith("ERR") and message in line, (path, line)


def test_weights_load_sharded_onto_a_mesh(video_run):
  workdir = video_run[0]
  script = f"""
import jax, ml_collections, numpy as np
from vlogger_jax import mesh as mesh_lib
from vlogger_jax.models import loading
mesh = mesh_lib.make_mesh(ml_collections.ConfigDict(dict(axes=("data", "fsdp"), shape=(2, 4))))
sharded = loading.load({workdir!r}, mesh=mesh)
single = loading.load({workdir!r})
specs = {{str(x.sharding.spec) for x in jax.tree.leaves(sharded.params)}}
same = all(np.array_equal(a, b) for a, b in
           zip(jax.tree.leaves(sharded.params), jax.tree.leaves(single.params)))
print("RESULT", any("fsdp" in s for s in specs), same, jax.device_count())
"""
  proc = run_python(["-c", script], devices=8)
  assert proc.stdout.split("RESULT ", 1)[1].split() == ["True", "True", "8"], proc.stdout
