"""Engine defaults shared by every experiment config, variant selection and validation.

Configs are data (`ml_collections.ConfigDict`); each file in configs/ starts from `engine_config()`,
adds its task's fields, picks a variant with `pick_variant` and returns the dict locked.
"""

from __future__ import annotations

from typing import Callable, Mapping

import ml_collections


def engine_config() -> ml_collections.ConfigDict:
  """The training-engine fields every experiment has, at neutral defaults."""
  c = ml_collections.ConfigDict()
  c.task = ""                      # names a module in vlogger_jax.train.tasks
  c.variant = ""                   # filled by pick_variant, recorded with every checkpoint
  c.seed = 0
  c.num_train_steps = 1000
  c.batch_size = 64                # global batch, over all processes and devices
  c.log_every = 50
  c.eval_every = 0                 # 0: no periodic evaluation
  c.frozen = ()                    # regexes over '/'-joined parameter paths: frozen, no opt state
  c.prefetch = 2                   # batches moved to the devices ahead of the step

  c.optimizer = ml_collections.ConfigDict(dict(
      name="adam",                 # adam | adamw
      lr=1e-4,
      schedule="constant",         # constant | staircase (lr * decay_rate^floor(step/decay_every))
                                   # | cosine (to 0 over num_train_steps)
      decay_rate=0.99,
      decay_every=4000,
      warmup_steps=0,
      b1=0.9, b2=0.999, eps=1e-8,
      weight_decay=0.0,
      grad_clip=1.0,               # global-norm clipping; 0 disables it
  ))
  c.ema_decay = 0.0                # 0 disables the parameter EMA
  c.ema_warmup = True              # decay min(ema_decay, (1 + step) / (10 + step)) early on

  c.precision = ml_collections.ConfigDict(dict(
      compute_dtype="bfloat16",    # activations and matmuls
      param_dtype="float32",       # master parameters and optimizer state
  ))

  # One axis may be -1: it takes whatever devices the others leave.
  c.mesh = ml_collections.ConfigDict(dict(axes=("data", "fsdp"), shape=(-1, 1)))
  # Logical axis name -> mesh axes. Batch over every axis; FSDP shards the 'embed'-like
  # parameter dimensions. A logical name absent here is replicated.
  c.sharding_rules = (
      ("batch", ("data", "fsdp")),
      ("embed", "fsdp"),
      ("mlp", None),
      ("heads", None),
      ("kv", None),
      ("conv_t", None),
      ("conv_h", None),
      ("conv_w", None),
      ("conv_in", None),
      ("conv_out", "fsdp"),
      ("norm", None),
  )

  c.checkpoint = ml_collections.ConfigDict(dict(every=1000, keep=3, async_save=True))
  c.data = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict()
  return c


def pick_variant(config: ml_collections.ConfigDict, arg: str | None, variants:
                 Mapping[str, Callable[[ml_collections.ConfigDict], None]], source: str
                 ) -> ml_collections.ConfigDict:
  """Applies the variant named by `arg` ('' or None -> 'default'), validates and locks `config`."""
  name = arg or "default"
  if name not in variants:
    raise ValueError(f"variant '{name}' of {source} is unknown; expected one of: "
                     f"{', '.join(sorted(variants))}.")
  variants[name](config)
  config.variant = name
  validate(config, source)
  config.lock()
  return config


def validate(config: ml_collections.ConfigDict, source: str = "the config") -> None:
  """Raises ValueError with one sentence for values no run could use."""
  def need(ok: bool, what: str):
    if not ok:
      raise ValueError(f"{source}: {what}.")
  need(config.num_train_steps >= 0, f"num_train_steps is {config.num_train_steps}; expected >= 0")
  need(config.batch_size > 0, f"batch_size is {config.batch_size}; expected > 0")
  need(config.log_every > 0, f"log_every is {config.log_every}; expected > 0")
  need(config.checkpoint.every > 0, f"checkpoint.every is {config.checkpoint.every}; expected > 0")
  need(config.checkpoint.keep > 0, f"checkpoint.keep is {config.checkpoint.keep}; expected > 0")
  need(config.optimizer.lr > 0, f"optimizer.lr is {config.optimizer.lr}; expected > 0")
  need(0.0 <= config.ema_decay < 1.0, f"ema_decay is {config.ema_decay}; expected 0 <= d < 1")
  shape, axes = tuple(config.mesh.shape), tuple(config.mesh.axes)
  need(len(shape) == len(axes), f"mesh.shape {shape} and mesh.axes {axes} differ in length")
  need(sum(s == -1 for s in shape) <= 1, f"mesh.shape {shape} has more than one -1")
  need(all(s == -1 or s > 0 for s in shape), f"mesh.shape {shape} has a size that is not positive")


def overridden(config: ml_collections.ConfigDict, **values) -> ml_collections.ConfigDict:
  """A copy of a locked config with dotted-path values replaced (for tests and tools)."""
  c = ml_collections.ConfigDict(config.to_dict())
  for path, value in values.items():
    node = c
    *parents, leaf = path.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  c.lock()
  return c


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """Loads 'path/to/config.py[:variant]' like --config does; ValueError with one sentence if bad."""
  import importlib.util
  import os

  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ValueError(f"config file {path} does not exist; expected e.g. configs/toy.py:tiny.")
  module_spec = importlib.util.spec_from_file_location("_vlogger_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"config file {path} has no get_config(arg) function.")
  return module.get_config(arg or None)


def preflight(argv) -> str | None:
  """Checks the --config=... argument before absl parses it; returns an error sentence or None.

  ml_collections reports a failing get_config with a traceback; users deserve one sentence.
  """
  for i, a in enumerate(argv):
    spec = (a.split("=", 1)[1] if a.startswith("--config=")
            else argv[i + 1] if a == "--config" and i + 1 < len(argv) else None)
    if spec is not None:
      try:
        load_config_file(spec)
      except ValueError as e:
        return str(e)
  return None
