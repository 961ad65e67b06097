"""Tasks: what one model trains on and how, around a model of vlogger_jax/models.

A task is built from the config (`make_task`) and holds its model (`task.model`). Its members:
  init(rng) -> boxed variables    parameters with logical axis names (nn.with_logical_partitioning)
  batch_spec(batch) -> {name: (jax.ShapeDtypeStruct, logical_axes)}   one global batch
  loss(params, batch, rng) -> (scalar loss, {name: scalar})           pure, traced inside jit
  data_iterator(process_index, process_count, local_batch) -> iterator over host-local numpy
      batches with get_state() / set_state(state) so checkpoints resume the data order exactly
  evaluate(params, rng) -> {name: float}                              optional, host-side
  prepare()                                                           optional: host work that
      must happen before tracing (open the dataset, read its statistics, load a previous stage's
      weights)
  example_batch(batch, seed) -> host batch                            optional, for benchmarks
A task never trains another stage: chaining stages is vlogger_jax/train/stages.py.
"""

from __future__ import annotations

from vlogger_jax import models
from vlogger_jax.train.tasks.image import ImageTask
from vlogger_jax.train.tasks.motion import MotionTask
from vlogger_jax.train.tasks.sr import SRTask
from vlogger_jax.train.tasks.toy import ToyTask
from vlogger_jax.train.tasks.video import VideoTask

TASKS = {"toy": ToyTask, "motion": MotionTask, "image": ImageTask, "video": VideoTask,
         "sr": SRTask}


def make_task(config):
  """The task of `config` (config.task: toy | motion | image | video | sr), with its model."""
  return TASKS[models.kind(config)](config)
