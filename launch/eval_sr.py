r"""Evaluates the super-resolution stages on held-out synthetic identities.

  python launch/eval_sr.py --sr256=workdir/sr256 --sr512=workdir/sr512 --data_dir=data \
      [--video=workdir/base128] [--num_clips=8] [--frames=48] [--cascade_frames=48] \
      [--sampler=dpm --num_steps=10] [--overlap=2] [--out_dir=workdir/eval_sr]
  python launch/eval_sr.py --sr256=sr256.npz --sr512=sr512.npz --render --float32 --cascade=false \
      --num_clips=2 --frames=8       # no dataset needed: held-out clips rendered on the fly

1. Each stage alone (either flag may be left out): `num_clips` windows of `frames` frames from
   the test split of the stage's dataset (its config.data: synthetic `sr256` / `sr512`, held-out
   identities), box-filtered down to the stage's input size and restored by the stage through
   the windowed sampler (temporal outpainting with `overlap` context frames), against the true
   frames beside bicubic upsampling: PSNR, SSIM, L1, pixel jitter and the seam jump at window
   borders (evaluators.super_resolve, sr_scores).
2. The whole cascade (both stages given): the base video model (--video, the shipped default
   weights if empty) reenacts `num_clips` held-out 512² clips from their first frame (box-filtered
   to 128²) and their true parameters, then 128² -> 256² -> 512², against the true 512² frames,
   beside the base output upsampled bicubically to 512².

It prints a table and writes to out_dir: metrics.json (with the command line),
sr<size>_sheet.png (bicubic | SR | truth, three frames of the first clip, for each stage),
cascade_sheet.png (the same for the cascade) and cascade.mp4 (bicubic base | cascade | truth;
where no ffmpeg is found, its frames as cascade.frames.npz, which `python -m vlogger_jax.video_io`
encodes elsewhere).
"""

import dataclasses
import json
import os
import sys
from typing import Callable

from absl import flags, logging
import jax
import ml_collections
import jax.numpy as jnp
import numpy as np

from vlogger_jax import cli
from vlogger_jax import contracts
from vlogger_jax import diffusion
from vlogger_jax import evaluators
from vlogger_jax import fileio
from vlogger_jax import models
from vlogger_jax import video_eval
from vlogger_jax import video_io
from vlogger_jax import windowed_sampler
from vlogger_jax.data import builders, paths, pipelines, synthetic
from vlogger_jax.inference import pipeline as pipeline_lib
from vlogger_jax.inference import reference as reference_lib
from vlogger_jax.models import loading
from vlogger_jax.models import sr as sr_lib
from vlogger_jax.models.image import to_pixels
from vlogger_jax.train import config_lib

_SR256 = flags.DEFINE_string("sr256", None, "128² -> 256² stage: run directory or weights file.")
_SR512 = flags.DEFINE_string("sr512", None, "256² -> 512² stage: run directory or weights file.")
_VIDEO = flags.DEFINE_string("video", None, "Base video model for the cascade (default: the "
                             "shipped weights).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where the stages' datasets are (default: "
                                "their saved config's data.data_dir).")
_CLIPS = flags.DEFINE_integer("num_clips", 8, "Held-out clips.")
_FRAMES = flags.DEFINE_integer("frames", 48, "Frames per clip for each stage alone.")
_CASCADE_FRAMES = flags.DEFINE_integer("cascade_frames", 48, "Frames per clip for the cascade.")
_SAMPLER = flags.DEFINE_string("sampler", "dpm", "SR sampler: ddpm | ddim | dpm.")
_STEPS = flags.DEFINE_integer("num_steps", 10, "SR sampler steps.")
_OVERLAP = flags.DEFINE_integer("overlap", 2, "Window overlap (the base model's).")
_AUG = flags.DEFINE_float("aug_level", None, "Noise-conditioning augmentation level of the "
                          "low-resolution input (default: each stage's config.sampling).")
_VIDEO_SAMPLER = flags.DEFINE_string("video_sampler", None, "Base model sampler (its default if "
                                     "None).")
_VIDEO_STEPS = flags.DEFINE_integer("video_steps", None, "Base model steps (its default if None).")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where the figures go.")
_RENDER = flags.DEFINE_bool("render", False, "Render the held-out clips (the test split's seeds) "
                            "instead of reading a built dataset.")
_CASCADE = flags.DEFINE_bool("cascade", True, "With both stages, also evaluate the whole cascade.")
_FLOAT32 = flags.DEFINE_bool("float32", False, "Compute in float32 (CPUs, where bfloat16 "
                             "convolutions are slow).")


def _u8(x) -> np.ndarray:
  return np.round((np.clip(np.asarray(x), -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def _sheet(path: str, rows: list[np.ndarray], frames=(0, 1, 2)) -> None:
  """A PNG: one row per frame index, columns = the videos in `rows` (each [T, S, S, 3] uint8)."""
  picture = np.concatenate([np.concatenate([v[f] for v in rows], axis=1) for f in frames], axis=0)
  fileio.save_png(path, picture)


def _mean(scores: dict) -> dict:
  return {k: float(np.nanmean(v)) for k, v in scores.items()}


def _in_float32(loaded: loading.Loaded) -> loading.Loaded:
  """The stage with its model computing in float32 (the parameters cast to it)."""
  config = config_lib.overridden(loaded.config, **{"precision.compute_dtype": "float32"})
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), loaded.params)
  return dataclasses.replace(loaded, model=models.build(config), params=params, config=config)


def _rendered_batch(size: int, frames: int) -> dict:
  """The held-out clips rendered directly (the test split's seeds at `size`, `frames` long), in
  the layout of the data pipelines; the same identities as a built test split, not the same
  motion (a clip's motion depends on its length)."""
  seeds = [builders.TEST_SEED_OFFSET + i for i in range(_CLIPS.value)]
  clips = synthetic.generate_clips(seeds, frames, size)
  batch = {"frames": np.stack([c["frames"] for c in clips])}
  for k in ("shape", "fov") + contracts.FRAME_KEYS:
    batch[k] = np.stack([np.asarray(c[k], np.float32) for c in clips])
  return batch


def _test_batch(loaded: loading.Loaded, frames: int) -> dict:
  if _RENDER.value:
    return _rendered_batch(loaded.model.size, frames)
  d = loaded.config.data
  if _DATA_DIR.value:
    d = ml_collections.ConfigDict(dict(d.to_dict(), data_dir=_DATA_DIR.value))
  it = pipelines.frames_pipeline(paths.dataset_dir(d), "test", _CLIPS.value, seed=0,
                                 resolution=loaded.model.size, num_frames=frames)
  return next(it)


def _stage(loaded: loading.Loaded, out_dir: str) -> dict:
  model = loaded.model
  batch = _test_batch(loaded, _FRAMES.value)
  cfg = model.sampler_config(sampler=_SAMPLER.value, num_steps=_STEPS.value,
                             overlap=_OVERLAP.value)
  out, bicubic = evaluators.super_resolve(model, loaded.params, batch,
                                          jax.random.PRNGKey(_SEED.value), cfg, _AUG.value)
  truth = to_pixels(np.asarray(batch["frames"]))
  starts = windowed_sampler.window_starts(_FRAMES.value, cfg.window, cfg.overlap)
  scores = _mean(evaluators.sr_scores(out, bicubic, truth, starts, cfg.window))
  _sheet(os.path.join(out_dir, f"sr{model.size}_sheet.png"),
         [_u8(bicubic[0]), _u8(out[0]), np.asarray(batch["frames"][0])])
  return scores


def _cascade(video: loading.Loaded, stages: tuple, out_dir: str,
             scored: Callable[[dict], None]) -> None:
  """The whole cascade on held-out clips; `scored(scores)` as soon as they are computed, then
  the sheet and the video."""
  pipe = pipeline_lib.Pipeline(None, video, stages)
  batch = _test_batch(stages[-1], _CASCADE_FRAMES.value)
  size, base = pipe.resolution, pipe.resolutions[0]
  options = pipeline_lib.Options(sr_sampler=_SAMPLER.value, sr_steps=_STEPS.value,
                                 video_overlap=_OVERLAP.value, video_sampler=_VIDEO_SAMPLER.value,
                                 video_steps=_VIDEO_STEPS.value, sr_aug_level=_AUG.value,
                                 seed=_SEED.value)
  rows = {"cascade": [], "bicubic": [], "stage1": []}
  truth_all = to_pixels(np.asarray(batch["frames"]))
  for i in range(truth_all.shape[0]):
    f32 = lambda k: np.asarray(batch[k][i], np.float32)  # noqa: E731
    first = np.asarray(batch["frames"][i, 0])
    ref = reference_lib.Reference(
        image=_u8(sr_lib.downsample(to_pixels(first), size // base)), shape=f32("shape"),
        fov=f32("fov"), expression=f32("expression")[0], head_pose=f32("head_pose")[0],
        body_keypoints=f32("body_keypoints")[0], body_visibility=f32("body_visibility")[0],
        name=f"held-out clip {i}")
    per = {k: f32(k)[None] for k in ("expression", "head_pose", "body_keypoints",
                                     "body_visibility")}
    clip = pipe.clip(ref, per)
    keys = windowed_sampler.example_keys(jax.random.PRNGKey(_SEED.value + i), 1)
    # The base video once, then each stage on the one before, with the keys and sampler the
    # pipeline gives every stage (Pipeline.generate_video; chunked and whole calls agree
    # exactly). The only difference: a stage gets the frames before it as 8-bit pixels.
    base_frames = pipe.generate_video(ref, clip, dataclasses.replace(options, resolution=base),
                                      keys)[0]
    x, outs = to_pixels(jnp.asarray(base_frames))[None], []
    for j, stage in enumerate(stages):
      x = stage.model.jitted_generate(stage.params, x, clip, diffusion.fold_in(keys, 2 + j),
                                      pipe.sr_config(stage, options), None, 0,
                                      options.sr_aug_level)
      outs.append(_u8(x[0]))
    rows["cascade"].append(outs[-1])
    rows["stage1"].append(outs[0])
    up = sr_lib.upsample(to_pixels(jnp.asarray(base_frames)), size)
    rows["bicubic"].append(_u8(up))
  cascade, bicubic = np.stack(rows["cascade"]), np.stack(rows["bicubic"])
  window = video.model.num_frames
  starts = windowed_sampler.window_starts(_CASCADE_FRAMES.value, window, _OVERLAP.value)
  scores = _mean(evaluators.sr_scores(to_pixels(cascade), to_pixels(bicubic), truth_all, starts,
                                      window))
  truth256 = np.asarray(sr_lib.downsample(jnp.asarray(truth_all), size // pipe.resolutions[1]))
  scores[f"psnr_at_{pipe.resolutions[1]}"] = float(np.mean(
      [video_eval.psnr(to_pixels(g), t) for g, t in zip(rows["stage1"], truth256)]))
  scored(scores)
  truth_u8 = np.asarray(batch["frames"][0])
  _sheet(os.path.join(out_dir, "cascade_sheet.png"), [bicubic[0], cascade[0], truth_u8],
         frames=(0, len(truth_u8) // 2, len(truth_u8) - 1))
  side = np.concatenate([bicubic[0], cascade[0], truth_u8], axis=2)
  try:
    video_io.write_video(os.path.join(out_dir, "cascade.mp4"), side)
  except video_io.VideoError:
    video_io.save_frames(os.path.join(out_dir, "cascade.frames.npz"), side)


def main(argv):
  if len(argv) > 1:
    print(f"error: unexpected argument '{argv[1]}'; expected only --flags.", file=sys.stderr)
    return 2
  logging.set_verbosity(logging.WARNING)
  if min(_FRAMES.value, _CASCADE_FRAMES.value) < 4 or _CLIPS.value < 1:
    print(f"error: --frames {_FRAMES.value}, --cascade_frames {_CASCADE_FRAMES.value}, "
          f"--num_clips {_CLIPS.value}; expected at least 4 frames (pixel jitter is a third "
          "temporal difference) and at least one clip.", file=sys.stderr)
    return 1
  out_dir = _OUT_DIR.value or "eval_sr"
  os.makedirs(out_dir, exist_ok=True)
  try:
    stages = {}
    for size, flag in ((256, _SR256), (512, _SR512)):
      if flag.value:
        stages[size] = loading.load(flag.value, expect=("sr",))
        if _FLOAT32.value:
          stages[size] = _in_float32(stages[size])
    if not stages:
      raise loading.LoadError("neither --sr256 nor --sr512 was given; expected at least one "
                              "super-resolution stage.")
  except loading.LoadError as e:
    return cli.report(e)
  results = {"command": " ".join(sys.argv)}
  path = os.path.join(out_dir, "metrics.json")

  def done(name: str, scores: dict) -> None:
    # Each part is written and printed as soon as it is scored: a run stopped by a time limit
    # during a later part (the cascade takes minutes) keeps what it measured.
    results[name] = scores
    fileio.write_json(path, results)
    print(f"{name}: PSNR {scores['psnr']:.2f} dB (bicubic {scores['bicubic_psnr']:.2f}), "
          f"SSIM {scores['ssim']:.3f} (bicubic {scores['bicubic_ssim']:.3f}), jitter "
          f"{scores['pixel_jitter']:.4f} (bicubic {scores['bicubic_pixel_jitter']:.4f}), seam "
          f"{scores.get('boundary_jump', float('nan')):.4f} (bicubic "
          f"{scores.get('bicubic_boundary_jump', float('nan')):.4f})", flush=True)

  for size, loaded in stages.items():
    done(f"sr{size}", _stage(loaded, out_dir))
  if len(stages) == 2 and _CASCADE.value:
    video = loading.load(_VIDEO.value or pipeline_lib.DEFAULT_WEIGHTS["video"], expect=("video",))
    _cascade(video, (stages[256], stages[512]), out_dir, lambda scores: done("cascade", scores))
  print(json.dumps(results, indent=1))
  return 0


if __name__ == "__main__":
  cli.run(main)
