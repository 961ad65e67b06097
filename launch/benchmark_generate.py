r"""Times the whole generation pipeline, stage by stage: seconds per second of video.

  python launch/benchmark_generate.py --video_config=configs/base128.py --seconds=10 \
      --video_sampler=dpm --video_steps=10 --out=generate.json
  python launch/benchmark_generate.py --video_config=configs/base128.py --video_sampler=ddpm \
      --motion_sampler=ddpm --seconds=1          # the paper's samplers (1000 steps each)
  python launch/benchmark_generate.py --video_config=configs/base128.py:demo --seconds=4

Builds the stages from their configs with freshly initialised parameters (speed does not depend
on training; no dataset is opened) or loads them with --motion/--video (run directories or
weights files), and generates --seconds of video from noise audio for a held-out synthetic
identity through vlogger_jax/inference/pipeline.py, exactly as launch/generate.py does. Each
stage runs once to compile, then --repeats timed runs; the medians are printed per stage:
motion, controls (rendering every frame's controls, which the base stage also does inside each
window), base video, and H.264 encoding (on the host CPU, through ffmpeg, where ffmpeg exists).
"""

import sys
import tempfile

from absl import flags, logging
import flax.linen as nn
import jax
from ml_collections import config_flags
import numpy as np

from vlogger_jax import cli
from vlogger_jax import contracts
from vlogger_jax import fileio
from vlogger_jax import models
from vlogger_jax import timing
from vlogger_jax import video_io
from vlogger_jax.inference import pipeline as pipeline_lib
from vlogger_jax.inference import reference as reference_lib
from vlogger_jax.models import loading
from vlogger_jax.train import config_lib

_VIDEO_CONFIG = config_flags.DEFINE_config_file("video_config", None, "Base video config, e.g. "
                                                "configs/base128.py:demo.", lock_config=True)
_MOTION_CONFIG_DEFAULT = "configs/motion.py"
# A config flag with a default parses that file and its command-line overrides where it is
# defined, so the overrides are checked before that.
if __name__ == "__main__" and (problem := config_lib.preflight(
    sys.argv, {"video_config": None, "motion_config": _MOTION_CONFIG_DEFAULT})):
  sys.exit(f"error: {problem}")
_MOTION_CONFIG = config_flags.DEFINE_config_file("motion_config", _MOTION_CONFIG_DEFAULT,
                                                 "Motion config.", lock_config=True)
_MOTION = flags.DEFINE_string("motion", None, "Trained motion stage instead of --motion_config.")
_VIDEO = flags.DEFINE_string("video", None, "Trained video stage instead of --video_config.")
_SECONDS = flags.DEFINE_float("seconds", 10.0, "Video length.")
_SAMPLES = flags.DEFINE_integer("num_samples", 1, "Samples generated in one batch.")
_MOTION_SAMPLER = flags.DEFINE_string("motion_sampler", "ddim", "ddpm | ddim | dpm")
_MOTION_STEPS = flags.DEFINE_integer("motion_steps", 50, "Motion steps (ddim, dpm).")
_MOTION_GUIDANCE = flags.DEFINE_float("motion_guidance", None, "Default: the config's.")
_VIDEO_SAMPLER = flags.DEFINE_string("video_sampler", "dpm", "ddpm | ddim | dpm")
_VIDEO_STEPS = flags.DEFINE_integer("video_steps", 10, "Video steps (ddim, dpm).")
_VIDEO_GUIDANCE = flags.DEFINE_float("video_guidance", None, "Default: the config's.")
_OVERLAP = flags.DEFINE_integer("overlap", None, "Video window overlap (default: the config's).")
_CHUNK = flags.DEFINE_integer("windows_per_chunk", 4, "Windows per device call.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed runs per stage.")
_ENCODE = flags.DEFINE_bool("encode", True, "Time H.264 encoding too (needs ffmpeg).")
_OUT = flags.DEFINE_string("out", None, "Write the figures as JSON here.")


def _stage(path, config, kind):
  if path:
    return loading.load(path, expect=(kind,))
  config = models.resolve(config)
  model = models.build(config)
  params = jax.jit(lambda k: nn.meta.unbox(model.init(k)))(jax.random.PRNGKey(0))
  return loading.Loaded(model=model, params=params, config=config, step=0, workdir="(fresh)")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if _VIDEO_CONFIG.value is None and not _VIDEO.value:
    print("error: expected --video_config (e.g. configs/base128.py:demo) or --video.",
          file=sys.stderr)
    return 1
  if _SECONDS.value <= 0 or _REPEATS.value < 1:
    print(f"error: --seconds {_SECONDS.value:g}, --repeats {_REPEATS.value}; expected positive "
          "values.", file=sys.stderr)
    return 1
  pipe = pipeline_lib.Pipeline(_stage(_MOTION.value, _MOTION_CONFIG.value, "motion"),
                               _stage(_VIDEO.value, _VIDEO_CONFIG.value, "video"))
  options = pipeline_lib.Options(
      num_samples=_SAMPLES.value, motion_sampler=_MOTION_SAMPLER.value,
      motion_steps=_MOTION_STEPS.value, motion_guidance=_MOTION_GUIDANCE.value,
      video_sampler=_VIDEO_SAMPLER.value, video_steps=_VIDEO_STEPS.value,
      video_guidance=_VIDEO_GUIDANCE.value, video_overlap=_OVERLAP.value,
      windows_per_chunk=_CHUNK.value)
  pipe.check(options)
  size = pipe.resolution
  ref = reference_lib.synthetic(0, size)
  frames = max(1, int(round(_SECONDS.value * contracts.FPS)))
  rng = np.random.default_rng(0)
  wave = (0.1 * rng.standard_normal(frames * contracts.SAMPLE_RATE // contracts.FPS)
          ).astype(np.float32)
  keys = pipe.sample_keys(options)
  seconds = frames / contracts.FPS
  held = {}

  def motion():
    held["params"], _ = pipe.generate_motion(ref, wave, options, keys)

  def controls():
    clip = pipe.clip(ref, held["params"])
    piece = {k: jax.numpy.asarray(v) for k, v in clip.items()}
    jax.block_until_ready(pipe._controls_rgb(pipe.resolution)(piece))  # pylint: disable=protected-access

  def video():
    held["frames"] = pipe.generate_video(ref, pipe.clip(ref, held["params"]), options, keys)

  rows = {}
  for name, fn in (("motion", motion), ("controls", controls), ("base video", video)):
    first, times = timing.time_calls(fn, repeats=_REPEATS.value)
    med = timing.median(times)
    rows[name] = {"first_s": first, "median_s": med, "s_per_video_s": med / seconds,
                  "s_per_frame": med / frames}
  if _ENCODE.value:
    try:
      with tempfile.TemporaryDirectory() as tmp:
        def encode():
          video_io.write_video(f"{tmp}/v.mp4", held["frames"][0], audio=wave)
        first, times = timing.time_calls(encode, repeats=_REPEATS.value)
        med = timing.median(times)
      rows["encode (host)"] = {"first_s": first, "median_s": med, "s_per_video_s": med / seconds,
                               "s_per_frame": med / frames}
    except video_io.VideoError as e:
      print(f"encoding not timed: {e}")
  end_to_end = sum(r["median_s"] for k, r in rows.items() if k != "controls")
  vcfg, mcfg = pipe.video_config(options), pipe.motion_config(options)
  steps = lambda cfg, stage: (cfg.num_steps if cfg.sampler != "ddpm"
                              else stage.config.diffusion.num_steps)
  print(f"{jax.devices()[0].device_kind}: {seconds:g} s of video ({frames} frames) at {size}², "
        f"{_SAMPLES.value} sample(s); motion {mcfg.sampler}-{steps(mcfg, pipe.motion)} guidance "
        f"{mcfg.guidance:g}; video {vcfg.sampler}-{steps(vcfg, pipe.video)} guidance "
        f"{vcfg.guidance:g}, window {vcfg.window}, overlap {vcfg.overlap}")
  for name, r in rows.items():
    print(f"  {name:>14}: {r['median_s']:8.3f} s  ({r['s_per_video_s']:.3f} s per video s, "
          f"{r['s_per_frame'] * 1000:.1f} ms per frame; first run {r['first_s']:.1f} s)")
  print(f"  {'end to end':>14}: {end_to_end:8.3f} s  ({end_to_end / seconds:.3f} s per video s, "
        f"{end_to_end / frames * 1000:.1f} ms per frame; controls are inside base video)")
  if _OUT.value:
    fileio.write_json(_OUT.value, {"device": jax.devices()[0].device_kind, "seconds": seconds,
                                   "frames": frames, "resolution": size, "stages": rows,
                                   "end_to_end_s": end_to_end})
  return 0


if __name__ == "__main__":
  cli.run(main)
