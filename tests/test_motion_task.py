"""The motion task through the engine on the tiny synthetic dataset: data, training, evaluation."""

import os

import numpy as np
from conftest import REPO

from vlogger_jax import checkpoint
from vlogger_jax.train import config_lib, loop
from vlogger_jax.train.tasks import make_task


def test_motion_task_trains_evaluates_and_checkpoints_its_statistics(synthetic_tiny, tmp_path):
  data_dir, dataset = synthetic_tiny
  base = config_lib.load_config_file(os.path.join(REPO, "configs/motion.py:tiny"))
  cfg = config_lib.overridden(base, **{
      "num_train_steps": 40, "batch_size": 4, "log_every": 20, "eval_every": 40,
      "checkpoint.every": 40, "data.data_dir": data_dir, "data.config_name": "tiny",
      "data.min_frames": 24, "data.max_frames": 48, "data.num_eval_clips": 2,
      "sampling.overlap": 24, "sampling.num_steps": 5})
  result = loop.train(cfg, str(tmp_path), make_task(cfg))
  metrics = [l for l in open(tmp_path / "metrics.jsonl")]
  assert any('"eval/mouth_corr"' in l for l in metrics)
  assert any('"eval/lme_mm"' in l for l in metrics)
  # The dataset's statistics are frozen parameters: saved with the model, never trained.
  stats = result.state.frozen["stats"]
  saved = np.asarray(stats["mean"])
  from vlogger_jax import motion
  expected = motion.Stats.load(os.path.join(dataset, "motion_stats.json"))
  np.testing.assert_allclose(saved, expected.mean, rtol=1e-6)
  trainer = loop.Trainer(cfg, make_task(cfg))
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=1)
  state, data_state = ckpt.restore(40, trainer.abstract_state)
  ckpt.close()
  np.testing.assert_allclose(np.asarray(state.frozen["stats"]["std"]), expected.std, rtol=1e-6)
  assert data_state is not None
