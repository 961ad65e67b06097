"""Where a jitted step spends its device time: a profiler trace of a few calls, summed per kernel.

  path = profiling.trace(lambda: step(state, batch), steps=3, log_dir="/tmp/prof")
  summary = profiling.summarize(path, steps=3)
  print(profiling.format_summary(summary))

`trace` records `jax.profiler.trace(..., create_perfetto_trace=True)` and returns the Perfetto
JSON it writes (the `.xplane.pb` beside it opens in TensorBoard or XProf). `summarize` reads that
JSON with the standard library alone, so it runs where no profiler plugin is installed (the H200
image has none): it sums the complete ('X') events of the device processes ('/device:GPU:0',
'/device:TPU:0', ...) by kernel name, or on a CPU-only host those of XLA's compute threads, and
sorts kernels into coarse categories by their names (matrix units, attention, fused elementwise
and normalisation work, copies, other). Times are per profiled call; `busy_ms_per_step` is the
sum of kernel times, which can exceed the wall time when streams overlap.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
from typing import Callable

# Substrings of kernel names, checked in this order (lower case).
CATEGORIES = (
    ("attention", ("flash", "fmha", "attention", "sdpa")),
    ("matrix", ("gemm", "xmma", "cutlass", "cublas", "cudnn", "convolution", "dot", "wgmma",
                "matmul", "sm90", "sm80")),
    ("copy", ("memcpy", "memset", "copy", "transpose")),
    ("reduce", ("reduce", "reduction")),
    ("fusion", ("fusion", "loop_", "input_", "elementwise")),
)


def category(name: str) -> str:
  lower = name.lower()
  for cat, keys in CATEGORIES:
    if any(k in lower for k in keys):
      return cat
  return "other"


def trace(fn: Callable[[], object], steps: int, log_dir: str) -> str:
  """Runs fn() `steps` times under the profiler (blocking on each result); returns the path of
  the Perfetto trace JSON (.json.gz) written under log_dir."""
  import jax  # pylint: disable=g-import-not-at-top
  if steps < 1:
    raise ValueError(f"profile steps is {steps}; expected at least 1.")
  os.makedirs(log_dir, exist_ok=True)
  before = set(glob.glob(os.path.join(log_dir, "**", "perfetto_trace.json.gz"), recursive=True))
  with jax.profiler.trace(log_dir, create_perfetto_trace=True):
    for _ in range(steps):
      jax.block_until_ready(fn())
  after = set(glob.glob(os.path.join(log_dir, "**", "perfetto_trace.json.gz"), recursive=True))
  new = sorted(after - before, key=os.path.getmtime)
  if not new:
    raise RuntimeError(f"the profiler wrote no perfetto_trace.json.gz under {log_dir}; expected "
                       "jax.profiler.trace to create one.")
  return new[-1]


def _events(path: str) -> list:
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt") as f:
    data = json.load(f)
  return data["traceEvents"] if isinstance(data, dict) else data


def summarize(path: str, steps: int = 1, top: int = 20) -> dict:
  """Kernel time per profiled call from a Perfetto trace JSON (module doc)."""
  events = _events(path)
  process = {e["pid"]: e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
  thread = {(e["pid"], e.get("tid")): e["args"]["name"] for e in events
            if e.get("ph") == "M" and e.get("name") == "thread_name"}
  devices = {pid for pid, name in process.items() if name.startswith("/device:")}
  if devices:
    keep = lambda e: e.get("pid") in devices
    source = ", ".join(sorted(process[p] for p in devices))
  else:  # CPU backend: XLA's compute threads
    keep = lambda e: thread.get((e.get("pid"), e.get("tid")), "").startswith("tf_XLAEigen")
    source = "host XLA compute threads"
  total = collections.Counter()
  calls = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and keep(e):
      total[e["name"]] += float(e.get("dur", 0.0))  # microseconds
      calls[e["name"]] += 1
  busy = sum(total.values())
  per_step = lambda us: us / 1e3 / steps
  by_category = collections.Counter()
  for name, us in total.items():
    by_category[category(name)] += us
  return {
      "trace": path, "source": source, "steps": steps,
      "busy_ms_per_step": per_step(busy), "kernels": len(total),
      "categories": {c: {"ms_per_step": per_step(us), "share": us / busy if busy else 0.0}
                     for c, us in by_category.most_common()},
      "top": [{"name": name, "category": category(name), "ms_per_step": per_step(us),
               "calls_per_step": calls[name] / steps, "share": us / busy if busy else 0.0}
              for name, us in total.most_common(top)],
  }


def format_summary(summary: dict) -> str:
  lines = [f"device time per step {summary['busy_ms_per_step']:.2f} ms in {summary['kernels']} "
           f"kernels ({summary['source']}; trace {summary['trace']})"]
  lines += [f"  {c:<10} {v['ms_per_step']:9.3f} ms  {100 * v['share']:5.1f} %"
            for c, v in summary["categories"].items()]
  lines.append("  top kernels:")
  lines += [f"  {k['ms_per_step']:9.3f} ms {100 * k['share']:5.1f} % x{k['calls_per_step']:<5g} "
            f"{k['category']:<9} {k['name'][:90]}" for k in summary["top"]]
  return "\n".join(lines)
