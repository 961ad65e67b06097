"""Chaining training stages: the one place that decides which stage trains, in which workdir,
on which earlier stage's weights.

Today's chain: the video model's control stage (task 'video') with config.pretrained == '' first
pre-trains its image model (task 'image', from config.pretrain_stage with the control config's
seed, data, model, diffusion, mesh and sharding rules) in <workdir>/pretrain, then trains the
control stage in <workdir> on the finished image model. Every other config is one stage. The
super-resolution stages join here.

Rules: a stage starts only on a finished earlier stage. A stage interrupted by SIGTERM or Ctrl-C
saves its checkpoint, and the chain stops there and says which stage to resume; rerunning the
same command resumes it and goes on. The control stage records the pre-training step it was
built on (config.pretrained_step, saved with its checkpoints); resuming it on another step is
refused with one sentence.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections

from vlogger_jax import checkpoint as ckpt_lib
from vlogger_jax import models
from vlogger_jax.models import loading
from vlogger_jax.train import config_lib, loop
from vlogger_jax.train.tasks import make_task

PRETRAIN_SUBDIR = "pretrain"
# What a prerequisite stage takes from the config of the stage that needs it.
SHARED_KEYS = ("seed", "data", "model", "diffusion", "mesh", "sharding_rules")


class StageError(ValueError):
  """A chain that cannot go on as configured (one sentence)."""


@dataclasses.dataclass
class Stage:
  name: str                           # 'pretrain' | 'control' | the task's name
  config: ml_collections.ConfigDict
  workdir: str


def _log(msg: str) -> None:
  if jax.process_index() == 0:
    print(msg, flush=True)


def pretrain_config(config) -> ml_collections.ConfigDict:
  """The image pre-training stage of a control-stage config (config.pretrain_stage with the
  control config's SHARED_KEYS)."""
  if not config.get("pretrain_stage") or not config.pretrain_stage.get("task"):
    raise StageError("config.pretrained is empty but config.pretrain_stage is not set; expected "
                     "an image pre-training run in config.pretrained or a config with a "
                     "pretrain_stage (configs/base128.py).")
  pre = ml_collections.ConfigDict(config.pretrain_stage.to_dict())
  for key in SHARED_KEYS:
    value = config[key]
    pre[key] = (ml_collections.ConfigDict(value.to_dict())
                if isinstance(value, ml_collections.ConfigDict) else value)
  config_lib.validate(pre, "config.pretrain_stage")
  pre.lock()
  return pre


def plan(config, workdir: str) -> list[Stage]:
  """The stages that `config` trains in `workdir`, in order."""
  if models.kind(config) == "video" and config.get("pretrained", "none") == "":
    sub = os.path.join(workdir, PRETRAIN_SUBDIR)
    control = config_lib.overridden(config, pretrained=sub)
    return [Stage("pretrain", pretrain_config(config), sub), Stage("control", control, workdir)]
  return [Stage(models.kind(config), config, workdir)]


def finished(stage: Stage) -> bool:
  """Whether a stage's run has a checkpoint at its last step that matches its checksum
  manifest. A damaged last step is not finished: training the stage again moves it aside,
  resumes from the newest good step and ends on the same weights (resuming is exact)."""
  reader = ckpt_lib.CheckpointReader(stage.workdir)
  step = reader.latest_step()
  if step is None or step < stage.config.num_train_steps:
    return False
  _, problem = ckpt_lib.manifest_problem(os.path.join(reader.directory, str(step)))
  if problem is not None:
    _log(f"the {stage.name} stage's last checkpoint, step {step} in {reader.directory}, is "
         f"damaged ({problem}); training the stage again from its newest good step.")
  return problem is None


def _pin_pretrained(stage: Stage) -> Stage:
  """The control stage with config.pretrained_step set to the step of the image model it trains
  on; refuses to resume a control run that was built on another step."""
  config = stage.config
  if models.kind(config) != "video" or config.pretrained == "none":
    return stage
  _, step, _ = loading.read_config(config.pretrained,
                                   None if config.get("pretrained_step", -1) < 0
                                   else config.pretrained_step)
  reader = ckpt_lib.CheckpointReader(stage.workdir)
  resumed = reader.latest_step()
  if resumed is not None:
    built_on = reader.read_config(resumed).get("pretrained_step", -1)
    if built_on >= 0 and built_on != step:
      raise StageError(f"the control stage in {stage.workdir} was built on step {built_on} of "
                       f"the image model in {config.pretrained}, which now ends at step {step}; "
                       "expected the same step: start a new --workdir, or resume with "
                       f"--config.pretrained_step={built_on} if that checkpoint still exists.")
  return dataclasses.replace(stage, config=config_lib.overridden(config, pretrained_step=step))


def run(config, workdir: str, devices=None) -> loop.TrainResult:
  """Trains every stage of `config` in `workdir` (module doc); returns the last stage's result,
  or that of the stage a stop request interrupted."""
  stages = plan(config, workdir)
  result = None
  for i, stage in enumerate(stages):
    last = i == len(stages) - 1
    if not last and finished(stage):
      continue
    if len(stages) > 1:
      _log(f"stage {i + 1} of {len(stages)} ({stage.name}) in {stage.workdir}")
    stage = _pin_pretrained(stage)
    result = loop.train(stage.config, stage.workdir, make_task(stage.config), devices)
    if result.stopped_early and not last:
      step = int(result.state.step)
      _log(f"stage {i + 1} of {len(stages)} ({stage.name}) stopped at step {step} of "
           f"{stage.config.num_train_steps}; the {stages[i + 1].name} stage has not started. "
           "Rerun the same command to resume it.")
      return result
  return result
