"""Timing of jitted calls, shared by the benchmarks in launch/.

JAX dispatches work asynchronously: a call returns before the device has finished, so a clock
read right after it measures dispatch, not the work. Every helper here blocks on the result
(jax.block_until_ready) before it reads the clock. The first call of a jitted function also
traces and compiles it; `time_calls` reports that call apart from the timed ones.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Sequence

import jax


def time_calls(fn: Callable[..., Any], *args, repeats: int, warmup: int = 1
               ) -> tuple[float | None, list[float]]:
  """(seconds of the first call, [seconds of each of `repeats` calls]) of fn(*args).

  The first `warmup` calls are untimed warm-up; the first of them (compilation included for a
  jitted fn not yet compiled) is reported as the first value, None when warmup is 0. Each call
  is blocked on before the clock is read. A fn that must not see the same arguments twice (one
  that donates them, like a train step) is a closure over its own state, called with no args.
  """
  if repeats < 1 or warmup < 0:
    raise ValueError(f"time_calls: repeats {repeats}, warmup {warmup}; expected repeats >= 1 and "
                     "warmup >= 0.")
  first = None
  for i in range(warmup):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    if i == 0:
      first = time.perf_counter() - t
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return first, times


def pipelined_seconds(fn: Callable[..., Any], *args, calls: int) -> float:
  """Seconds per call of `calls` calls of fn(*args) dispatched back to back, blocking only on the
  last result: the steady rate when the host queues work ahead of the device (as a training loop
  does), without the per-call synchronisation of time_calls."""
  if calls < 1:
    raise ValueError(f"pipelined_seconds: calls {calls}; expected at least 1.")
  t = time.perf_counter()
  for _ in range(calls):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t) / calls


def compile_timed(jitted, *args, **kwargs) -> tuple[Any, float]:
  """(the compiled executable, seconds to lower and compile it) of a jax.jit function for these
  arguments (static ones as keywords); call the executable without the static ones."""
  t = time.perf_counter()
  compiled = jitted.lower(*args, **kwargs).compile()
  return compiled, time.perf_counter() - t


def median(times: Sequence[float]) -> float:
  """The median of a non-empty list of seconds."""
  return float(statistics.median(times))
