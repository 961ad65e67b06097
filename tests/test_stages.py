"""Stage chaining and weights-only loading, through launch/train.py as a user runs it.

One tiny video run (image pre-training, then the control stage) and one tiny motion run, each in
its own workdir with its own copy of the session's tiny synthetic dataset: SIGTERM during
pre-training stops the chain before the control stage, the rerun of the same command finishes
pre-training and trains the control stage on exactly those weights, a control run built on
another pre-training step is refused, and both runs load in a fresh process after their dataset
folder has been deleted, and generate.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO, run_python

from vlogger_jax.models import loading

PRETRAIN_STEPS, CONTROL_STEPS = 60, 4


def _video_flags(data_dir, pretrain_steps=PRETRAIN_STEPS):
  # Compilation is what these runs cost, and every process loads what an earlier one compiled
  # from the session's persistent compilation cache (conftest.py): pre-training at a constant
  # learning rate (the tiny config's cosine decay would put its length into the compiled step,
  # and the third command lengthens it), and the control stage at the tiny config's batch size,
  # as the README's training command (tests/test_train.py) trains it later.
  return ["--config=configs/base128.py:tiny", f"--config.data.data_dir={data_dir}",
          f"--config.num_train_steps={CONTROL_STEPS}",
          "--config.log_every=2", f"--config.checkpoint.every={CONTROL_STEPS}",
          "--config.evaluation.num_clips=0",
          f"--config.pretrain_stage.num_train_steps={pretrain_steps}",
          "--config.pretrain_stage.optimizer.schedule=constant",
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


def _copy_dataset(synthetic_tiny, data_dir):
  """A copy of the session's tiny synthetic dataset (conftest.synthetic_tiny) in `data_dir`, for
  a run to own and for the test to delete: launch/train.py finds it finished and builds nothing
  (the README's training command, tests/test_train.py, builds its own)."""
  shutil.copytree(synthetic_tiny[0], data_dir)
  return data_dir


@pytest.fixture(scope="module")
def video_run(tmp_path_factory, synthetic_tiny):
  """(workdir, data_dir, outputs of the three commands) of the interrupted and resumed chain."""
  root = tmp_path_factory.mktemp("video")
  workdir, data_dir = str(root / "run"), _copy_dataset(synthetic_tiny, str(root / "data"))
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
  image = loading.load(os.path.join(workdir, "pretrain"), step=PRETRAIN_STEPS, expect=("image",))
  video = loading.load(workdir, expect=("video",))
  a, b = jax.tree.leaves(image.params), jax.tree.leaves(video.params["unet"])
  assert image.step == PRETRAIN_STEPS
  assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_a_control_run_on_another_pretraining_step_is_refused(video_run):
  workdir, _, _, _, third = video_run
  assert third.returncode == 1
  err = third.stderr.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: the control stage in"), third.stderr
  assert f"built on step {PRETRAIN_STEPS}" in err[0]
  assert f"now ends at step {PRETRAIN_STEPS + 2}" in err[0]
  assert _steps(workdir)[-1] == CONTROL_STEPS                # nothing trained on the new step


# Generation as launch/generate.py runs it (the pipeline, four windows per chunk, DDIM in 2-3
# steps, 1 s of speech): the chunk programs that tests/test_generate.py and
# tests/test_inference.py compiled for the tiny stages' shapes, loaded from the session's
# persistent compilation cache.
_GENERATE = """
import sys
import numpy as np
from vlogger_jax.inference import pipeline, reference
pipe = pipeline.Pipeline.load(sys.argv[2], sys.argv[1])
t = np.arange(16000) / 16000
wave = (0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)))
options = pipeline.Options(motion_sampler="ddim", motion_steps=3, video_sampler="ddim",
                           video_steps=2)
result = pipe.generate(reference.load(sys.argv[3]), wave.astype(np.float32), options)
print("OK", result.motion.shape, result.frames.shape, bool(np.isfinite(result.motion).all()),
      float(result.frames.std()))
"""


def test_runs_load_without_their_dataset_and_generate(video_run, synthetic_tiny, tiny_reference,
                                                      tmp_path):
  workdir, data_dir, _, second, _ = video_run
  assert second.returncode == 0
  motion_dir = str(tmp_path / "motion")
  motion_data = _copy_dataset(synthetic_tiny, str(tmp_path / "motion_data"))
  # The motion run of tests/test_motion_task.py (its steps, batch and windows), so that its
  # training step can load from the compilation cache.
  proc = _train(["--config=configs/motion.py:tiny", f"--workdir={motion_dir}",
                 f"--config.data.data_dir={motion_data}", "--config.data.config_name=tiny",
                 "--config.num_train_steps=40", "--config.batch_size=4", "--config.log_every=20",
                 "--config.eval_every=0", "--config.checkpoint.every=40",
                 "--config.data.min_frames=24", "--config.data.max_frames=48",
                 "--config.sampling.overlap=24"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  for folder in (data_dir, motion_data):
    shutil.rmtree(folder)
  before = {p: os.path.getmtime(os.path.join(workdir, p)) for p in os.listdir(workdir)}
  proc = run_python(["-c", _GENERATE, workdir, motion_dir, tiny_reference])
  ok = proc.stdout.split("OK ", 1)[1].split()
  assert ok[:-1] == ["(1,", "24,", "223)", "(1,", "24,", "32,", "32,", "3)", "True"], proc.stdout
  assert float(ok[-1]) > 1.0                                 # frames, not one flat colour
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
  for path, expect, message in cases:
    with pytest.raises(loading.LoadError, match=re.escape(message)):
      loading.load(path, expect=(expect,))


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
