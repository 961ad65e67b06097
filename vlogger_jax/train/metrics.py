"""Metrics to a JSON-lines file and TensorBoard event files (process 0 only), and the progress line."""

from __future__ import annotations

import json
import math
import os
import sys
import time

import jax
import numpy as np


def _tb_writer(logdir: str):
  # tensorboard's own event writer: no TensorFlow needed.
  from tensorboard.summary.writer.event_file_writer import EventFileWriter
  return EventFileWriter(logdir)


def _tb_scalar_event(step: int, values: dict):
  from tensorboard.compat.proto import event_pb2, summary_pb2
  summary = summary_pb2.Summary(value=[
      summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()])
  return event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)


def _truncate_jsonl(path: str, last_step: int) -> None:
  """Keeps the lines of a metrics file up to `last_step` (a torn last line goes too), through a
  temporary name; leaves the file alone when nothing goes."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      if json.loads(line)["step"] <= last_step and line.endswith("\n"):
        kept.append(line)
    except (ValueError, KeyError, TypeError):
      pass
  if len(kept) == len(lines):
    return
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    f.writelines(kept)
  os.replace(tmp, path)


def _truncate_events(logdir: str, last_step: int) -> None:
  """Rewrites the TensorBoard event files of `logdir` as one file holding their events up to
  `last_step`, when any of them holds a later one. TensorBoard's event files are append-only
  and its Rust data server does not purge orphaned steps, so a resumed run would otherwise show
  the steps between its checkpoint and the interruption twice. The kept events are written and
  flushed before the old files are removed."""
  # Imported here: only a resume needs tensorboard's reader (about 0.5 s to import).
  from tensorboard.backend.event_processing import event_file_loader
  from tensorboard.compat.proto import event_pb2
  if not os.path.isdir(logdir):
    return
  files = sorted(os.path.join(logdir, f) for f in os.listdir(logdir) if "tfevents" in f)
  events = []
  for path in files:
    for raw in event_file_loader.RawEventFileLoader(path).Load():
      event = event_pb2.Event.FromString(raw)
      if not event.HasField("file_version"):
        events.append(event)
  if all(e.step <= last_step for e in events):
    return
  writer = _tb_writer(logdir)
  for event in events:
    if event.step <= last_step:
      writer.add_event(event)
  writer.close()
  for path in files:
    os.remove(path)


class MetricWriter:
  """Writes scalars to <workdir>/metrics.jsonl and <workdir>/tensorboard on process 0.

  resume_step: the step training starts from (0 for a new run); what an earlier run logged after
  it (the steps between its last checkpoint and its interruption, which this run logs again) is
  dropped first, so that every step appears once in both. None appends to what is there.
  """

  def __init__(self, workdir: str, resume_step: int | None = None):
    self.active = jax.process_index() == 0
    if not self.active:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "metrics.jsonl")
    if resume_step is not None:
      _truncate_jsonl(path, resume_step)
      _truncate_events(os.path.join(workdir, "tensorboard"), resume_step)
    self._jsonl = open(path, "a", buffering=1)
    self._tb = _tb_writer(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, values: dict) -> None:
    if not self.active:
      return
    clean = {k: float(v) for k, v in values.items()}
    self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
    self._tb.add_event(_tb_scalar_event(step, clean))

  def close(self) -> None:
    if self.active:
      self._jsonl.close()
      self._tb.close()


def mean_metrics(history: list[dict]) -> dict:
  """Host-side means of a list of per-step metric dicts (fetched in one transfer)."""
  if not history:
    return {}
  fetched = jax.device_get(history)
  return {k: float(np.mean([h[k] for h in fetched])) for k in fetched[0]}


def _duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
  """One console line per log interval on process 0: step, loss, steps/s, the input's share of the
  interval and ETA."""

  def __init__(self, total_steps: int, start_step: int):
    self.total = total_steps
    self.active = jax.process_index() == 0
    self._t, self._step = time.perf_counter(), start_step
    self.input_share = 0.0

  def report(self, step: int, metrics: dict, input_wait_s: float = 0.0) -> float:
    """Prints the interval's line; returns steps/s. input_wait_s: the interval's seconds spent
    waiting for batches (its share of the interval, `input_share`, says whether the input pipeline
    or the device sets the pace)."""
    now = time.perf_counter()
    elapsed = max(now - self._t, 1e-9)
    rate = (step - self._step) / elapsed
    self.input_share = min(input_wait_s / elapsed, 1.0)
    self._t, self._step = now, step
    if self.active:
      shown = " | ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                         if k in ("loss", "grad_norm", "lr"))
      eta = (self.total - step) / rate if rate > 0 else float("inf")
      print(f"step {step}/{self.total} | {shown} | {rate:.1f} step/s | input "
            f"{100 * self.input_share:.0f} % | ETA {_duration(eta)}", file=sys.stdout, flush=True)
    return rate
