"""Engine defaults shared by every experiment config, variant selection and validation.

Configs are data (`ml_collections.ConfigDict`); each file in configs/ starts from `engine_config()`,
adds its task's fields, picks a variant with `pick_variant` and returns the dict locked.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
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
  c.allow_changes = ""             # resume despite changes to these settings (comma-separated
                                   # dotted keys; docs/training.md)

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
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ValueError(f"config file {path} does not exist; expected e.g. configs/toy.py:tiny.")
  module_spec = importlib.util.spec_from_file_location("_vlogger_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"config file {path} has no get_config(arg) function.")
  return module.get_config(arg or None)


def _keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every dotted key of `config`, groups and their keys alike."""
  out = []
  for key, value in config.items():
    out.append(prefix + key)
    if isinstance(value, ml_collections.ConfigDict):
      out += _keys(value, f"{prefix}{key}.")
  return out


def _closest_keys(config: ml_collections.ConfigDict, path: str, n: int = 3) -> list[str]:
  """The existing dotted keys nearest to `path`: by the whole path, then by its last name."""
  keys = _keys(config)
  leaf = path.rsplit(".", 1)[-1]
  by_leaf = {}
  for key in keys:
    by_leaf.setdefault(key.rsplit(".", 1)[-1], []).append(key)
  found = difflib.get_close_matches(path, keys, n=n, cutoff=0.6)
  for name in difflib.get_close_matches(leaf, list(by_leaf), n=n, cutoff=0.7):
    found += by_leaf[name]
  # The groups the path itself runs through exist already; naming them would not help.
  parts = path.split(".")
  ancestors = {".".join(parts[:i]) for i in range(1, len(parts))}
  return [k for k in dict.fromkeys(found) if k not in ancestors][:n]


def check_override(config: ml_collections.ConfigDict, path: str, flag: str = "config",
                   source: str = "the config") -> str | None:
  """Why `--<flag>.<path>=...` cannot override `config` (one sentence naming the key and the
  closest existing ones), or None if the key exists."""
  node, parts = config, path.split(".")
  for i, part in enumerate(parts):
    here = ".".join(parts[:i])
    if not isinstance(node, ml_collections.ConfigDict):
      return (f"--{flag}.{path}: {here} of {source} is a value, not a group of keys; expected "
              f"--{flag}.{here}=VALUE or a key of a group.")
    if part not in node:
      close = _closest_keys(config, path)
      if close:
        hint = "the closest existing keys are " + ", ".join(close)
      else:
        names = sorted(node.keys())
        hint = (f"the keys of {here or 'its top level'} are "
                + ", ".join(names[:12]) + (", ..." if len(names) > 12 else ""))
      return (f"--{flag}.{path}: {source} has no key '{path}'; expected an existing key "
              f"({hint}).")
    node = node[part]
  return None


def _override_paths(argv, flag: str) -> list[str]:
  """The dotted keys that `--<flag>.<key>=...` arguments (or --no<flag>.<key>) override."""
  pattern = re.compile(rf"-{{1,2}}(?:no)?{re.escape(flag)}\.([^=]+)")
  out = []
  for a in argv[1:]:
    if a == "--":
      break
    if (m := pattern.match(a)):
      out.append(m.group(1))
  return out


def preflight(argv, config_flags: Mapping[str, str | None] | None = None) -> str | None:
  """Checks the config-file flags' arguments before absl parses them; returns an error sentence
  or None.

  config_flags: flag name -> its default spec (None: no default); {'config': None} if not given.
  For each: the file and variant load (ml_collections reports a failing get_config with a
  traceback; users deserve one sentence), and every `--<flag>.<key>=...` override names an
  existing key (ml_collections answers a misspelt one with a 50-line traceback).
  """
  for name, default in (config_flags or {"config": None}).items():
    spec = default
    for i, a in enumerate(argv):
      if a.startswith(f"--{name}="):
        spec = a.split("=", 1)[1]
      elif a == f"--{name}" and i + 1 < len(argv):
        spec = argv[i + 1]
    if spec is None:
      continue
    try:
      config = load_config_file(spec)
    except ValueError as e:
      return str(e)
    for path in _override_paths(argv, name):
      if (problem := check_override(config, path, name, spec)):
        return problem
  return None
