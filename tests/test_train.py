"""The training engine: sharding, resume, frozen parameters, failure handling, the CLI."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, run_python

from vlogger_jax import checkpoint
from vlogger_jax.models.params import split_frozen
from vlogger_jax.train import config_lib, loop
from vlogger_jax.train.state import ema_decay_at, ema_update
from vlogger_jax.train.tasks import make_task

TRAIN = os.path.join(REPO, "launch", "train.py")


def toy_config(**overrides):
  base = config_lib.load_config_file(os.path.join(REPO, "configs/toy.py:tiny"))
  defaults = {"eval_every": 0, "log_every": 10, "checkpoint.every": 100}
  return config_lib.overridden(base, **{**defaults, **overrides})


def overrides_to_flags(**overrides):
  return [f"--config.{k}={v}" for k, v in overrides.items()]


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def restore_params(workdir, config):
  """The latest checkpoint's trainable parameters, restored onto this process's one CPU device."""
  trainer = loop.Trainer(config, make_task(config), devices=jax.devices()[:1])
  ckpt = checkpoint.Checkpointer(workdir, keep=3)
  step = ckpt.latest_step()
  state, _ = ckpt.restore(step, trainer.abstract_state)
  ckpt.close()
  return step, jax.tree.map(np.asarray, state.params)


def assert_trees_close(a, b, **tol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **tol), a, b)


_SHARDING_SCRIPT = """
import json, sys
import jax
from vlogger_jax.train import config_lib, loop
from vlogger_jax.train.tasks import make_task
cfg = config_lib.overridden(config_lib.load_config_file('configs/toy.py:tiny'), **json.loads(sys.argv[2]))
res = loop.train(cfg, sys.argv[1], make_task(cfg))
specs = sorted({str(x.sharding.spec) for x in jax.tree.leaves(res.state.params)})
print('SPECS', json.dumps(specs), 'DEVICES', jax.device_count())
"""


def test_eight_devices_match_one_device_and_shard_parameters(tmp_path):
  common = {"num_train_steps": 60, "eval_every": 0, "log_every": 10, "checkpoint.every": 60}
  one = toy_config(**common, **{"mesh.shape": (-1, 1)})
  loop.train(one, str(tmp_path / "one"), make_task(one))    # this process: one CPU device
  eight = run_python(["-c", _SHARDING_SCRIPT, str(tmp_path / "eight"),
                      json.dumps({**common, "mesh.shape": (2, 4)})], devices=8)
  assert "DEVICES 8" in eight.stdout
  specs = json.loads(re.search(r"SPECS (\[.*\])", eight.stdout).group(1))
  assert any("fsdp" in s for s in specs), specs   # parameters are really split over devices
  loss1 = [m["loss"] for m in read_metrics(tmp_path / "one")]
  loss8 = [m["loss"] for m in read_metrics(tmp_path / "eight")]
  assert len(loss1) == len(loss8) == 6
  np.testing.assert_allclose(loss1, loss8, rtol=1e-4)
  assert loss1[-1] < 0.7 * loss1[0]               # and it is learning
  # Every log line carries the share of its interval spent waiting for the input.
  shares = [m["input_share"] for m in read_metrics(tmp_path / "one")]
  assert len(shares) == 6 and all(0.0 <= s <= 1.0 for s in shares), shares

  # A checkpoint written on the 8-device mesh restores onto one device, values intact.
  cfg = toy_config(num_train_steps=60)
  step8, p8 = restore_params(tmp_path / "eight", cfg)
  step1, p1 = restore_params(tmp_path / "one", cfg)
  assert step8 == step1 == 60
  assert_trees_close(p8, p1, rtol=2e-3, atol=2e-5)


def _start(workdir, **overrides):
  cmd = [sys.executable, TRAIN, "--config=configs/toy.py:tiny", f"--workdir={workdir}",
         *overrides_to_flags(**overrides)]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, proc, timeout=120):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    if proc.poll() is not None:
      raise AssertionError(f"run ended early: {proc.communicate()}")
    time.sleep(0.05)
  raise AssertionError("timed out")


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
  # Killed at its second checkpoint, with 800 of 1000 steps to go (seconds at ~200 steps/s).
  flags = dict(num_train_steps=1000, eval_every=0, log_every=100, **{"checkpoint.every": 100})
  cfg = toy_config(num_train_steps=1000, log_every=100)

  straight = _start(tmp_path / "straight", **flags)
  killed = _start(tmp_path / "killed", **flags)
  ckpt_dir = tmp_path / "killed" / "checkpoints"
  _wait_for(lambda: (ckpt_dir / "200").is_dir(), killed)
  killed.send_signal(signal.SIGKILL)
  killed.communicate()
  assert killed.returncode == -signal.SIGKILL
  out, err = straight.communicate(timeout=300)
  assert straight.returncode == 0, err

  resumed = _start(tmp_path / "killed", **flags)
  out_r, err_r = resumed.communicate(timeout=300)
  assert resumed.returncode == 0, err_r
  step = int(re.search(r"resumed from step (\d+)", out_r).group(1))
  assert 200 <= step < 1000
  s1, p_straight = restore_params(tmp_path / "straight", cfg)
  s2, p_resumed = restore_params(tmp_path / "killed", cfg)
  assert s1 == s2 == 1000
  assert_trees_close(p_straight, p_resumed, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def sigterm_run(tmp_path_factory):
  """(workdir, return code, stdout, stderr) of a long run given dotted overrides and stopped by
  SIGTERM once it has logged."""
  workdir = tmp_path_factory.mktemp("sigterm")
  proc = _start(workdir, num_train_steps=100000, log_every=50,
                **{"checkpoint.every": 100000, "optimizer.lr": 3e-4})
  _wait_for(lambda: (workdir / "metrics.jsonl").exists()
            and (workdir / "metrics.jsonl").stat().st_size > 0, proc)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  return workdir, proc.returncode, out, err


def test_sigterm_saves_and_exits_cleanly(sigterm_run):
  workdir, returncode, out, err = sigterm_run
  assert returncode == 0, err
  assert "stop requested: saved step" in out
  steps = sorted(int(p) for p in os.listdir(workdir / "checkpoints") if p.isdigit())
  assert steps and 50 <= steps[-1] < 100000


def test_frozen_parameters_stay_identical_and_have_no_optimizer_state(tmp_path):
  cfg = toy_config(num_train_steps=30, frozen=("time_embed",), ema_decay=0.9)
  trainer = loop.Trainer(cfg, make_task(cfg))
  init = jax.tree.map(np.asarray, trainer.init_state())
  result = loop.train(cfg, str(tmp_path), make_task(cfg))
  state = result.state
  assert set(state.frozen) == {"time_embed"} and "time_embed" not in state.params
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b),
               state.frozen, init.frozen)
  # The trainable part did move, and the optimizer state mirrors it alone.
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()),
                                       state.params, init.params))
  assert max(moved) > 0
  opt_paths = [jax.tree_util.keystr(p) for p, _ in
               jax.tree_util.tree_leaves_with_path(state.opt_state)]
  assert opt_paths and not any("time_embed" in p for p in opt_paths)
  n_opt = sum(x.size for x in jax.tree.leaves(state.opt_state))
  n_train = sum(x.size for x in jax.tree.leaves(state.params))
  assert n_opt <= 2 * n_train + 8       # Adam's two moments of the trainable part only


def test_split_frozen_round_trips():
  tree = {"a": {"kernel": 1, "bias": 2}, "b": {"kernel": 3}}
  train, frozen = split_frozen(tree, ["^a/"])
  assert train == {"b": {"kernel": 3}} and frozen == {"a": {"kernel": 1, "bias": 2}}


def test_nan_stops_with_clear_message_and_keeps_last_good_checkpoint(tmp_path):
  blowup = {"optimizer.lr": 1e30, "optimizer.schedule": "constant",
            "optimizer.warmup_steps": 0, "optimizer.grad_clip": 0.0}
  proc = _start(tmp_path, num_train_steps=50, log_every=1, **{"checkpoint.every": 1}, **blowup)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 1
  assert "had a non-finite" in err and "Traceback" not in err
  good = int(re.search(r"last good checkpoint is step (\d+)", err).group(1))
  steps = sorted(int(p) for p in os.listdir(tmp_path / "checkpoints") if p.isdigit())
  assert steps[-1] == good
  _, params = restore_params(tmp_path, toy_config(**blowup))
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


@pytest.mark.parametrize("args,message", [
    (["--config=configs/toy.py:huge"], "variant 'huge' of configs/toy.py is unknown"),
    (["--config=configs/toy.py:tiny", "--config.num_train_steps=-5"],
     "num_train_steps is -5; expected >= 0"),
    (["--config=configs/toy.py:tiny", "--config.mesh.shape=(2,1)"], "needs 2 devices"),
    (["--config=configs/missing.py"], "configs/missing.py does not exist"),
])
def test_bad_config_gives_one_sentence(tmp_path, args, message):
  proc = run_python([TRAIN, *args, f"--workdir={tmp_path}"], check=False, timeout=120)
  assert proc.returncode != 0
  assert message in proc.stderr
  assert "Traceback" not in proc.stderr


def test_dotted_overrides_reach_the_run(sigterm_run):
  saved = json.load(open(sigterm_run[0] / "config.json"))
  assert saved["num_train_steps"] == 100000 and saved["optimizer"]["lr"] == 3e-4
  assert saved["checkpoint"]["every"] == 100000


def _readme_training_command():
  """The training command of the README's "Training your own" section."""
  readme = open(os.path.join(REPO, "README.md")).read()
  section = readme.split("## Training your own", 1)[1]
  block = re.search(r"```(?:bash|sh)?\n(.*?)```", section, re.S).group(1)
  cmd = block.strip().splitlines()[0].strip()
  assert cmd.startswith("python launch/train.py"), cmd
  return shlex.split(cmd)


# The README's training command shrunk to a few steps of each stage: the same config, flags and stages.
SHRUNK = ["--config.num_train_steps=4", "--config.checkpoint.every=4", "--config.log_every=2",
          "--config.eval_every=4", "--config.evaluation.num_clips=1",
          "--config.evaluation.num_steps=2", "--config.pretrain_stage.num_train_steps=4",
          "--config.pretrain_stage.log_every=2", "--config.pretrain_stage.checkpoint.every=4"]


@pytest.mark.slow
def test_readme_training_command_trains_and_leaves_checkpoint_and_metrics(tmp_path):
  """The README's training command, as a newcomer runs it (workdir and data moved to tmp_path):
  about 4 minutes on 2 cores, so `slow`; CI runs it shrunk (below)."""
  _check_readme_training_command(tmp_path, [])


# slow: CI already trains this chain (configs/base128.py:tiny through launch/train.py, both
# stages) twice, in tests/test_stages.py and tests/test_video_task.py.
@pytest.mark.slow
def test_readme_training_command_shrunk_runs_every_stage(tmp_path):
  _check_readme_training_command(tmp_path, SHRUNK)


def _check_readme_training_command(tmp_path, extra):
  argv = _readme_training_command()
  argv = [a for a in argv[1:] if not a.startswith("--workdir")]
  argv += [f"--workdir={tmp_path / 'run'}", f"--config.data.data_dir={tmp_path / 'data'}"]
  run_python(argv + extra, timeout=1500)
  run = tmp_path / "run"
  assert any(p.isdigit() for p in os.listdir(run / "pretrain" / "checkpoints"))
  assert any(p.isdigit() for p in os.listdir(run / "checkpoints"))
  assert os.listdir(run / "tensorboard")
  metrics = read_metrics(run)
  losses = [m["loss"] for m in metrics if "loss" in m]
  assert losses and all(np.isfinite(losses))
  assert any(k.startswith("eval/") for m in metrics for k in m), "no evaluation was logged"

def _free_port():
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _multiprocess_run(workdir, steps):
  port = _free_port()
  procs = []
  for pid in range(2):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO,
               XLA_FLAGS="--xla_force_host_platform_device_count=1",
               JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
               JAX_PROCESS_ID=str(pid))
    cmd = [sys.executable, TRAIN, "--config=configs/toy.py:tiny", f"--workdir={workdir}",
           f"--config.num_train_steps={steps}", "--config.checkpoint.every=100",
           "--config.eval_every=0"]
    procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return outs


def test_two_processes_train_checkpoint_and_resume(tmp_path):
  """Multi-host: jax.distributed over two processes, one process-local batch shard each (a few
  steps/s through gloo's collectives on CPU, so a few steps)."""
  (out0, _), (out1, _) = _multiprocess_run(tmp_path, 20)
  assert "step 20/20" in out0 and "step" not in out1   # only process 0 reports
  data_dir = tmp_path / "checkpoints" / "20" / "data"
  states = json.loads(next(p for p in data_dir.iterdir() if p.name != "commit_success.txt"
                           and p.name != "_METADATA").read_text())
  assert states == {"0": {"position": 20}, "1": {"position": 20}}
  (out0, _), _ = _multiprocess_run(tmp_path, 30)
  assert "resumed from step 20" in out0 and "step 30/30" in out0


def test_ema_warmup_follows_a_short_run():
  # With warmup the decay starts small and reaches the configured value only after ~10/(1-d)
  # steps; without it the average of a short run stays near the initialisation.
  assert float(ema_decay_at(0, 0.9999)) == pytest.approx(0.1)
  assert float(ema_decay_at(90, 0.9999)) == pytest.approx(0.91)
  assert float(ema_decay_at(10**7, 0.9999)) == pytest.approx(0.9999)
  assert float(ema_decay_at(5, 0.9999, warmup=False)) == pytest.approx(0.9999)
  params = {"w": jnp.zeros(())}
  ema, ema_cold = dict(params), dict(params)
  for step in range(1000):
    params = {"w": jnp.ones(())}  # the weights jump to 1 and stay there
    ema = ema_update(ema, params, ema_decay_at(step, 0.9999))
    ema_cold = ema_update(ema_cold, params, ema_decay_at(step, 0.9999, warmup=False))
  assert float(ema["w"]) > 0.99 and float(ema_cold["w"]) < 0.1


def test_sigterm_that_also_ends_the_data_workers_still_saves(tmp_path, monkeypatch):
  # `timeout -s TERM` and container preemption signal the whole process group: the data workers
  # die, the next batch raises, and the loop must still save the last step and stop cleanly.
  from vlogger_jax.train.tasks import toy
  original = toy.ToyTask.data_iterator

  class DyingIterator:
    def __init__(self, inner):
      self.inner, self.count = inner, 0

    def __next__(self):
      self.count += 1
      if self.count == 8:
        os.kill(os.getpid(), signal.SIGTERM)
        raise RuntimeError("Worker process was terminated unexpectedly with exit code -15.")
      return next(self.inner)

    def get_state(self):
      return self.inner.get_state()

    def set_state(self, state):
      self.inner.set_state(state)

    def close(self):
      pass

  monkeypatch.setattr(toy.ToyTask, "data_iterator",
                      lambda self, *a: DyingIterator(original(self, *a)))
  cfg = toy_config(num_train_steps=100, prefetch=0)
  result = loop.train(cfg, str(tmp_path), make_task(cfg))
  assert result.stopped_early
  steps = sorted(int(p) for p in os.listdir(tmp_path / "checkpoints") if p.isdigit())
  assert steps == [7]


def test_random_state_is_shaped_sharded_and_trains_like_init_state():
  # Benchmarks time the step on Trainer.random_state (one random draw, quick to compile).
  cfg = toy_config(frozen=("time_embed",), ema_decay=0.9)
  trainer = loop.Trainer(cfg, make_task(cfg))
  real, quick = trainer.init_state(), trainer.random_state(seed=1)
  shape = lambda s: jax.tree.map(lambda a: (a.shape, a.dtype, a.sharding), s)
  assert shape(quick) == shape(real)
  assert jax.tree.leaves(quick.frozen) and jax.tree.leaves(quick.params)
  for a in jax.tree.leaves(quick.opt_state):        # Adam starts at zero either way
    np.testing.assert_array_equal(a, np.zeros_like(a))
  kernels = [a for a in jax.tree.leaves((quick.params, quick.frozen)) if a.ndim >= 2]
  assert all(0.2 < float(jnp.std(k)) * np.sqrt(np.prod(k.shape[:-1])) < 5 for k in kernels)
  frozen = jax.tree.map(np.asarray, quick.frozen)
  it = trainer.task.data_iterator(0, 1, trainer.local_batch)
  state, metrics = trainer.train_step(quick, trainer.device_batch(next(it)))   # donates `quick`
  assert np.isfinite(float(metrics["loss"])) and int(state.step) == 1
  for a, b in zip(jax.tree.leaves(state.frozen), jax.tree.leaves(frozen)):
    np.testing.assert_array_equal(a, b)
