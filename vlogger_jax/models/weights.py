"""Weights files: a trained model's inference parameters and config in one `.npz`.

A run directory holds Orbax checkpoints with the optimizer state and every step kept: right for
training, too big and too many files to ship. A weights file holds what `loading.load` restores
(the EMA or trainable parameters merged with the frozen ones, the motion statistics among them)
and the config the run saved, so `load` builds the same model from it without its run. Floats
may be stored in bfloat16 (half the bytes; the default weights in vlogger_jax/assets/ are); they
are cast back to each parameter's dtype on load.

Layout: one array per parameter, keyed by its '/'-joined path, plus three JSON strings:
`__config__` (the run's config), `__meta__` ({'format', 'step', 'dtypes': {path: stored dtype},
'source'}). bfloat16 arrays are stored as their uint16 bits, since NumPy has no bfloat16.
"""

from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vlogger_jax import fileio
from vlogger_jax import models

FORMAT = "vlogger_jax.weights/1"
SUFFIX = ".npz"
_CONFIG, _META = "__config__", "__meta__"


class WeightsError(ValueError):
  """A weights file that cannot be read or does not fit its model (one-sentence reason)."""


def _flatten(tree, prefix=()) -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, prefix + (str(k),)))
    else:
      out["/".join(prefix + (str(k),))] = v
  return out


def _unflatten(flat: dict) -> dict:
  tree: dict = {}
  for path, v in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return tree


def save(path: str, config, params, step: int, *, dtype: str | None = "bfloat16",
         source: str = "") -> str:
  """Writes `params` (a nested dict of arrays, as `loading.load` returns) and `config` to the
  weights file `path` (written to a temporary name, then renamed). dtype: floats are stored in
  this dtype ('bfloat16', 'float32'; None keeps each parameter's own). -> the path."""
  if not path.endswith(SUFFIX):
    raise WeightsError(f"weights file name '{path}' does not end in {SUFFIX}; expected e.g. "
                       f"'motion{SUFFIX}'.")
  flat = _flatten(jax.device_get(params))
  arrays, dtypes = {}, {}
  for k, v in flat.items():
    v = np.asarray(v)
    if dtype is not None and jnp.issubdtype(v.dtype, jnp.floating):
      v = v.astype(jnp.dtype(dtype))
    dtypes[k] = str(v.dtype)
    arrays[k] = v.view(np.uint16) if v.dtype == jnp.bfloat16 else v
  config = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
  meta = {"format": FORMAT, "step": int(step), "dtypes": dtypes, "source": source}
  arrays[_CONFIG] = np.array(json.dumps(config))
  arrays[_META] = np.array(json.dumps(meta))
  return fileio.save_npz(path, **arrays)


def _read(path: str) -> tuple[dict, dict, dict]:
  """(config dict, meta dict, {path: stored array}) of a weights file."""
  name = f"weights file '{path}'"
  if not os.path.isfile(path):
    raise WeightsError(f"{name} does not exist; expected a {SUFFIX} file written by "
                       "vlogger_jax.models.weights.save (launch/export_weights.py).")
  try:
    data = fileio.read_npz(path)
  except fileio.NpzError as e:
    raise WeightsError(f"{name} {e}; expected a {SUFFIX} weights file.") from None
  if _META not in data or _CONFIG not in data:
    raise WeightsError(f"{name} has no {_META}/{_CONFIG} entries; expected a weights file "
                       "written by vlogger_jax.models.weights.save, not another .npz.")
  meta, config = json.loads(str(data.pop(_META))), json.loads(str(data.pop(_CONFIG)))
  if meta.get("format") != FORMAT:
    raise WeightsError(f"{name} has format {meta.get('format')!r}; this version of vlogger_jax "
                       f"reads {FORMAT!r}.")
  return config, meta, data


def read_config(path: str) -> tuple[ml_collections.ConfigDict, int]:
  """(config, step) of a weights file, reading no parameters into the model."""
  config, meta, _ = _read(path)
  return ml_collections.ConfigDict(config), int(meta["step"])


def is_weights_file(path: str) -> bool:
  return str(path).endswith(SUFFIX) and not os.path.isdir(path)


def load(path: str, *, device=None) -> tuple:
  """(model, params, config, step) of a weights file: the model its config builds and its
  parameters on `device` (default: the first), cast to the model's own dtypes and checked
  against the model's shapes. `loading.load` wraps this for files."""
  config, meta, stored = _read(path)
  config = ml_collections.ConfigDict(config)
  model = models.build(config)
  abstract = _flatten(nn.meta.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0))))
  missing = sorted(set(abstract) - set(stored))
  extra = sorted(set(stored) - set(abstract))
  if missing or extra:
    what = f"lacks '{missing[0]}'" if missing else f"has an unknown parameter '{extra[0]}'"
    raise WeightsError(f"weights file '{path}' {what} ({len(missing)} missing, {len(extra)} "
                       "unknown); expected the parameters of the model its config describes.")
  device = device or jax.local_devices()[0]
  flat = {}
  for k, a in abstract.items():
    v = stored[k]
    if meta["dtypes"].get(k) == "bfloat16":
      v = v.view(jnp.bfloat16)
    if v.shape != a.shape:
      raise WeightsError(f"weights file '{path}' holds '{k}' of shape {v.shape}; the model "
                         f"expects {a.shape}.")
    flat[k] = jax.device_put(np.asarray(v).astype(a.dtype), device)
  return model, _unflatten(flat), config, int(meta["step"])
