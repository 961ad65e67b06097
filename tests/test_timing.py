"""The benchmarks' timing helpers (vlogger_jax/timing.py): call counts, blocking, compilation."""

import time

import jax
import jax.numpy as jnp
import pytest

from vlogger_jax import timing

DELAY_S = 0.05


class _Pending:
  """A result whose work finishes only when it is blocked on (like a dispatched jax.Array)."""

  def __init__(self, log):
    self.log = log

  def block_until_ready(self):
    time.sleep(DELAY_S)
    self.log.append("blocked")
    return self


def test_time_calls_calls_fn_warmup_plus_repeats_times_and_blocks_on_each():
  log, calls = [], []

  def fn(a, b):
    calls.append((a, b))
    return {"out": _Pending(log)}   # a pytree: every leaf is blocked on

  first, times = timing.time_calls(fn, 1, 2, repeats=3, warmup=2)
  assert calls == [(1, 2)] * 5 and log == ["blocked"] * 5
  assert len(times) == 3 and all(t >= DELAY_S for t in times), times
  assert first >= DELAY_S
  first, times = timing.time_calls(fn, 1, 2, repeats=1, warmup=0)
  assert first is None and len(times) == 1 and len(calls) == 6
  with pytest.raises(ValueError, match="expected repeats >= 1"):
    timing.time_calls(fn, repeats=0)


def test_first_call_of_a_jitted_function_includes_its_compilation():
  traces = []

  @jax.jit
  def f(x):
    traces.append(1)
    return jnp.sin(x) @ x.T

  x = jnp.ones((64, 64))
  first, times = timing.time_calls(f, x, repeats=2)
  assert len(traces) == 1 and first > max(times), (first, times)
  assert timing.median([3.0, 1.0, 2.0]) == 2.0


def test_pipelined_seconds_blocks_only_on_the_last_result():
  log = []
  per_call = timing.pipelined_seconds(lambda: _Pending(log), calls=4)
  assert log == ["blocked"] and DELAY_S / 4 <= per_call < DELAY_S


def test_compile_timed_returns_the_executable_without_static_arguments():
  f = jax.jit(lambda x, n: x * n, static_argnames=("n",))
  compiled, seconds = timing.compile_timed(f, jnp.arange(3.0), n=2)
  assert seconds > 0 and compiled(jnp.arange(3.0)).tolist() == [0.0, 2.0, 4.0]
