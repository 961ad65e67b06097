"""Parameter trees: the trainable/frozen split by path regex, and its inverse.

Training keeps the frozen part apart (no gradient, no optimizer state); loading a trained model
restores both parts and merges them. Paths are '/'-joined, e.g. 'unet/encoder/res_0_0/conv1'.
"""

from __future__ import annotations

import re
from typing import Sequence

from flax import traverse_util


def _flat(tree) -> dict:
  return traverse_util.flatten_dict(tree, sep="/") if tree else {}


def split_frozen(tree: dict, patterns: Sequence[str]) -> tuple[dict, dict]:
  """Splits a nested dict by '/'-joined path into (trainable, frozen); frozen matches a regex."""
  regexes = [re.compile(p) for p in patterns]
  flat = _flat(tree)
  for p, r in zip(patterns, regexes):
    if not any(r.search(k) for k in flat):
      raise ValueError(f"config.frozen pattern '{p}' matches no parameter; parameter paths look "
                       f"like '{next(iter(flat), '')}'.")
  frozen = {k: v for k, v in flat.items() if any(r.search(k) for r in regexes)}
  trainable = {k: v for k, v in flat.items() if k not in frozen}
  unflat = lambda d: traverse_util.unflatten_dict(d, sep="/") if d else {}
  return unflat(trainable), unflat(frozen)


def merge(trainable: dict, frozen: dict) -> dict:
  """Inverse of split_frozen."""
  flat = {**_flat(trainable), **_flat(frozen)}
  return traverse_util.unflatten_dict(flat, sep="/") if flat else {}
