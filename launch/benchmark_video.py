r"""Times video generation with the base video model: ms per frame per denoising step at 128².

  python launch/benchmark_video.py --config=configs/base128.py --frames=48 --num_steps=25 \
      --out=video_sampling.json
  python launch/benchmark_video.py --config=configs/base128.py:tiny --frames=16 --num_steps=3 \
      --samplers=ddim --guidance=1 --repeats=1 --batch=2

Builds the config's VideoModel with freshly initialised parameters (no pre-trained image model
is loaded; speed does not depend on training). The clips' motion comes from the synthetic planner
(one identity per --batch element, no frames rendered) and the reference images are blank. The
whole outpainting generation (VideoModel.generate, one jitted call for the batch) is timed for
each sampler of --samplers, with each guidance weight of --guidance: the first call's time
(compilation included) apart from the median of --repeats timed calls (vlogger_jax/timing.py).
"ms per frame-step" divides a call by the frames actually denoised (batch x windows x window
frames, overlap and end padding included) and the steps; "frames/s" counts output frames of the
whole batch. --out writes the rows as JSON. Measured figures and their commands: BENCHMARKS.md.
"""

import sys

from absl import flags, logging
import flax.linen as nn
import jax
from ml_collections import config_flags
import numpy as np

from vlogger_jax import cli
from vlogger_jax import contracts
from vlogger_jax import fileio
from vlogger_jax import timing
from vlogger_jax import windowed_sampler
from vlogger_jax.data import synthetic
from vlogger_jax.models.video import VideoModel
from vlogger_jax.train import config_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Video config (task 'video'), e.g. "
                                          "configs/base128.py:tiny.", lock_config=True)
_FRAMES = flags.DEFINE_integer("frames", 48, "Frames to generate per clip.")
_STEPS = flags.DEFINE_integer("num_steps", 25, "Denoising steps per window (ddim, dpm).")
_SAMPLERS = flags.DEFINE_list("samplers", ["ddim", "dpm"], "Samplers to time: ddim, dpm, ddpm "
                              "(ddpm runs all config.diffusion.num_steps steps).")
_GUIDANCE = flags.DEFINE_list("guidance", ["1", "2"], "Guidance weights to time (1: none).")
_BATCH = flags.DEFINE_integer("batch", 1, "Clips (identities) generated in one call.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls.")
_OUT = flags.DEFINE_string("out", None, "Write the figures as JSON here.")
flags.mark_flags_as_required(["config"])


def planned_clips(model: VideoModel, batch: int, num_frames: int) -> dict:
  """A batch of clips of motion parameters (contracts.CLIP_KEYS, leading dim `batch`) from the
  synthetic planner: clip i is the plan of seed i, its reference frame the plan's first."""
  plans = [synthetic.plan_clip(i, num_frames=num_frames, resolution=model.size,
                               head_model=model.head_model) for i in range(batch)]
  clip = {"shape": np.stack([p.shape for p in plans]),
          "fov": np.asarray([p.fov for p in plans], np.float32)}
  for k in contracts.FRAME_KEYS:
    clip[k] = np.stack([getattr(p, k) for p in plans])
    clip[f"ref_{k}"] = clip[k][:, 0]
  return {k: v.astype(np.float32) for k, v in clip.items()}


def check_flags(config) -> str | None:
  """One sentence on what is wrong with the flags, or None."""
  if config.get("task") != "video":
    return (f"--config is task '{config.get('task')}'; expected a control-stage config of the "
            "video model (configs/base128.py or its :small / :tiny variants).")
  if _FRAMES.value < 1 or _BATCH.value < 1 or _REPEATS.value < 1 or _STEPS.value < 1:
    return (f"--frames {_FRAMES.value}, --batch {_BATCH.value}, --repeats {_REPEATS.value}, "
            f"--num_steps {_STEPS.value}; expected each to be at least 1.")
  unknown = [s for s in _SAMPLERS.value if s not in windowed_sampler.SAMPLERS]
  if unknown:
    return (f"--samplers names '{unknown[0]}'; expected some of "
            f"{', '.join(windowed_sampler.SAMPLERS)}.")
  return None


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  if (problem := check_flags(config)):
    print(f"error: {problem}", file=sys.stderr)
    return 1
  model = VideoModel(config)
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.PRNGKey(0)))
  size, window, overlap = model.size, model.num_frames, config.sampling.overlap
  frames, batch = _FRAMES.value, _BATCH.value
  clip = planned_clips(model, batch, frames)
  ref = np.zeros((batch, size, size, 3), np.float32)
  keys = windowed_sampler.batch_keys(jax.random.PRNGKey(0), batch)
  windows = windowed_sampler.num_windows(frames, window, overlap)
  rows = []
  for sampler in _SAMPLERS.value:
    steps = config.diffusion.num_steps if sampler == "ddpm" else _STEPS.value
    for guidance in (float(g) for g in _GUIDANCE.value):
      cfg = model.sampler_config(sampler=sampler, num_steps=steps, guidance=guidance, eta=0.0)
      first_s, times = timing.time_calls(model.jitted_generate, params, ref, clip, keys, cfg,
                                         repeats=_REPEATS.value)
      median = timing.median(times)
      rows.append({"sampler": sampler, "steps": steps, "guidance": guidance, "batch": batch,
                   "frames": frames, "windows": windows, "compile_s": first_s,
                   "median_s": median,
                   "ms_per_frame_step": median / (batch * windows * window * steps) * 1e3,
                   "output_frames_per_s": batch * frames / median})
  device = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  print(f"device: {device}, config {config.variant} ({config.model.name}), {size}², batch "
        f"{batch} x {frames} frames, window {window}, overlap {overlap}")
  for r in rows:
    print(f"{r['sampler']:<5} {r['steps']:>4} steps  guidance {r['guidance']:g}  compile "
          f"{r['compile_s']:6.1f} s  median {r['median_s']:8.3f} s  "
          f"{r['ms_per_frame_step']:7.3f} ms/frame-step  {r['output_frames_per_s']:7.2f} frames/s")
  if _OUT.value:
    fileio.write_json(_OUT.value, {"command": " ".join(sys.argv), "device": device, "rows": rows})
  return 0


if __name__ == "__main__":
  if (problem := config_lib.preflight(sys.argv)):
    sys.exit(f"error: {problem}")
  cli.run(main)
