r"""Synthetic clip generation rate (clips/s), host planning and rendering timed apart.

  python launch/benchmark_synthetic.py --frames=240 --resolution=128 --clips=8 --clips_per_call=4
  python launch/benchmark_synthetic.py --frames=24 --resolution=64 --clips=2 --clips_per_call=2

Plans --clips clips of the synthetic generator (vlogger_jax/data/synthetic.py: audio and motion
parameters, on the host) and renders their frames --clips_per_call clips per call, after one
untimed warm-up call that compiles the renderer. It prints the first call's time, the planning
and rendering time per clip and the clips per second of both together. Measured figures and
their commands: BENCHMARKS.md (Data).
"""

import time

from absl import flags
import jax

from vlogger_jax import cli
from vlogger_jax import head as head_lib
from vlogger_jax.data import synthetic

_FRAMES = flags.DEFINE_integer("frames", 240, "Frames per clip.")
_RES = flags.DEFINE_integer("resolution", 128, "Frame size.")
_CLIPS = flags.DEFINE_integer("clips", 4, "Timed clips (after one warm-up call).")
_PER_CALL = flags.DEFINE_integer("clips_per_call", 1, "Clips rendered in one call.")


def main(argv):
  del argv
  model = head_lib.load_default()
  per = _PER_CALL.value
  warm = [synthetic.plan_clip(s, _FRAMES.value, _RES.value, model) for s in range(per)]
  t = time.perf_counter()
  synthetic.render_frames(warm, model)
  compile_s = time.perf_counter() - t
  t = time.perf_counter()
  plans = [synthetic.plan_clip(1000 + s, _FRAMES.value, _RES.value, model)
           for s in range(_CLIPS.value)]
  plan_s = time.perf_counter() - t
  t = time.perf_counter()
  for i in range(0, len(plans), per):
    synthetic.render_frames(plans[i:i + per], model)
  render_s = time.perf_counter() - t
  n = len(plans)
  print(f"device {jax.devices()[0].device_kind}: {n} clips of {_FRAMES.value} frames at "
        f"{_RES.value}px, {per} per call | first call {compile_s:.1f} s | plan "
        f"{plan_s / n:.3f} s/clip | render {render_s / n:.3f} s/clip | "
        f"{n / (plan_s + render_s):.3f} clips/s")


if __name__ == "__main__":
  cli.run(main)
