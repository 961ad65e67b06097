r"""Evaluates the base video model on held-out identities: reenactment with the true controls.

  python launch/eval_video.py --config=configs/base128.py --workdir=workdir/base128 \
      [--num_clips=8] [--num_frames=48] [--sampler=ddim --num_steps=100 --eta=1] [--videos=2] \
      [--out_dir=workdir/base128/eval_video]

Restores the latest checkpoint of a control-stage run (EMA parameters when the run kept them),
takes num_clips windows of num_frames frames from the dataset's test split (held-out identities,
the same windows at every run) with a reference frame >= data.min_ref_distance frames away, and
generates each window from its reference frame and true controls in three modes: temporal
outpainting with 50 % overlap (the paper's), with 25 % overlap, and none (every window generated
on its own). It reports, averaged over clips (vlogger_jax/video_eval.py, docs/video_eval.md):
PSNR, SSIM and L1 against the true frames beside the baseline of repeating the reference frame,
the pixel jitter beside the true frames' own, and the seam jump at the window boundaries. It
prints a table and writes to out_dir: metrics.json (with the command line), clip<i>.mp4 for the
first --videos clips (truth | 50 %-overlap generation | controls, 24 fps; where no ffmpeg is
found, their frames as clip<i>.frames.npz, which `python -m vlogger_jax.video_io` encodes
elsewhere) and contact_sheet.png (rows: controls, truth, each mode; columns: the reference and 8
frames of the first clip).
"""

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402
import numpy as np  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "The run's config, e.g. "
                                          "configs/base128.py:tiny.", lock_config=True)
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
flags.mark_flags_as_required(["config", "workdir"])

FPS = 24
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
# What must match between --config and the checkpoint's own config for the numbers to mean
# anything (a shape change alone would fail the restore; a schedule change would not).
CHECKED_KEYS = ("task", "stage", "model", "diffusion", "data.num_frames", "data.resolution")


class EvalError(ValueError):
  """An input of the evaluation that no run could use (one sentence)."""


def _overlap(window: int, divisor: int) -> int:
  return window // divisor if divisor else 0


def controls_rgb(controls):
  """Control input [..., 22] in [0, 1] -> RGB [..., 3] in [0, 1] to look at: the dense map of the
  head (canonical coordinates as colours) over the body skeleton."""
  from vlogger_jax import head as head_lib  # pylint: disable=g-import-not-at-top
  skeleton = 3 + head_lib.NUM_CLASSES  # channels: dense 3 | semantic | skeleton 3 | mask 1
  controls = np.asarray(controls, np.float32)
  return np.maximum(controls[..., :3], controls[..., skeleton:skeleton + 3])


def _uint8(x):
  """[-1, 1] floats -> uint8."""
  return np.round((np.clip(np.asarray(x, np.float32), -1, 1) + 1) * 127.5).astype(np.uint8)


def _upscale(frames, min_px: int):
  """Nearest-neighbour upscale of [..., H, W, 3] by the smallest integer reaching min_px."""
  k = max(1, math.ceil(min_px / frames.shape[-3]))
  return np.repeat(np.repeat(frames, k, axis=-3), k, axis=-2)


def _label(image, xy, text):
  from PIL import ImageDraw  # pylint: disable=g-import-not-at-top
  ImageDraw.Draw(image).text(xy, text, fill=(0, 0, 0))


def sample_video_frames(panels: list[tuple[str, object]]) -> np.ndarray:
  """Labelled panels [(label, uint8 frames [T, S, S, 3])] side by side: uint8 [T, H, W, 3]."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
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
  from vlogger_jax import video_io  # pylint: disable=g-import-not-at-top
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
  from PIL import Image  # pylint: disable=g-import-not-at-top
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
  from vlogger_jax import fileio  # pylint: disable=g-import-not-at-top
  return fileio.save_png(path, image)


def _finite(x: float) -> float | None:
  """JSON has no NaN: undefined values (video_eval.boundary_jump's nan) become null."""
  return x if math.isfinite(x) else None


def mean(values) -> float | None:
  """Mean over clips of the defined values; None if none is."""
  values = [v for v in values if math.isfinite(v)]
  return float(np.mean(values)) if values else None


def config_differences(saved: dict, given: dict) -> list[str]:
  """Dotted keys of CHECKED_KEYS where two config dicts differ (after a JSON round trip)."""
  import json  # pylint: disable=g-import-not-at-top

  def at(d, path):
    for part in path.split("."):
      d = d.get(part) if isinstance(d, dict) else None
    return json.loads(json.dumps(d))

  out = []
  for path in CHECKED_KEYS:
    a, b = at(saved, path), at(given, path)
    if isinstance(a, dict) and isinstance(b, dict):
      out += [f"{path}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    elif a != b:
      out.append(path)
  return out


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


def evaluate(config, workdir: str, num_clips: int, num_frames: int, sampler: dict, videos: int,
             out_dir: str, seed: int = 0) -> dict:
  """Runs the evaluation of the module doc; returns the metrics dict written to metrics.json."""
  import jax  # pylint: disable=g-import-not-at-top
  from vlogger_jax import video_eval, video_io, video_sampler  # pylint: disable=g-import-not-at-top
  from vlogger_jax.data import builders, pipelines  # pylint: disable=g-import-not-at-top
  from vlogger_jax.train import checkpoint, config_lib, loop  # pylint: disable=g-import-not-at-top
  from vlogger_jax.train.tasks import video  # pylint: disable=g-import-not-at-top

  if config.get("task") != "video" or config.get("stage") != "control":
    raise EvalError(f"--config is task '{config.get('task')}' stage '{config.get('stage')}'; "
                    "expected the control stage of the video model (configs/base128.py).")
  window = config.data.num_frames
  if num_frames <= window:
    raise EvalError(f"--num_frames is {num_frames}; expected more than the model's window of "
                    f"{window} frames, so that outpainting has window boundaries to measure.")
  if num_clips < 1 or videos < 0:
    raise EvalError(f"--num_clips {num_clips} / --videos {videos}; expected num_clips >= 1 and "
                    "videos >= 0.")
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise EvalError(f"--workdir {workdir} holds no checkpoints/ folder; expected the workdir of a "
                    "control-stage run of launch/train.py.")
  # Held-out identities: the test split, the same clips and windows at every run (seed 0).
  d = config.data
  batch = next(pipelines.video_pipeline(
      builders.dataset_dir(d), "test", num_clips, seed=0, resolution=d.resolution,
      num_frames=num_frames, min_ref_distance=d.min_ref_distance))
  # The frozen image model is part of the checkpoint's state: loading config.pretrained again
  # (or pre-training one, for pretrained '') would only be overwritten by the restore.
  config = config_lib.overridden(config, pretrained="none")
  ckpt = checkpoint.Checkpointer(workdir, keep=config.checkpoint.keep, async_save=False)
  try:
    step = ckpt.latest_step()
    if step is None:
      raise EvalError(f"--workdir {workdir} has no checkpoint; expected a control-stage run "
                      "that saved at least one (train first with launch/train.py).")
    differ = config_differences(ckpt.read_config(step), config.to_dict())
    if differ:
      raise EvalError(f"--config differs from the config of checkpoint {step} in {workdir} at "
                      f"{', '.join(differ)}; expected the run's own config (the same overrides "
                      "as given to launch/train.py).")
    trainer = loop.Trainer(config)
    state, _ = ckpt.restore(step, trainer.abstract_state)
  finally:
    ckpt.close()
  task, params = trainer.task, trainer.eval_params(state)
  render_controls = jax.jit(video_sampler.frame_controls, static_argnames=("size",))

  scores = {key: {m: [] for m in QUALITY + ("pixel_jitter", "boundary_jump",
                                            "boundary_jump_truth")} for key, _, _ in MODES}
  base = {m: [] for m in QUALITY}
  truth_jitter, video_failures = [], []
  key = jax.random.PRNGKey(seed)
  os.makedirs(out_dir, exist_ok=True)
  for i in range(num_clips):
    clip = {k: batch[k][i] for k in video_sampler.CLIP_KEYS}
    ref = np.asarray(video.to_pixels(batch["ref_frame"][i]))
    truth = np.asarray(video.to_pixels(batch["frames"][i]))
    repeat = np.broadcast_to(ref, truth.shape)
    base["psnr"].append(video_eval.psnr(repeat, truth))
    base["ssim"].append(video_eval.ssim(repeat, truth))
    base["l1"].append(video_eval.l1(repeat, truth))
    truth_jitter.append(video_eval.pixel_jitter(truth))
    outputs = {}
    for mode, _, divisor in MODES:
      overlap = _overlap(window, divisor)
      # The same noise in every mode: the modes differ only in how windows are chained.
      out = np.asarray(task.generate(params, ref, clip, jax.random.fold_in(key, i),
                                     overlap=overlap, **sampler))
      starts = video_sampler.window_starts(num_frames, window, overlap)
      s = scores[mode]
      s["psnr"].append(video_eval.psnr(out, truth))
      s["ssim"].append(video_eval.ssim(out, truth))
      s["l1"].append(video_eval.l1(out, truth))
      s["pixel_jitter"].append(video_eval.pixel_jitter(out))
      s["boundary_jump"].append(video_eval.boundary_jump(out, starts, window))
      s["boundary_jump_truth"].append(video_eval.boundary_jump(truth, starts, window))
      outputs[mode] = out
    print(f"clip {i + 1}/{num_clips}: " + ", ".join(
        f"{label} {scores[mode]['psnr'][-1]:.2f} dB" for mode, label, _ in MODES) +
          f", repeat reference {base['psnr'][-1]:.2f} dB", flush=True)
    if i < videos or i == 0:
      # The window's frames and the reference frame in one render call: [num_frames + 1].
      cat = lambda k, c=clip: np.concatenate([c[k], c[f"ref_{k}"][None]])  # noqa: E731
      per = lambda k, c=clip: np.broadcast_to(  # noqa: E731
          c[k], (num_frames + 1,) + np.shape(c[k]))
      controls = render_controls(task.head_model, per("shape"), per("fov"),
                                 *(cat(k) for k in video_sampler.FRAME_KEYS), size=d.resolution)
      shown = (controls_rgb(controls) * 255).round().astype(np.uint8)
      truth8 = np.asarray(batch["frames"][i])
      if i < videos:
        try:
          write_sample_video(os.path.join(out_dir, f"clip{i}.mp4"),
                             [("truth", truth8), ("generated, 50% overlap",
                                                  _uint8(outputs[MODES[0][0]])),
                              ("controls", shown[:num_frames])])
        except video_io.VideoError as err:
          # The figures are what took the time: a missing encoder must not lose them, nor the
          # samples (kept as clip<i>.frames.npz to encode elsewhere).
          if not video_failures:
            print(f"warning: no sample videos, frames kept as .frames.npz: {err}",
                  file=sys.stderr, flush=True)
          video_failures.append(str(err))
      if i == 0:
        columns = np.unique(np.linspace(0, num_frames - 1, SHEET_COLUMNS).round().astype(int))
        rows = [("controls", shown[num_frames], shown[:num_frames]),
                ("truth", np.asarray(batch["ref_frame"][i]), truth8)] + [
            (f"{label} (overlap {_overlap(window, div)})" if div else label, None,
             _uint8(outputs[mode])) for mode, label, div in MODES]
        write_contact_sheet(os.path.join(out_dir, "contact_sheet.png"), rows, list(columns))

  per_clip = lambda v: [_finite(float(x)) for x in v]  # noqa: E731
  return {
      "step": int(step), "workdir": os.path.abspath(workdir), "num_clips": num_clips,
      "num_frames": num_frames, "window": window, "resolution": d.resolution,
      "min_ref_distance": d.min_ref_distance, "sampler": dict(sampler), "seed": seed,
      "modes": {mode: {"overlap": _overlap(window, div),
                       **{m: mean(v) for m, v in scores[mode].items()},
                       "per_clip": {m: per_clip(v) for m, v in scores[mode].items()}}
                for mode, _, div in MODES},
      "repeat_ref": {**{m: mean(v) for m, v in base.items()},
                     "per_clip": {m: per_clip(v) for m, v in base.items()}},
      "truth": {"pixel_jitter": mean(truth_jitter), "per_clip": {"pixel_jitter":
                                                                 per_clip(truth_jitter)}},
      "sample_videos": 0 if video_failures else min(videos, num_clips),
      **({"sample_video_error": video_failures[0]} if video_failures else {}),
  }


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax narrates every restore at INFO
  from vlogger_jax import fileio  # pylint: disable=g-import-not-at-top
  from vlogger_jax.train import checkpoint  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  e = config.get("evaluation") or {}
  s = config.get("sampling") or {}
  sampler = {"sampler": _SAMPLER.value or e.get("sampler", "ddim"),
             "num_steps": _STEPS.value if _STEPS.value is not None else e.get("num_steps", 100),
             "eta": _ETA.value if _ETA.value is not None else e.get("eta", 1.0),
             "guidance": _GUIDANCE.value if _GUIDANCE.value is not None
                         else s.get("guidance", 1.0)}
  workdir = _WORKDIR.value
  out_dir = _OUT_DIR.value or os.path.join(workdir, "eval_video")
  try:
    metrics = evaluate(config, workdir, _NUM_CLIPS.value, _NUM_FRAMES.value, sampler,
                       _VIDEOS.value, out_dir, _SEED.value)
  except (ValueError, checkpoint.CheckpointError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 1
  metrics = {"command": " ".join([os.path.basename(sys.executable)] + sys.argv), **metrics}
  print(format_table(metrics))
  fileio.write_json(os.path.join(out_dir, "metrics.json"), metrics)
  print(f"wrote {out_dir}/metrics.json, contact_sheet.png and {metrics['sample_videos']} sample "
        "video(s)")
  return 0


if __name__ == "__main__":
  from vlogger_jax.train.config_lib import preflight
  if (problem := preflight(sys.argv)):
    sys.exit(f"error: {problem}")
  app.run(lambda argv: sys.exit(main(argv)))
