"""Weights-only loading: a trained model from its run directory, without its trainer.

`load(path)` reads the config a run saved with its checkpoint, builds the model from it, and
restores only what using the model needs: the EMA parameters where the run kept them (else the
trainable ones) and the frozen parameters (the frozen image model, the motion statistics), after
checking the checkpoint's files against the checksums written with it (a damaged checkpoint is a
LoadError in one sentence). That is a partial Orbax restore: no optimizer state is read, no train
state, mesh or dataset is built, and nothing on disk is written. The weights are placed on a
given device or mesh (replicated, or sharded by their logical axis names with the run's sharding
rules).

`path` is a run's workdir (its latest checkpoint), `<workdir>/checkpoints`, one checkpoint
`<workdir>/checkpoints/<step>`, or a weights file (`.npz`, vlogger_jax/models/weights.py: the
same parameters and config in one file, e.g. the shipped default weights).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import ml_collections
from jax.sharding import Mesh, SingleDeviceSharding

from vlogger_jax import checkpoint as ckpt_lib
from vlogger_jax import mesh as mesh_lib
from vlogger_jax import models
from vlogger_jax.models import weights as weights_lib
from vlogger_jax.models.params import merge, split_frozen


class LoadError(ValueError):
  """A run directory that cannot be loaded (with a one-sentence reason)."""


@dataclasses.dataclass
class Loaded:
  """A trained model ready to use."""
  model: Any                 # ImageModel | VideoModel | MotionModel | ToyModel
  params: Any                # inference parameters (EMA where kept, merged with the frozen ones)
  config: ml_collections.ConfigDict   # the config the run saved with this checkpoint
  step: int
  workdir: str


def locate(path: str) -> tuple[str, int | None]:
  """(workdir, step or None for the latest) of a workdir, its checkpoints/ or one checkpoint."""
  path = os.path.abspath(path)
  base, parent = os.path.basename(path), os.path.dirname(path)
  if os.path.isdir(os.path.join(path, "checkpoints")):
    return path, None
  if base == "checkpoints" and os.path.isdir(path):
    return parent, None
  if base.isdigit() and os.path.basename(parent) == "checkpoints" and os.path.isdir(path):
    return os.path.dirname(parent), int(base)
  raise LoadError(f"'{path}' is neither a run directory holding checkpoints/ nor a checkpoint "
                  "<workdir>/checkpoints/<step>; expected the --workdir of a launch/train.py "
                  "run.")


def _placement(abstract: Any, config, device=None, mesh: Mesh | None = None,
               rules: Sequence | None = None) -> Any:
  """Shardings for a tree of boxed abstract parameters: on `mesh` by logical names (rules
  default to the run's), else replicated on `device` (default: the first device)."""
  if mesh is not None:
    return mesh_lib.logical_shardings(abstract, mesh,
                                      rules if rules is not None else config.sharding_rules)
  device = device or jax.local_devices()[0]
  sharding = SingleDeviceSharding(device)
  return jax.tree.map(lambda _: sharding, nn.meta.unbox(abstract))


def read_config(path: str, step: int | None = None) -> tuple[ml_collections.ConfigDict, int, str]:
  """(saved config, step, workdir) of a run's checkpoint, reading nothing else."""
  workdir, at = locate(path)
  step = at if step is None else step
  reader = ckpt_lib.CheckpointReader(workdir)
  steps = reader.all_steps()
  if not steps:
    raise LoadError(f"run directory {workdir} has no checkpoint; expected a run of "
                    "launch/train.py that saved at least one.")
  step = steps[-1] if step is None else step
  if step not in steps:
    raise LoadError(f"run directory {workdir} has no checkpoint at step {step}; it has steps "
                    f"{', '.join(map(str, steps))}.")
  try:
    config = ml_collections.ConfigDict(reader.read_config(step))
  except ckpt_lib.DamagedCheckpoint as e:
    raise LoadError(_damaged_message(e, workdir)) from e
  except ckpt_lib.CheckpointError as e:
    raise LoadError(str(e)) from e
  return config, step, workdir


def _damaged_message(err: ckpt_lib.DamagedCheckpoint, workdir: str) -> str:
  reader = ckpt_lib.CheckpointReader(workdir)
  older = [s for s in reader.all_steps() if s < err.step]
  instead = (f"load an older step instead, e.g. {reader.step_dir(older[-1])}" if older
             else "it is the run's only checkpoint")
  return f"{err}; {instead}."


def load(path: str, *, step: int | None = None, expect: Sequence[str] | None = None,
         device=None, mesh: Mesh | None = None, rules: Sequence | None = None) -> Loaded:
  """The model and inference parameters of a run (module doc).

  expect: the model kinds the caller can use (e.g. ('video',)); another gives a LoadError.
  device / mesh / rules: where the parameters go (default: replicated on the first device).
  """
  if weights_lib.is_weights_file(path):
    return _load_file(path, expect, device)
  config, step, workdir = read_config(path, step)
  _check_kind(config, expect, f"run directory {workdir}")
  model = models.build(config)
  boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  placement = _placement(boxed, config, device, mesh, rules)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          nn.meta.unbox(boxed), placement)
  trainable, frozen = split_frozen(abstract, tuple(config.frozen))
  field = "ema" if config.ema_decay else "params"
  item = {field: trainable, "frozen": frozen}
  try:
    restored = ckpt_lib.CheckpointReader(workdir).restore_subtree(
        step, {k: v for k, v in item.items() if v})
  except ckpt_lib.DamagedCheckpoint as e:
    raise LoadError(_damaged_message(e, workdir)) from e
  except ckpt_lib.CheckpointError as e:   # written by an incompatible version
    raise LoadError(str(e)) from e
  params = merge(restored.get(field, {}), restored.get("frozen", {}))
  return Loaded(model=model, params=params, config=config, step=step, workdir=workdir)


def _check_kind(config, expect: Sequence[str] | None, name: str) -> None:
  kind = models.kind(config)
  if expect is not None and kind not in expect:
    raise LoadError(f"{name} holds a '{kind}' model; expected "
                    f"{' or '.join(repr(e) for e in expect)}.")


def _load_file(path: str, expect: Sequence[str] | None, device) -> Loaded:
  try:
    config, _ = weights_lib.read_config(path)
    _check_kind(config, expect, f"weights file {path}")
    model, params, config, step = weights_lib.load(path, device=device)
  except weights_lib.WeightsError as e:
    raise LoadError(str(e)) from None
  return Loaded(model=model, params=params, config=config, step=step, workdir=path)


def config_differences(saved: dict, given: dict, keys: Sequence[str]) -> list[str]:
  """Dotted keys among `keys` where two config dicts differ (after a JSON round trip, one level
  into dicts): where a config given on a command line disagrees with the one a run saved.
  config.model.network, which a run writes into its saved config from the other model keys
  (models.resolve), is left out: the saved one is what loads."""

  def at(d, path):
    for part in path.split("."):
      d = d.get(part) if isinstance(d, dict) else None
    if path == "model" and isinstance(d, dict):
      d = {k: v for k, v in d.items() if k != "network"}
    return json.loads(json.dumps(d))

  out = []
  for path in keys:
    a, b = at(saved, path), at(given, path)
    if isinstance(a, dict) and isinstance(b, dict):
      out += [f"{path}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    elif a != b:
      out.append(path)
  return out
