"""Analytic model FLOPs: matrix products and convolutions counted from a function's jaxpr.

XLA's cost analysis is incomplete on GPU (cuDNN convolutions count as nothing), so utilisation is
computed from these counts instead. Only dot_general and conv_general_dilated are counted (2 FLOPs
per multiply-add); elementwise work, normalisations and the renderer are left out, as in the usual
definition of model FLOPs. Counting the jaxpr of `value_and_grad` over the trainable parameters
gives exactly the training work: forward, input gradients where a trainable layer lies upstream,
and weight gradients of trainable layers only. Convolution counts skip the zeros that padding and
dilation insert, so a transposed (input-gradient) convolution costs what its forward costs.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import numpy as np
from jax.extend import core as jex_core


def _dot_flops(eqn) -> int:
  (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
  lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
  batch = math.prod(lhs[d] for d in lb)
  contract = math.prod(lhs[d] for d in lc)
  lhs_free = math.prod(s for d, s in enumerate(lhs) if d not in lc and d not in lb)
  rhs_free = math.prod(s for d, s in enumerate(rhs) if d not in rc and d not in rb)
  return 2 * batch * contract * lhs_free * rhs_free


def _valid_pairs(size_in, size_k, size_out, stride, pad_lo, lhs_dil, rhs_dil) -> int:
  """(output, kernel) index pairs of one spatial dimension that touch a real input element."""
  o = np.arange(size_out)[:, None]
  k = np.arange(size_k)[None, :]
  p = o * stride + k * rhs_dil - pad_lo
  ok = (p >= 0) & (p <= (size_in - 1) * lhs_dil) & (p % lhs_dil == 0)
  return int(ok.sum())


def _conv_flops(eqn) -> int:
  p = eqn.params
  dn = p["dimension_numbers"]
  lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
  out = eqn.outvars[0].aval.shape
  nsp = len(dn.lhs_spec) - 2
  lhs_dil = p["lhs_dilation"] or (1,) * nsp
  rhs_dil = p["rhs_dilation"] or (1,) * nsp
  pairs = 1
  for d in range(nsp):
    pairs *= _valid_pairs(lhs[dn.lhs_spec[2 + d]], rhs[dn.rhs_spec[2 + d]], out[dn.out_spec[2 + d]],
                          p["window_strides"][d], p["padding"][d][0], lhs_dil[d], rhs_dil[d])
  macs = out[dn.out_spec[0]] * out[dn.out_spec[1]] * rhs[dn.rhs_spec[1]] * pairs
  return 2 * macs


def _sub_jaxprs(value) -> list:
  if isinstance(value, jex_core.ClosedJaxpr):
    return [value.jaxpr]
  if isinstance(value, jex_core.Jaxpr):
    return [value]
  if isinstance(value, (tuple, list)):
    return [j for v in value for j in _sub_jaxprs(v)]
  return []


def jaxpr_flops(jaxpr) -> int:
  """FLOPs of matrix products and convolutions in a jaxpr, sub-jaxprs and loops included."""
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_flops(eqn)
    elif name == "conv_general_dilated":
      total += _conv_flops(eqn)
    elif name == "scan":
      total += eqn.params["length"] * jaxpr_flops(eqn.params["jaxpr"].jaxpr)
    elif name == "cond":
      total += max(jaxpr_flops(b.jaxpr) for b in eqn.params["branches"])
    elif name == "while":
      # Unknown trip count: one iteration. Samplers use fori_loop with static bounds (a scan).
      total += jaxpr_flops(eqn.params["body_jaxpr"].jaxpr)
    else:
      for value in eqn.params.values():
        for sub in _sub_jaxprs(value):
          total += jaxpr_flops(sub)
  return total


def count_flops(fn: Callable, *args: Any, **kwargs: Any) -> int:
  """Analytic FLOPs of one call of fn(*args); args may be jax.ShapeDtypeStruct."""
  return jaxpr_flops(jax.make_jaxpr(fn)(*args, **kwargs).jaxpr)
