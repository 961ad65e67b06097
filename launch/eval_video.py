r"""Evaluates the base video model on held-out identities: reenactment with the true controls.

  python launch/eval_video.py --workdir=workdir/base128 \
      [--num_clips=8] [--num_frames=48] [--sampler=ddim --num_steps=100 --eta=1] [--videos=2] \
      [--out_dir=workdir/base128/eval_video] [--config=configs/base128.py --config.data...]

Loads the model and its inference weights from the latest checkpoint of a control-stage run
(task 'video'), with the config the run saved (EMA parameters where it kept them;
vlogger_jax/models/loading.py): no trainer, optimizer state or pre-trained image run is needed.
It takes num_clips windows of num_frames frames from the test split of the run's dataset
(held-out identities, the same windows at every run) with a reference frame >=
data.min_ref_distance frames away, and generates every window from its reference frame and true
controls, all clips in one call, in three modes: temporal outpainting with 50 % overlap (the
paper's), with 25 % overlap, and none (every window generated on its own). It reports, averaged
over clips (evaluators.reenactment_scores, vlogger_jax/video_eval.py, docs/video_eval.md): PSNR,
SSIM and L1 against the true frames beside the baseline of repeating the reference frame, the
pixel jitter beside the true frames' own, and the seam jump at the window boundaries. It prints
a table and writes to out_dir: metrics.json (with the command line), clip<i>.mp4 for the first
--videos clips (truth | 50 %-overlap generation | controls, 24 fps; where no ffmpeg is found,
their frames as clip<i>.frames.npz, which `python -m vlogger_jax.video_io` encodes elsewhere)
and contact_sheet.png (rows: controls, truth, each mode; columns: the reference and 8 frames of
the first clip).

--config is optional: the saved config is the truth. A given one says where the dataset is now
and gives the evaluation defaults (config.evaluation, config.sampling.guidance); where it differs
from the saved one in what shapes the model (CHECKED_KEYS), the script says where and stops.
"""

import math
import os
import sys

from absl import flags, logging
import jax
from ml_collections import config_flags
import numpy as np
from PIL import Image, ImageDraw

from vlogger_jax import checkpoint
from vlogger_jax import cli
from vlogger_jax import contracts
from vlogger_jax import evaluators
from vlogger_jax import fileio
from vlogger_jax import render
from vlogger_jax import video_io
from vlogger_jax.data import paths, pipelines
from vlogger_jax.models import loading
from vlogger_jax.train import config_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Optional: the run's config, e.g. "
                                          "configs/base128.py:tiny, to say where its dataset is "
                                          "now (default: the config saved with the checkpoint).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The control-stage run's workdir.")
_NUM_CLIPS = flags.DEFINE_integer("num_clips", 8, "Held-out clips to evaluate.")
_NUM_FRAMES = flags.DEFINE_integer("num_frames", 48, "Frames generated per clip (more than the "
                                   "model's window of data.num_frames).")
_SAMPLER = flags.DEFINE_string("sampler", None, "ddpm | ddim | dpm (default: config.evaluation's).")
_STEPS = flags.DEFINE_integer("num_steps", None, "Sampler steps (default: config.evaluation's).")
_ETA = flags.DEFINE_float("eta", None, "DDIM noise (default: config.evaluation's).")
_GUIDANCE = flags.DEFINE_float("guidance", None, "Guidance weight (default: config.sampling's).")
_VIDEOS = flags.DEFINE_integer("videos", 2, "Sample videos to write (the first clips).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the sampler's noise.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output folder (default: <workdir>/eval_video).")
flags.mark_flags_as_required(["workdir"])

FPS = contracts.FPS
MIN_VIDEO_PX = 256      # sample videos are upscaled (nearest neighbour) to at least this height
MIN_TILE_PX = 128       # contact-sheet tiles likewise
SHEET_COLUMNS = 8       # frames shown per row of the contact sheet
LABEL_PX = 20           # height of the label strip above videos and sheet columns
ROW_LABEL_PX = 150      # width of the sheet's row-label column
GAP_PX = 4

# (key, label, divisor): overlap = window // divisor frames; divisor 0 means none
MODES = (("outpaint_50", "outpainting 50%", 2), ("outpaint_25", "outpainting 25%", 4),
         ("no_outpainting", "no outpainting", 0))
QUALITY = ("psnr", "ssim", "l1")
MODE_METRICS = QUALITY + ("pixel_jitter", "boundary_jump", "boundary_jump_truth")
# What must match between --config and the checkpoint's own config for the numbers to mean
# what the user thinks they mean (the weights themselves always load as the run saved them).
CHECKED_KEYS = ("task", "model", "diffusion", "data.num_frames", "data.resolution")


class EvalError(ValueError):
  """An input of the evaluation that no run could use (one sentence)."""


def _overlap(window: int, divisor: int) -> int:
  return window // divisor if divisor else 0


# --- pictures: sample videos and the contact sheet ---

def _uint8(x):
  """[-1, 1] floats -> uint8."""
  return np.round((np.clip(np.asarray(x, np.float32), -1, 1) + 1) * 127.5).astype(np.uint8)


def _upscale(frames, min_px: int):
  """Nearest-neighbour upscale of [..., H, W, 3] by the smallest integer reaching min_px."""
  k = max(1, math.ceil(min_px / frames.shape[-3]))
  return np.repeat(np.repeat(frames, k, axis=-3), k, axis=-2)


def _label(image, xy, text):
  ImageDraw.Draw(image).text(xy, text, fill=(0, 0, 0))


def sample_video_frames(panels: list[tuple[str, object]]) -> np.ndarray:
  """Labelled panels [(label, uint8 frames [T, S, S, 3])] side by side: uint8 [T, H, W, 3]."""
  tiles = [_upscale(frames, MIN_VIDEO_PX) for _, frames in panels]
  t, s = tiles[0].shape[0], tiles[0].shape[1]
  width = len(tiles) * s + (len(tiles) - 1) * GAP_PX
  header = Image.new("RGB", (width, LABEL_PX), (255, 255, 255))
  for i, (label, _) in enumerate(panels):
    _label(header, (i * (s + GAP_PX) + 4, 4), label)
  video = np.full((t, LABEL_PX + s, width, 3), 255, np.uint8)
  video[:, :LABEL_PX] = np.asarray(header)
  for i, tile in enumerate(tiles):
    video[:, LABEL_PX:, i * (s + GAP_PX):i * (s + GAP_PX) + s] = tile
  return video


def write_sample_video(path: str, panels: list[tuple[str, object]]) -> str:
  """Writes labelled panels [(label, uint8 frames [T, S, S, 3])] side by side as a 24 fps mp4.

  Where no encoder is found the frames go to `<path without .mp4>.frames.npz` instead (key
  'frames', and 'fps'), and the VideoError is raised after; `python -m vlogger_jax.video_io
  clip0.frames.npz clip0.mp4` encodes them on a machine with ffmpeg.
  """
  video = sample_video_frames(panels)
  try:
    return video_io.write_video(path, video, fps=FPS)
  except video_io.VideoError:
    video_io.save_frames(os.path.splitext(path)[0] + ".frames.npz", video, fps=FPS)
    raise


def write_contact_sheet(path: str, rows: list[tuple[str, object, object]], frames: list[int]
                        ) -> str:
  """A PNG of labelled rows [(label, uint8 reference tile [S, S, 3] or None, uint8 video
  [T, S, S, 3])]: the reference tile (grey when None), then the video at the frame indices."""
  size = np.asarray(rows[0][2]).shape[1]
  s = _upscale(np.zeros((size, size, 3), np.uint8), MIN_TILE_PX).shape[0]
  cols = ["reference"] + [f"frame {t}" for t in frames]
  sheet = np.full((LABEL_PX + len(rows) * (s + GAP_PX), ROW_LABEL_PX + len(cols) * (s + GAP_PX),
                   3), 255, np.uint8)
  for r, (_, ref, video) in enumerate(rows):
    y = LABEL_PX + r * (s + GAP_PX)
    first = np.full((size, size, 3), 128, np.uint8) if ref is None else np.asarray(ref)
    tiles = _upscale(np.concatenate([first[None], np.asarray(video)[frames]]), MIN_TILE_PX)
    for c, tile in enumerate(tiles):
      x = ROW_LABEL_PX + c * (s + GAP_PX)
      sheet[y:y + s, x:x + s] = tile
  image = Image.fromarray(sheet)
  for c, label in enumerate(cols):
    _label(image, (ROW_LABEL_PX + c * (s + GAP_PX) + 4, 4), label)
  for r, (label, *_) in enumerate(rows):
    _label(image, (6, LABEL_PX + r * (s + GAP_PX) + s // 2 - 6), label)
  return fileio.save_png(path, image)


# --- the run, its data and the sampler ---

def restore(workdir: str, given=None):
  """(loading.Loaded, the config of the data and defaults: --config if given, else the saved
  one) of a control-stage run; EvalError or LoadError in one sentence if it cannot be used."""
  if given is not None and given.get("task") != "video":
    raise EvalError(f"--config is task '{given.get('task')}'; expected the control stage of the "
                    "video model (configs/base128.py or its :small / :tiny variants).")
  loaded = loading.load(workdir, expect=("video",))
  if given is None:
    return loaded, loaded.config
  differ = loading.config_differences(loaded.config.to_dict(), given.to_dict(), CHECKED_KEYS)
  if differ:
    raise EvalError(f"--config differs from the config of checkpoint {loaded.step} in "
                    f"{loaded.workdir} at {', '.join(differ)}; expected the run's own config "
                    "(the same overrides as given to launch/train.py), or no --config.")
  return loaded, given


def check_inputs(num_clips: int, num_frames: int, videos: int, window: int) -> None:
  """EvalError in one sentence for flags no evaluation could use."""
  if num_frames <= window:
    raise EvalError(f"--num_frames is {num_frames}; expected more than the model's window of "
                    f"{window} frames, so that outpainting has window boundaries to measure.")
  if num_clips < 1 or videos < 0:
    raise EvalError(f"--num_clips {num_clips} / --videos {videos}; expected num_clips >= 1 and "
                    "videos >= 0.")


def sampler_settings(config, sampler=None, num_steps=None, eta=None, guidance=None) -> dict:
  """The sampler of the evaluation: the flags given, else config.evaluation's and
  config.sampling's guidance."""
  e = config.get("evaluation") or {}
  s = config.get("sampling") or {}
  pick = lambda flag, default: default if flag is None else flag  # noqa: E731
  return {"sampler": sampler or e.get("sampler", "ddim"),
          "num_steps": pick(num_steps, e.get("num_steps", 100)),
          "eta": pick(eta, e.get("eta", 1.0)),
          "guidance": pick(guidance, s.get("guidance", 1.0))}


def held_out_batch(config, num_clips: int, num_frames: int) -> dict:
  """num_clips windows of the test split (held-out identities): the same clips and windows at
  every run (seed 0), in the data pipelines' layout."""
  d = config.data
  return next(pipelines.video_pipeline(
      paths.dataset_dir(d), "test", num_clips, seed=0, resolution=d.resolution,
      num_frames=num_frames, min_ref_distance=d.min_ref_distance))


# --- generation and scores ---

def reenact_modes(loaded: loading.Loaded, batch: dict, sampler: dict, num_frames: int,
                  seed: int) -> tuple[dict, dict]:
  """({mode: generated frames [B, T, S, S, 3] in [-1, 1]}, {mode: per-clip scores of
  evaluators.reenactment_scores}) of every mode of MODES, one generation call per mode."""
  model, window = loaded.model, loaded.model.num_frames
  # The same noise in every mode: the modes differ only in how windows are chained.
  key = jax.random.PRNGKey(seed)
  generated, scores = {}, {}
  for mode, _, divisor in MODES:
    overlap = _overlap(window, divisor)
    cfg = model.sampler_config(overlap=overlap, **sampler)
    generated[mode] = evaluators.reenact(model, loaded.params, batch, key, cfg)
    starts = evaluators.window_starts(model, num_frames, overlap)
    scores[mode] = evaluators.reenactment_scores(generated[mode], batch, starts, window)
  return generated, scores


def print_clips(scores: dict) -> None:
  """One line per clip: its PSNR in every mode beside the repeat-the-reference baseline."""
  first = scores[MODES[0][0]]
  for i in range(len(first["psnr"])):
    print(f"clip {i + 1}/{len(first['psnr'])}: " + ", ".join(
        f"{label} {scores[mode]['psnr'][i]:.2f} dB" for mode, label, _ in MODES) +
          f", repeat reference {first['repeat_psnr'][i]:.2f} dB", flush=True)


def shown_controls(model, batch: dict, count: int) -> np.ndarray:
  """The controls of the first `count` clips to look at: uint8 RGB [count, T + 1, S, S, 3],
  the clip's T frames then its reference frame (the model's own render call)."""
  clip = {k: np.asarray(batch[k][:count], np.float32) for k in contracts.CLIP_KEYS}
  controls, ref_controls = jax.jit(model.controls)(clip)
  both = np.concatenate([np.asarray(controls), np.asarray(ref_controls)[:, None]], axis=1)
  return (np.asarray(render.controls_rgb(both)) * 255).round().astype(np.uint8)


def write_pictures(out_dir: str, batch: dict, generated: dict, shown: np.ndarray, videos: int,
                   window: int) -> list[str]:
  """Writes clip<i>.mp4 for the first `videos` clips and contact_sheet.png of clip 0; returns the
  errors of sample videos that could not be encoded (their frames are kept as .frames.npz)."""
  num_frames = generated[MODES[0][0]].shape[1]
  failures = []
  for i in range(videos):
    try:
      write_sample_video(os.path.join(out_dir, f"clip{i}.mp4"),
                         [("truth", np.asarray(batch["frames"][i])),
                          ("generated, 50% overlap", _uint8(generated[MODES[0][0]][i])),
                          ("controls", shown[i, :num_frames])])
    except video_io.VideoError as err:
      # The figures are what took the time: a missing encoder must not lose them, nor the
      # samples (kept as clip<i>.frames.npz to encode elsewhere).
      if not failures:
        print(f"warning: no sample videos, frames kept as .frames.npz: {err}", file=sys.stderr,
              flush=True)
      failures.append(str(err))
  columns = np.unique(np.linspace(0, num_frames - 1, SHEET_COLUMNS).round().astype(int))
  rows = [("controls", shown[0, num_frames], shown[0, :num_frames]),
          ("truth", np.asarray(batch["ref_frame"][0]), np.asarray(batch["frames"][0]))] + [
      (f"{label} (overlap {_overlap(window, div)})" if div else label, None,
       _uint8(generated[mode][0])) for mode, label, div in MODES]
  write_contact_sheet(os.path.join(out_dir, "contact_sheet.png"), rows, list(columns))
  return failures


# --- the metrics ---

def _finite(x: float) -> float | None:
  """JSON has no NaN: undefined values (video_eval.boundary_jump's nan) become null."""
  return x if math.isfinite(x) else None


def mean(values) -> float | None:
  """Mean over clips of the defined values; None if none is."""
  values = [v for v in values if math.isfinite(v)]
  return float(np.mean(values)) if values else None


def metrics_dict(loaded: loading.Loaded, config, scores: dict, num_frames: int, sampler: dict,
                 seed: int, sample_videos: int, video_failures: list[str]) -> dict:
  """The metrics.json of an evaluation (without the command line): means and per-clip values of
  every mode, the repeat-the-reference baseline and the truth's jitter."""
  window, d = loaded.model.num_frames, config.data
  per_clip = lambda v: [_finite(float(x)) for x in v]  # noqa: E731
  first = scores[MODES[0][0]]
  repeat = {m: first[f"repeat_{m}"] for m in QUALITY}
  return {
      "step": int(loaded.step), "workdir": loaded.workdir, "num_clips": len(first["psnr"]),
      "num_frames": num_frames, "window": window, "resolution": d.resolution,
      "min_ref_distance": d.min_ref_distance, "sampler": dict(sampler), "seed": seed,
      "modes": {mode: {"overlap": _overlap(window, div),
                       **{m: mean(scores[mode][m]) for m in MODE_METRICS},
                       "per_clip": {m: per_clip(scores[mode][m]) for m in MODE_METRICS}}
                for mode, _, div in MODES},
      "repeat_ref": {**{m: mean(v) for m, v in repeat.items()},
                     "per_clip": {m: per_clip(v) for m, v in repeat.items()}},
      "truth": {"pixel_jitter": mean(first["truth_jitter"]),
                "per_clip": {"pixel_jitter": per_clip(first["truth_jitter"])}},
      "sample_videos": 0 if video_failures else sample_videos,
      **({"sample_video_error": video_failures[0]} if video_failures else {}),
  }


def format_table(metrics: dict) -> str:
  """The metrics of `evaluate` as an aligned text table ('-' where undefined)."""
  f = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
  head = ("", "overlap", "PSNR dB", "SSIM", "L1", "jitter", "seam jump", "truth seam")
  rows = []
  for key, label, _ in MODES:
    m = metrics["modes"][key]
    rows.append((label, str(m["overlap"]), f(m["psnr"], ".2f"), f(m["ssim"], ".4f"),
                 f(m["l1"], ".4f"), f(m["pixel_jitter"], ".5f"), f(m["boundary_jump"], ".3f"),
                 f(m["boundary_jump_truth"], ".3f")))
  b = metrics["repeat_ref"]
  rows.append(("repeat reference", "-", f(b["psnr"], ".2f"), f(b["ssim"], ".4f"),
               f(b["l1"], ".4f"), "-", "-", "-"))
  rows.append(("ground truth", "-", "-", "-", "-", f(metrics["truth"]["pixel_jitter"], ".5f"),
               "-", "-"))
  widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
  fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                            for i, (c, w) in enumerate(zip(r, widths)))
  return "\n".join([fmt(head)] + [fmt(r) for r in rows])


def evaluate(loaded: loading.Loaded, config, num_clips: int, num_frames: int, sampler: dict,
             videos: int, out_dir: str, seed: int = 0) -> dict:
  """Runs the evaluation of the module doc on a restored run (`restore`); returns the metrics
  dict written to metrics.json."""
  check_inputs(num_clips, num_frames, videos, loaded.model.num_frames)
  batch = held_out_batch(config, num_clips, num_frames)
  generated, scores = reenact_modes(loaded, batch, sampler, num_frames, seed)
  print_clips(scores)
  os.makedirs(out_dir, exist_ok=True)
  videos = min(videos, num_clips)
  shown = shown_controls(loaded.model, batch, max(videos, 1))
  failures = write_pictures(out_dir, batch, generated, shown, videos, loaded.model.num_frames)
  return metrics_dict(loaded, config, scores, num_frames, sampler, seed, videos, failures)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax narrates every restore at INFO
  try:
    loaded, config = restore(_WORKDIR.value, _CONFIG.value)
    sampler = sampler_settings(config, _SAMPLER.value, _STEPS.value, _ETA.value, _GUIDANCE.value)
    out_dir = _OUT_DIR.value or os.path.join(loaded.workdir, "eval_video")
    metrics = evaluate(loaded, config, _NUM_CLIPS.value, _NUM_FRAMES.value, sampler,
                       _VIDEOS.value, out_dir, _SEED.value)
  except (ValueError, checkpoint.CheckpointError) as err:
    return cli.report(err)
  metrics = {"command": " ".join([os.path.basename(sys.executable)] + sys.argv), **metrics}
  print(format_table(metrics))
  fileio.write_json(os.path.join(out_dir, "metrics.json"), metrics)
  print(f"wrote {out_dir}/metrics.json, contact_sheet.png and {metrics['sample_videos']} sample "
        "video(s)")
  return 0


if __name__ == "__main__":
  if (problem := config_lib.preflight(sys.argv)):
    sys.exit(f"error: {problem}")
  cli.run(main)
