"""Device meshes and the logical-axis -> mesh-axis shardings of parameters and batches."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def mesh_shape(shape: Sequence[int], axes: Sequence[str], num_devices: int) -> tuple[int, ...]:
  """Resolves the one -1 in `shape` against `num_devices`; one clear ValueError if impossible."""
  shape = list(shape)
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f"mesh {dict(zip(axes, shape))} cannot use {num_devices} devices: "
                       f"{num_devices} is not a multiple of {known}.")
    shape[shape.index(-1)] = num_devices // known
  if int(np.prod(shape)) != num_devices:
    raise ValueError(f"mesh {dict(zip(axes, shape))} needs {int(np.prod(shape))} devices, but "
                     f"{num_devices} are present; set one axis to -1 or change config.mesh.shape.")
  return tuple(shape)


def make_mesh(mesh_config, devices=None) -> Mesh:
  """The named mesh of config.mesh (axes, shape with one optional -1) over all devices."""
  devices = list(devices if devices is not None else jax.devices())
  shape = mesh_shape(mesh_config.shape, mesh_config.axes, len(devices))
  # Auto axes: the compiler propagates shardings from the annotated inputs, outputs and
  # logical constraints (the pjit model), rather than typing every intermediate (Explicit).
  axis_types = (jax.sharding.AxisType.Auto,) * len(shape)
  return jax.make_mesh(shape, tuple(mesh_config.axes), axis_types=axis_types, devices=devices)


def rules_tuple(rules) -> tuple:
  """Config sharding rules (lists after JSON round-trips) as the tuples Flax expects."""
  return tuple((name, tuple(ax) if isinstance(ax, (list, tuple)) else ax) for name, ax in rules)


def logical_shardings(boxed_tree: Any, mesh: Mesh, rules) -> Any:
  """NamedShardings for a tree of (abstract) boxed variables, from their logical axis names."""
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules_tuple(rules))


def batch_sharding(mesh: Mesh, rules, logical_axes: Sequence[str | None]) -> NamedSharding:
  """Sharding of one batch array whose dimensions carry `logical_axes` (e.g. ('batch', None))."""
  spec = nn.logical_to_mesh_axes(tuple(logical_axes), rules_tuple(rules))
  return NamedSharding(mesh, spec)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_divisor(mesh: Mesh, rules) -> int:
  """How many ways the 'batch' logical axis is split: the global batch must be a multiple."""
  spec = nn.logical_to_mesh_axes(("batch",), rules_tuple(rules))[0]
  axes = () if spec is None else (spec if isinstance(spec, tuple) else (spec,))
  return int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
