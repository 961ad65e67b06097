r"""Times the super-resolution stages and the whole cascade to 512² on one device.

  python launch/benchmark_sr.py [--video=configs/base128.py] [--sr256=configs/sr256.py] \
      [--sr512=configs/sr512.py] [--frames=48,240] [--sampler=dpm --num_steps=10] \
      [--video_sampler=dpm --video_steps=10] [--overlap=4] [--out=sr_bench.json]

Each of --video, --sr256 and --sr512 is a config (random weights of its network: speed does not
depend on them) or a weights file / run directory (the trained stage). For each stage alone it
reports the milliseconds per frame and denoising step (one chunk of `--frames[0]` frames through
the windowed sampler, divided by windows x window x steps). Then, for each length in --frames,
the whole cascade through the generation pipeline (inference/pipeline.py: chunks of windows,
each chunk of base frames up the cascade), in seconds per output frame, and the device's peak
memory after it (lengths in increasing order: a peak that does not grow with the length is the
constant-memory path at work).
"""

import sys

from absl import flags, logging
import flax.linen as nn
import jax
import numpy as np

from vlogger_jax import cli
from vlogger_jax import contracts
from vlogger_jax import fileio
from vlogger_jax import models
from vlogger_jax import timing
from vlogger_jax import windowed_sampler
from vlogger_jax.data import synthetic
from vlogger_jax.inference import pipeline as pipeline_lib
from vlogger_jax.inference import reference as reference_lib
from vlogger_jax.models import loading
from vlogger_jax.train import config_lib

_VIDEO = flags.DEFINE_string("video", "configs/base128.py", "Base stage: config or weights.")
_SR256 = flags.DEFINE_string("sr256", "configs/sr256.py", "128² -> 256²: config or weights.")
_SR512 = flags.DEFINE_string("sr512", "configs/sr512.py", "256² -> 512²: config or weights.")
_FRAMES = flags.DEFINE_list("frames", ["48"], "Video lengths in frames (cascade), increasing.")
_SAMPLER = flags.DEFINE_string("sampler", "dpm", "SR sampler.")
_STEPS = flags.DEFINE_integer("num_steps", 10, "SR sampler steps.")
_VIDEO_SAMPLER = flags.DEFINE_string("video_sampler", "dpm", "Base sampler.")
_VIDEO_STEPS = flags.DEFINE_integer("video_steps", 10, "Base sampler steps.")
_OVERLAP = flags.DEFINE_integer("overlap", None, "Window overlap (default: the base stage's).")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed calls per stage.")
_OUT = flags.DEFINE_string("out", None, "Write the figures as JSON here.")


def _stage(spec: str, kind: str) -> loading.Loaded:
  """A stage from a config (random weights) or from a run directory / weights file."""
  if spec.split(":")[0].endswith(".py"):
    config = config_lib.load_config_file(spec)
    if kind == "video":
      config = config_lib.overridden(config, pretrained="none")
    config = models.resolve(config)
    model = models.build(config)
    params = nn.meta.unbox(jax.jit(model.init)(jax.random.PRNGKey(0)))
    return loading.Loaded(model=model, params=params, config=config, step=0, workdir=spec)
  return loading.load(spec, expect=(kind,))


def _clip_and_reference(frames: int, size: int, head_model):
  plan = synthetic.plan_clip(0, num_frames=frames, resolution=size, head_model=head_model)
  ref = reference_lib.Reference(
      image=np.zeros((size, size, 3), np.uint8), shape=plan.shape, fov=np.float32(plan.fov),
      expression=plan.expression[0], head_pose=plan.head_pose[0],
      body_keypoints=plan.body_keypoints[0], body_visibility=plan.body_visibility[0])
  per = {k: getattr(plan, k)[None].astype(np.float32) for k in contracts.FRAME_KEYS}
  return ref, per


def _peak_bytes() -> int | None:
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    frames = [int(f) for f in _FRAMES.value]
    video = _stage(_VIDEO.value, "video")
    stages = tuple(_stage(s.value, "sr") for s in (_SR256, _SR512) if s.value)
    pipe = pipeline_lib.Pipeline(None, video, stages)
  except (ValueError, loading.LoadError) as e:
    return cli.report(e)
  options = pipeline_lib.Options(video_sampler=_VIDEO_SAMPLER.value,
                                 video_steps=_VIDEO_STEPS.value, video_overlap=_OVERLAP.value,
                                 sr_sampler=_SAMPLER.value, sr_steps=_STEPS.value,
                                 windows_per_chunk=4)
  device = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  rows = {"command": " ".join(sys.argv), "device": device, "stages": [], "cascade": []}
  base = pipe.resolutions[0]
  ref, per = _clip_and_reference(frames[0], base, pipe.head_model)
  clip = pipe.clip(ref, per)
  keys = windowed_sampler.example_keys(jax.random.PRNGKey(0), 1)
  vcfg = pipe.video_config(options)
  ref_image = np.zeros((1, base, base, 3), np.float32)
  timed = [("video", video, vcfg, lambda: video.model.jitted_generate(
      video.params, ref_image, clip, keys, vcfg))]
  size = base
  for stage in stages:
    cfg = pipe.sr_config(stage, options)
    lo = np.zeros((1, frames[0], size, size, 3), np.float32)
    timed.append((f"sr{stage.model.size}", stage, cfg, lambda s=stage, c=cfg, x=lo:
                  s.model.jitted_generate(s.params, x, clip, keys, c)))
    size = stage.model.size
  for name, stage, cfg, fn in timed:
    first, times = timing.time_calls(fn, repeats=_REPEATS.value)
    windows = windowed_sampler.num_windows(frames[0], cfg.window, cfg.overlap)
    median = timing.median(times)
    steps = stage.model.schedule.num_steps if cfg.sampler == "ddpm" else cfg.num_steps
    row = {"stage": name, "size": int(stage.model.size), "sampler": cfg.sampler, "steps": steps,
           "compile_s": first, "median_s": median,
           "ms_per_frame_step": median / (windows * cfg.window * steps) * 1e3}
    rows["stages"].append(row)
    print(f"{name:>6} {row['size']}²  {cfg.sampler} {steps} steps  compile {first:.1f} s  "
          f"{row['ms_per_frame_step']:.3f} ms per frame and step")
  for n in frames:
    ref, per = _clip_and_reference(n, base, pipe.head_model)
    clip = pipe.clip(ref, per)
    if n == frames[0]:   # compiles; every length after it reuses the chunk's compilation
      pipe.generate_video(ref, clip, options, keys)
    _, times = timing.time_calls(lambda: pipe.generate_video(ref, clip, options, keys),
                                 repeats=1, warmup=0)
    row = {"frames": n, "seconds": times[0], "s_per_frame": times[0] / n,
           "peak_bytes": _peak_bytes()}
    rows["cascade"].append(row)
    peak = f"{row['peak_bytes'] / 2**30:.2f} GiB" if row["peak_bytes"] else "unknown"
    print(f"cascade to {pipe.resolution}², {n} frames: {times[0]:.1f} s, "
          f"{row['s_per_frame'] * 1e3:.1f} ms per frame, device peak {peak}")
  if _OUT.value:
    fileio.write_json(_OUT.value, rows)
  return 0


if __name__ == "__main__":
  cli.run(main)
