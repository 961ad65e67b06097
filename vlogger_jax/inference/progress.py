"""Progress bars with an ETA for the stages of a generation, on a text stream.

On a terminal each stage redraws one line; elsewhere (logs, pipes) it prints a line per quarter
of the stage, so logs stay short. The first step of a stage includes compiling it, so its ETA
settles after the second step.
"""

from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
  seconds = max(0, int(round(seconds)))
  return f"{seconds // 60}:{seconds % 60:02d}"


class Bars:
  """A `progress(stage, done, total)` callback that draws one bar per stage."""

  def __init__(self, stream=None, width: int = 24):
    self.stream = stream or sys.stderr
    self.width = width
    self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
    self._stage, self._start, self._printed = None, 0.0, -1

  def start(self, stage: str, total: int = 1) -> None:
    """Shows a stage at 0 of `total` (its clock starts now)."""
    self(stage, 0, total)

  def __call__(self, stage: str, done: int, total: int) -> None:
    now = time.perf_counter()
    if stage != self._stage:
      self._end_line()
      self._stage, self._start, self._printed = stage, now, -1
    elapsed = now - self._start
    eta = elapsed / done * (total - done) if done else float("nan")
    frac = done / max(total, 1)
    fill = int(round(frac * self.width))
    bar = "#" * fill + "-" * (self.width - fill)
    eta_text = f"ETA {_clock(eta)}" if done and done < total else (
        "done" if done >= total else "ETA --:--")
    line = f"{stage:>12} [{bar}] {done}/{total}  {_clock(elapsed)} elapsed, {eta_text}"
    if self.tty:
      self.stream.write("\r" + line)
      if done >= total:
        self.stream.write("\n")
        self._stage = None
    else:
      quarter = int(frac * 4)
      if quarter > self._printed or done >= total:
        self.stream.write(line + "\n")
        self._printed = quarter
      if done >= total:
        self._stage = None
    self.stream.flush()

  def _end_line(self) -> None:
    if self.tty and self._stage is not None:
      self.stream.write("\n")
