"""Training-run reliability (issue 20): damaged checkpoints, failed saves, refused or reported
changes on resume, a finished run rerun, the stop message, metrics after a resume.

One 60-step toy run (checkpoints at 20, 40, 60) is trained once and copied per test; a resume
that falls back to step 40 and trains to 60 must end exactly where that run ended. Subprocesses
run launch/train.py where the point is the command line (one sentence, the exit code), with real
signals and real damaged files; a full disk is an injected ENOSPC in Orbax's background save.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import REPO

from vlogger_jax import checkpoint, models
from vlogger_jax.models import loading
from vlogger_jax.train import config_lib, loop, stages
from vlogger_jax.train.tasks import make_task

# A restore of a deliberately truncated file leaves TensorStore reads whose callbacks find
# Orbax's event loop closed; the CLI drops their tracebacks (checkpoint.quiet_orbax_failures),
# pytest's own unraisable hook reports each as a warning.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

TRAIN = os.path.join(REPO, "launch", "train.py")
RUN = {"num_train_steps": 60, "log_every": 10, "eval_every": 0, "checkpoint.every": 20}

# Runs launch/train.py (argv[1:]) with test-only faults set by environment variables:
# FAIL_SAVES_FROM=N makes the background save of every step >= N fail with ENOSPC (in Orbax's
# JSON item writer, which runs in the commit thread, as a full disk does); HANG_AFTER_STEP=N
# makes the run sleep once it has logged step N, so that a test can SIGKILL it there.
HARNESS = r"""
import errno, os, re, runpy, sys, time
from orbax.checkpoint._src.handlers import json_checkpoint_handler as handler
from vlogger_jax.train import metrics
fail_from = int(os.environ.get("FAIL_SAVES_FROM", "-1"))
hang_after = int(os.environ.get("HANG_AFTER_STEP", "-1"))
save_fn = handler.JsonCheckpointHandler._save_fn

async def failing_save(self, x, directory):
  m = re.search(r"/(\d+)(?:\.orbax-checkpoint-tmp[^/]*)?/(?:config|data)", str(directory))
  if fail_from >= 0 and m and int(m.group(1)) >= fail_from:
    raise OSError(errno.ENOSPC, "No space left on device", str(directory))
  return await save_fn(self, x, directory)

write = metrics.MetricWriter.write

def hanging_write(self, step, values):
  write(self, step, values)
  if step == hang_after:
    self._jsonl.flush()
    time.sleep(600)

handler.JsonCheckpointHandler._save_fn = failing_save
metrics.MetricWriter.write = hanging_write
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def toy_config(**overrides):
  base = config_lib.load_config_file(os.path.join(REPO, "configs/toy.py:tiny"))
  return config_lib.overridden(base, **{**RUN, **overrides})


def cli(workdir, env=None, **overrides):
  """Popen of launch/train.py through HARNESS with RUN and `overrides` as flags."""
  flags = [f"--config.{k}={v}" for k, v in {**RUN, **overrides}.items()]
  cmd = [sys.executable, "-c", HARNESS, TRAIN, "--config=configs/toy.py:tiny",
         f"--workdir={workdir}", *flags]
  full_env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO, **(env or {}))
  return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def steps_of(workdir):
  return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


def snapshot(workdir):
  """{relative path: (size, mtime)} of everything under a workdir."""
  out = {}
  for root, dirs, files in os.walk(workdir):
    for name in dirs + files:
      path = os.path.join(root, name)
      st = os.stat(path)
      out[os.path.relpath(path, workdir)] = (st.st_size if name in files else 0, st.st_mtime_ns)
  return out


def biggest_state_file(workdir, step):
  folder = os.path.join(workdir, "checkpoints", str(step), "state", "ocdbt.process_0", "d")
  return max((os.path.join(folder, n) for n in os.listdir(folder)), key=os.path.getsize)


def flip_bytes(path, offset=1000, count=64):
  with open(path, "r+b") as f:
    f.seek(offset)
    data = f.read(count)
    f.seek(offset)
    f.write(bytes(b ^ 0xFF for b in data))


def truncate_half(path):
  os.truncate(path, os.path.getsize(path) // 2)


@pytest.fixture(scope="module")
def abstract_state():
  cfg = toy_config()
  return loop.Trainer(cfg, make_task(cfg), devices=jax.devices()[:1]).abstract_state


def params_at(workdir, step, abstract_state):
  state, _ = checkpoint.CheckpointReader(str(workdir)).restore(step, abstract_state)
  return jax.tree.map(np.asarray, state.params)


def assert_same_params(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a, b)


@pytest.fixture(scope="module")
def run60(tmp_path_factory, abstract_state):
  """(workdir, step-60 parameters) of the uninterrupted 60-step run (never modified)."""
  workdir = tmp_path_factory.mktemp("run60") / "run"
  cfg = toy_config()
  loop.train(cfg, str(workdir), make_task(cfg))
  assert steps_of(workdir) == ["20", "40", "60"]
  return workdir, params_at(workdir, 60, abstract_state)


@pytest.fixture
def copy60(run60, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(run60[0], workdir)
  return workdir


def test_every_checkpoint_has_a_manifest_of_its_files(copy60):
  for step in (20, 40, 60):
    step_dir = copy60 / "checkpoints" / str(step)
    manifest = json.loads((step_dir / checkpoint.MANIFEST).read_text())["files"]
    on_disk = {os.path.relpath(os.path.join(r, f), step_dir)
               for r, _, fs in os.walk(step_dir) for f in fs} - {checkpoint.MANIFEST}
    assert set(manifest) == on_disk and any(p.startswith("state/") for p in manifest)


def test_flipped_bytes_in_the_latest_step_fall_back_to_the_previous_one(copy60, run60,
                                                                       abstract_state):
  damaged_file = biggest_state_file(copy60, 60)
  flip_bytes(damaged_file)
  proc = cli(copy60)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err
  assert err == ""
  lines = [l for l in out.splitlines() if "damaged" in l]
  assert len(lines) == 1, out
  assert "checkpoint step 60" in lines[0] and "does not match the checksum" in lines[0]
  assert "resuming from step 40" in lines[0]
  assert "resumed from step 40" in out
  # Moved aside, not deleted, outside Orbax's steps; the run then trained 40 -> 60 again.
  moved = os.listdir(copy60 / "checkpoints" / checkpoint.DAMAGED)
  assert len(moved) == 1 and moved[0].startswith("60-")
  assert os.path.exists(copy60 / "checkpoints" / checkpoint.DAMAGED / moved[0] /
                        os.path.relpath(damaged_file, copy60 / "checkpoints" / "60"))
  assert steps_of(copy60) == ["20", "40", "60", checkpoint.DAMAGED]
  assert_same_params(params_at(copy60, 60, abstract_state), run60[1])


def test_truncated_file_falls_back_and_the_reader_says_so_in_one_sentence(copy60, run60,
                                                                        abstract_state,
                                                                        capsys):
  truncate_half(biggest_state_file(copy60, 60))
  with pytest.raises(loading.LoadError) as e:      # weights-only loading: no traceback
    loading.load(str(copy60))
  assert "checkpoint step 60" in str(e.value) and "bytes" in str(e.value)
  assert "load an older step instead" in str(e.value) and "\n" not in str(e.value)
  cfg = toy_config()
  loop.train(cfg, str(copy60), make_task(cfg))
  out = capsys.readouterr().out
  assert "is damaged" in out and "resuming from step 40" in out
  assert_same_params(params_at(copy60, 60, abstract_state), run60[1])


def test_no_manifest_is_accepted_when_it_restores_else_damaged(copy60, run60, abstract_state,
                                                             capsys):
  # The process ended between the commit of step 40 and its manifest, before step 60.
  shutil.rmtree(copy60 / "checkpoints" / "60")
  os.remove(copy60 / "checkpoints" / "40" / checkpoint.MANIFEST)
  cfg = toy_config()
  loop.train(cfg, str(copy60), make_task(cfg))
  out = capsys.readouterr().out
  assert "step 40 has no checksum manifest" in out and "resumed from step 40" in out
  assert_same_params(params_at(copy60, 60, abstract_state), run60[1])
  # Without a manifest, a step that cannot be read is damaged all the same.
  os.remove(copy60 / "checkpoints" / "60" / checkpoint.MANIFEST)
  truncate_half(biggest_state_file(copy60, 60))
  loop.train(cfg, str(copy60), make_task(cfg))
  out = capsys.readouterr().out
  assert "checkpoint step 60" in out and "it cannot be read" in out
  assert "resuming from step 40" in out and "resumed from step 40" in out


def test_failed_async_save_stops_the_run_at_once_in_one_sentence(tmp_path, run60,
                                                                 abstract_state, capsys):
  workdir = tmp_path / "run"
  proc = cli(workdir, env={"FAIL_SAVES_FROM": "40"}, log_every=1)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 1
  assert err.count("\n") == 1 and err.startswith("error: saving checkpoint step 40"), err
  assert "the disk is full" in err and "last checkpoint saved is step 20" in err
  assert "resume from step 20" in err and " MB free there" in err
  # Stopped at the step boundary after the failure, not at the next save (step 60).
  logged = [int(l.split()[1].split("/")[0]) for l in out.splitlines() if l.startswith("step ")]
  assert 40 <= logged[-1] < 60, logged[-1]
  # Nothing half-written passes for a checkpoint: the failed save's temporary folder is removed
  # (a write still in flight may recreate it: no reader takes it for a step, the rerun removes it).
  assert [n for n in steps_of(workdir) if not n.endswith(".orbax-checkpoint-tmp")] == ["20"]
  assert checkpoint.CheckpointReader(str(workdir)).all_steps() == [20]
  # Nothing lost: the rerun resumes from step 20 and ends where the uninterrupted run ended; it
  # reports the one setting given differently.
  cfg = toy_config()
  loop.train(cfg, str(workdir), make_task(cfg))
  assert "changed since step 20: log_every 1 -> 10." in capsys.readouterr().out.splitlines()
  assert steps_of(workdir) == ["20", "40", "60"]
  assert_same_params(params_at(workdir, 60, abstract_state), run60[1])


def test_other_architecture_is_one_sentence_and_leaves_the_workdir_as_it_was(copy60):
  before = snapshot(copy60)
  proc = cli(copy60, **{"model.hidden": 32})
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 1 and out == ""
  assert err.count("\n") == 1 and "model.hidden 64 -> 32 is refused" in err, err
  assert "--config.allow_changes=model.hidden" in err
  assert snapshot(copy60) == before
  # Allowed, the change still cannot restore: one sentence from the arrays' metadata, before
  # any array is read, and again nothing written.
  cfg = toy_config(**{"model.hidden": 32, "allow_changes": "model"})
  with pytest.raises(checkpoint.CheckpointError, match="does not fit this run's model") as e:
    loop.train(cfg, str(copy60), make_task(cfg))
  assert "(64,) float32 there, (32,) float32 here; 107 more differ" in str(e.value)
  assert snapshot(copy60) == before


def test_changed_settings_are_reported_or_refused(copy60):
  before = snapshot(copy60)
  cfg = toy_config(**{"batch_size": 128, "seed": 3})
  with pytest.raises(loop.ResumeError) as e:
    loop.train(cfg, str(copy60), make_task(cfg))
  assert "batch_size 256 -> 128, seed 0 -> 3 is refused" in str(e.value)
  assert "--config.allow_changes=batch_size,seed" in str(e.value)
  assert snapshot(copy60) == before
  # Named in allow_changes, a fixed setting may change; the others may anyway. All are listed
  # (the line a resume prints: test_failed_async_save_stops_the_run_at_once_in_one_sentence).
  saved = checkpoint.CheckpointReader(str(copy60)).read_config(60)
  cfg = models.resolve(toy_config(**{"num_train_steps": 70, "optimizer.lr": 3e-4,
                                     "batch_size": 128, "allow_changes": "batch_size"}))
  changes = loop.check_resume(cfg, saved, 60, str(copy60 / "checkpoints"))
  assert loop.describe_changes(changes) == ("batch_size 256 -> 128, num_train_steps 60 -> 70, "
                                            "optimizer.lr 0.001 -> 0.0003")
  assert loop.check_resume(models.resolve(toy_config()), saved, 60, "") == []


def test_rerunning_a_finished_run_says_so_and_trains_nothing(copy60, capsys):
  before = snapshot(copy60)
  cfg = toy_config()
  result = loop.train(cfg, str(copy60), make_task(cfg))
  out = capsys.readouterr().out
  assert out.splitlines() == [f"toy: the run in {copy60} is already finished at step 60 of 60; "
                              "nothing to train (raise --config.num_train_steps to train "
                              "further)."]
  assert int(result.state.step) == 60 and not result.stopped_early
  assert snapshot(copy60) == before


def test_stop_message_comes_after_the_commit(tmp_path, monkeypatch):
  from vlogger_jax.train.tasks import toy
  original = toy.ToyTask.data_iterator

  class SignalledIterator:
    def __init__(self, inner):
      self.inner, self.count = inner, 0

    def __next__(self):
      self.count += 1
      if self.count == 25:
        os.kill(os.getpid(), signal.SIGTERM)    # a real signal, at a known step
      return next(self.inner)

    def get_state(self):
      return self.inner.get_state()

    def set_state(self, state):
      self.inner.set_state(state)

  logged = []

  def log(msg):
    step_dir = tmp_path / "checkpoints" / "25"
    logged.append((msg, (step_dir / checkpoint.MANIFEST).exists()))

  monkeypatch.setattr(toy.ToyTask, "data_iterator",
                      lambda self, *a: SignalledIterator(original(self, *a)))
  monkeypatch.setattr(loop, "_log", log)
  cfg = toy_config(prefetch=0)
  result = loop.train(cfg, str(tmp_path), make_task(cfg))
  assert result.stopped_early
  stop = [(m, committed) for m, committed in logged if m.startswith("stop requested")]
  assert stop == [(f"stop requested: saved step 25 in {tmp_path / 'checkpoints'}; rerun the "
                   "same command to resume.", True)]


def _tensorboard_steps(logdir, tag="loss"):
  from tensorboard.backend.event_processing import event_file_loader
  from tensorboard.compat.proto import event_pb2
  steps = []
  for name in sorted(os.listdir(logdir)):
    for raw in event_file_loader.RawEventFileLoader(os.path.join(logdir, name)).Load():
      event = event_pb2.Event.FromString(raw)
      steps += [event.step for v in event.summary.value if v.tag == tag]
  return sorted(steps)


def test_metrics_after_sigkill_and_resume_hold_every_step_once(tmp_path, capsys):
  workdir = tmp_path / "run"
  proc = cli(workdir, env={"HANG_AFTER_STEP": "50"})
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 120
  while not (metrics.exists() and '"step": 50' in metrics.read_text()
             and (workdir / "checkpoints" / "40").is_dir()):
    assert proc.poll() is None and time.time() < deadline, proc.communicate()
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)     # logged up to step 50, last checkpoint step 40
  proc.communicate()
  assert steps_of(workdir) == ["20", "40"]
  assert [json.loads(l)["step"] for l in metrics.read_text().splitlines()][-1] == 50
  cfg = toy_config()
  loop.train(cfg, str(workdir), make_task(cfg))
  # (Killed while its main thread slept, the run may have committed step 40 without having
  # checksummed it yet: then the resume takes it unverified, and says so.)
  assert "resumed from step 40" in capsys.readouterr().out
  expected = list(range(10, 61, 10))
  assert [json.loads(l)["step"] for l in metrics.read_text().splitlines()] == expected
  assert _tensorboard_steps(workdir / "tensorboard") == expected


def test_a_finished_stage_whose_last_step_is_damaged_is_trained_again(copy60, capsys):
  """A chain (train/stages.py) skips a finished earlier stage only when its last checkpoint
  matches its manifest; else it trains the stage again, which falls back to the newest good
  step (the test above) instead of handing damaged weights to the next stage."""
  stage = stages.Stage("pretrain", toy_config(), str(copy60))
  assert stages.finished(stage)
  flip_bytes(biggest_state_file(copy60, 60))
  assert not stages.finished(stage)
  assert "step 60" in capsys.readouterr().out
