"""Models: a network with its init, apply, controls and generate, built from a run's config.

A model needs no trainer, optimizer or dataset: `build(config)` makes one from the config a run
saved, and vlogger_jax/models/loading.py restores its weights alone. Training (vlogger_jax/train)
wraps a model in a task (loss, data, evaluation); generation (vlogger_jax/inference) chains them.
Nothing here imports from train/ or data/.
"""

from __future__ import annotations

import ml_collections

from vlogger_jax.models.image import ImageModel
from vlogger_jax.models.motion import MotionModel
from vlogger_jax.models.sr import SRModel
from vlogger_jax.models.toy import ToyModel
from vlogger_jax.models.video import VideoModel

MODELS = {"toy": ToyModel, "motion": MotionModel, "image": ImageModel, "video": VideoModel,
          "sr": SRModel}


def kind(config) -> str:
  """The model a config describes: config.task ('toy' | 'motion' | 'image' | 'video' | 'sr').

  Runs written before the image model had its own task name said task 'video' with stage
  'pretrain'; they are image runs."""
  task = config.get("task")
  if task == "video" and config.get("stage") == "pretrain":
    return "image"
  if task not in MODELS:
    raise ValueError(f"config.task '{task}' is unknown; expected one of: "
                     f"{', '.join(sorted(MODELS))}.")
  return task


def build(config):
  """The model of `config` (ImageModel, VideoModel, SRModel, MotionModel or ToyModel)."""
  return MODELS[kind(config)](config)


def resolve(config) -> ml_collections.ConfigDict:
  """`config` with everything that shapes the weights written out (the UNet presets become
  config.model.network), so that the config a run saves loads exactly as trained."""
  cls = MODELS[kind(config)]
  return cls.resolve(config) if hasattr(cls, "resolve") else config
