r"""Times video generation with the base video model: ms per frame per denoising step at 128².

  python launch/benchmark_video.py --config=configs/base128.py --frames=48 --num_steps=25 \
      --out=video_sampling.json

Parameters are freshly initialised (config.pretrained is taken as 'none'; speed does not depend
on training), the clip's motion comes from the synthetic planner (no frames are rendered), and the
whole outpainting generation (vlogger_jax/video_sampler.py, one jitted function) is timed for each
sampler of --samplers, with and without classifier-free guidance. Compile time is reported apart;
the figure is the median of --repeats calls after one warm-up. "ms per frame-step" divides the
call by the frames actually denoised (windows x window frames, overlap included) and the steps.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Video config (control stage).",
                                          lock_config=True)
_FRAMES = flags.DEFINE_integer("frames", 48, "Frames to generate.")
_STEPS = flags.DEFINE_integer("num_steps", 25, "Denoising steps per window (ddim, dpm).")
_SAMPLERS = flags.DEFINE_list("samplers", ["ddim", "dpm"], "Samplers to time: ddim, dpm, ddpm "
                              "(ddpm runs all config.diffusion.num_steps steps).")
_GUIDANCE = flags.DEFINE_list("guidance", ["1", "2"], "Guidance weights to time (1: none).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls.")
_OUT = flags.DEFINE_string("out", None, "Write the figures as JSON here.")
flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import time

  import jax
  import numpy as np

  from vlogger_jax import video_sampler
  from vlogger_jax.data import synthetic
  from vlogger_jax.train import config_lib
  from vlogger_jax.train.tasks.video import VideoTask

  config = config_lib.overridden(_CONFIG.value, pretrained="none")
  if config.stage != "control":
    sys.exit("error: --config is a pretrain stage; expected a control-stage config "
             "(configs/base128.py or its :small / :tiny variants).")
  task = VideoTask(config)
  params = jax.jit(task.init)(jax.random.PRNGKey(0))
  size, window = task.size, config.data.num_frames
  if _FRAMES.value < window:
    sys.exit(f"error: --frames is {_FRAMES.value}; expected at least the window of {window}.")
  plan = synthetic.plan_clip(0, num_frames=_FRAMES.value, resolution=size,
                             head_model=task.head_model)
  clip = {"shape": plan.shape, "fov": np.float32(plan.fov)}
  for k in video_sampler.FRAME_KEYS:
    clip[k] = getattr(plan, k)
    clip[f"ref_{k}"] = getattr(plan, k)[0]
  ref = np.zeros((size, size, 3), np.float32)
  overlap = config.sampling.overlap
  windows = len(video_sampler.window_starts(_FRAMES.value, window, overlap))
  rows = []
  for sampler in _SAMPLERS.value:
    steps = config.diffusion.num_steps if sampler == "ddpm" else _STEPS.value
    for guidance in (float(g) for g in _GUIDANCE.value):
      kw = dict(sampler=sampler, num_steps=steps, guidance=guidance, eta=0.0)
      t = time.perf_counter()
      np.asarray(task.generate(params, ref, clip, jax.random.PRNGKey(0), **kw))
      compile_s = time.perf_counter() - t
      times = []
      for i in range(_REPEATS.value):
        t = time.perf_counter()
        np.asarray(task.generate(params, ref, clip, jax.random.PRNGKey(i + 1), **kw))
        times.append(time.perf_counter() - t)
      median = float(np.median(times))
      rows.append({"sampler": sampler, "steps": steps, "guidance": guidance,
                   "frames": _FRAMES.value, "windows": windows, "compile_s": compile_s,
                   "median_s": median,
                   "ms_per_frame_step": median / (windows * window * steps) * 1e3,
                   "output_frames_per_s": _FRAMES.value / median})
  device = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  print(f"device: {device}, config {config.variant} ({config.model.name}), {size}², "
        f"{_FRAMES.value} frames, window {window}, overlap {overlap}")
  for r in rows:
    print(f"{r['sampler']:<5} {r['steps']:>4} steps  guidance {r['guidance']:g}  compile "
          f"{r['compile_s']:6.1f} s  median {r['median_s']:8.3f} s  "
          f"{r['ms_per_frame_step']:7.3f} ms/frame-step  {r['output_frames_per_s']:7.2f} frames/s")
  if _OUT.value:
    from vlogger_jax import fileio
    fileio.write_json(_OUT.value, {"command": " ".join(sys.argv), "device": device, "rows": rows})


if __name__ == "__main__":
  from vlogger_jax.train.config_lib import preflight
  if (problem := preflight(sys.argv)):
    sys.exit(f"error: {problem}")
  app.run(main)
