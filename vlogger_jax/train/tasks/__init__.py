"""Tasks: what one model trains on and how. The config names one (`config.task`).

A task is a class built from the config with these members (see `toy.py` for the smallest one):
  init(rng) -> boxed variables    parameters with logical axis names (nn.with_logical_partitioning)
  batch_spec(batch) -> {name: (jax.ShapeDtypeStruct, logical_axes)}   one global batch
  loss(params, batch, rng) -> (scalar loss, {name: scalar})           pure, traced inside jit
  data_iterator(process_index, process_count, local_batch) -> iterator over host-local numpy
      batches with get_state() / set_state(state) so checkpoints resume the data order exactly
  evaluate(params, rng) -> {name: float}                              optional, host-side
  prepare()                                                           optional: host work that
      must happen before tracing (build or open the dataset, load its statistics)
  prepare_run(config, workdir) -> config      optional classmethod, called by loop.train before
      anything else: work that needs the workdir, e.g. training a prerequisite stage
"""

from __future__ import annotations

import importlib

_TASKS = {
    "toy": "vlogger_jax.train.tasks.toy:ToyTask",
    "motion": "vlogger_jax.train.tasks.motion:MotionTask",
    "video": "vlogger_jax.train.tasks.video:VideoTask",
}


def get_task(name: str):
  """The task class registered under `name`."""
  if name not in _TASKS:
    raise ValueError(f"config.task '{name}' is unknown; expected one of: {', '.join(sorted(_TASKS))}.")
  module, cls = _TASKS[name].split(":")
  return getattr(importlib.import_module(module), cls)
