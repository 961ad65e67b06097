"""Writes the synthetic-data figures: a contact sheet of frames and a short sample video with audio.

  python launch/make_synthetic_sample.py --sheet docs/synthetic_frames.png \
      --video docs/synthetic_sample.mp4 --envelope /tmp/synthetic_envelope.png
  python launch/make_synthetic_sample.py --sheet= --video= --strip docs/synthetic_visemes.png

Rows of the sheet are seeds (framings from a tight face to the torso with hands); columns are
frames picked to show the mouth closed and open, a blink, and a gesture. The video puts four seeds
side by side (the first one's audio). The envelope plot (--envelope, needs matplotlib) overlays
the audio's per-frame RMS and the jaw curve. The viseme strip (--strip, needs matplotlib) puts the
mouth of every frame of --strip_seconds of one clip under its waveform and phoneme labels, above
the inner-lip gap in mm; an empty --sheet or --video skips that figure. How long it takes is in
BENCHMARKS.md (Pictures).
"""

import argparse
import dataclasses

import numpy as np
from PIL import Image, ImageDraw

from vlogger_jax import fileio
from vlogger_jax import head
from vlogger_jax import motion_eval
from vlogger_jax import video_io
from vlogger_jax.data import schema
from vlogger_jax.data import synthetic
from vlogger_jax.data import visemes

E = head.EXPRESSION


def _pick_frames(clip, count):
  """Frames that show: mouth most closed while speaking, most open, a blink, the highest hand."""
  expr = clip["expression"]
  jaw = expr[:, E["jaw_open"]]
  blink = expr[:, E["blink_left"]]
  wrist_y = clip["body_keypoints"][:, [15, 16], 1].min(1)
  picks = [int(np.argmin(jaw + 2 * blink)), int(np.argmax(jaw)), int(np.argmax(blink)),
           int(np.argmin(wrist_y))]
  labels = ["mouth closed", "mouth open", "blink", "gesture"]
  for r in np.linspace(0, len(jaw) - 1, count).astype(int):
    if int(r) not in picks:
      picks.append(int(r))
      labels.append("")
  return picks[:count], labels[:count]


def _window(plan, first: int, count: int):
  """The plan of frames first..first+count-1 (for rendering only those)."""
  sl = slice(first, first + count)
  style = dict(plan.style, scale_px_per_m=plan.style["scale_px_per_m"][sl],
               root_px=plan.style["root_px"][sl])
  return dataclasses.replace(plan, expression=plan.expression[sl], head_pose=plan.head_pose[sl],
                             body_keypoints=plan.body_keypoints[sl],
                             body_visibility=plan.body_visibility[sl], style=style)


def viseme_strip(path: str, seed: int, start: float, seconds: float, model, size: int = 256):
  """Writes the strip: waveform and phonemes over the mouth crops of every frame, and the gap."""
  # matplotlib is no dependency of the package: only this optional figure needs it.
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  num_frames = int(np.ceil((start + seconds) * schema.FPS)) + 1
  plan = synthetic.plan_clip(seed, num_frames, size, model)
  talk = synthetic.clip_speech(seed, num_frames)
  first, count = int(start * schema.FPS), int(round(seconds * schema.FPS))
  frames = synthetic.render_frames([_window(plan, first, count)], model)[0]
  opening = motion_eval.mouth_opening(model, plan.shape, plan.expression)[first:first + count]
  t0, t1 = first / schema.FPS, (first + count) / schema.FPS
  fig, (ax_w, ax_m, ax_o) = plt.subplots(3, 1, figsize=(0.6 * count, 5.4), sharex=True,
                                         gridspec_kw={"height_ratios": [1.2, 0.6, 1.0]})
  sr = schema.SAMPLE_RATE
  s0, s1 = int(t0 * sr), int(t1 * sr)
  ax_w.plot(np.arange(s0, s1) / sr, talk.clean[s0:s1], lw=0.5, color="0.2")
  for label, a, b in talk.phonemes:
    if b < t0 or a > t1:
      continue
    colour = ("tab:red" if visemes.is_bilabial(label) else "0.85" if visemes.is_pause(label)
              else "tab:blue" if visemes.is_vowel(label) else "tab:green")
    for ax in (ax_w, ax_o):
      ax.axvspan(max(a, t0), min(b, t1), color=colour, alpha=0.18, lw=0)
      ax.axvline(a, color="0.6", lw=0.4)
    if not visemes.is_pause(label):
      ax_w.text(0.5 * (max(a, t0) + min(b, t1)), 1.02, label, transform=ax_w.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=8)
  words = [w for w in talk.words if w[2] > t0 and w[1] < t1]
  ax_w.set_title(f"seed {seed}, {talk.voice.name} (pitch {talk.voice.pitch}, {talk.voice.rate} "
                 f"wpm): \"{' '.join(w[0] for w in words)}\"", fontsize=9, pad=16)
  ax_w.set_yticks([])
  ax_w.set_ylabel("speech")
  tf = (np.arange(first, first + count) + 0.5) / schema.FPS
  ax_o.plot(tf, opening, "o-", ms=3, color="k")
  ax_o.axhline(motion_eval.LIPS_CLOSED_MM, color="tab:red", lw=0.8, ls="--")
  ax_o.set_ylabel("lip gap (mm)")
  ax_o.set_xlabel("s (red: p b m, blue: vowels, green: other consonants, grey: pauses; dashed: "
                  "the closed-lips threshold)")
  ax_o.set_xlim(t0, t1)
  fig.tight_layout()
  # Mouth crops centred on the mouth corners (keypoints 9 and 10), 1.6 mouth widths wide and as
  # tall as a frame's slot of the row is, so that nothing is stretched.
  box = ax_m.get_window_extent()
  ratio = box.height / (box.width / count)
  kp = plan.body_keypoints[first:first + count, 9:11] * size
  tiles = []
  for i in range(count):
    c = kp[i].mean(0)
    half = 0.8 * np.linalg.norm(kp[i, 0] - kp[i, 1])
    y0, x0 = int(max(c[1] + 0.3 * half - half * ratio, 0)), int(max(c[0] - half, 0))
    crop = frames[i, y0:int(c[1] + 0.3 * half + half * ratio), x0:int(c[0] + half)]
    tiles.append(np.asarray(Image.fromarray(crop).resize((64, int(64 * ratio)), Image.BICUBIC)))
  ax_m.imshow(np.concatenate(tiles, 1), extent=(t0, t1, 0, 1), aspect="auto")
  ax_m.set_ylim(0, 1)
  ax_m.set_yticks([])
  ax_m.set_ylabel("mouth")
  fig.savefig(path, dpi=90)
  plt.close(fig)
  print("wrote", path)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sheet", default="docs/synthetic_frames.png")
  parser.add_argument("--video", default="docs/synthetic_sample.mp4")
  parser.add_argument("--envelope", default="")
  parser.add_argument("--seeds", default="0,2,4,6,9")
  parser.add_argument("--size", type=int, default=128)
  parser.add_argument("--frames", type=int, default=schema.CLIP_FRAMES)
  parser.add_argument("--columns", type=int, default=6)
  parser.add_argument("--strip", default="", help="write the viseme strip here (PNG)")
  parser.add_argument("--strip_seed", type=int, default=11)
  parser.add_argument("--strip_start", type=float, default=0.25, help="seconds into the clip")
  parser.add_argument("--strip_seconds", type=float, default=1.5)
  args = parser.parse_args(argv)
  model = head.load_default()
  if args.strip:
    viseme_strip(args.strip, args.strip_seed, args.strip_start, args.strip_seconds, model)
  if not (args.sheet or args.video or args.envelope):
    return
  seeds = [int(s) for s in args.seeds.split(",")]
  clips = synthetic.generate_clips(seeds, args.frames, args.size, model)

  if args.sheet:
    _sheet(args, clips)
  if args.video:
    four = clips[:4]
    grid = np.concatenate([np.concatenate([c["frames"] for c in four[:2]], 2),
                           np.concatenate([c["frames"] for c in four[2:4]], 2)], 1)
    video_io.write_video(args.video, grid[: 6 * schema.FPS], fps=schema.FPS,
                         audio=clips[0]["audio"][: schema.num_samples(6 * schema.FPS)])
    print("wrote", args.video, "(audio of", clips[0]["id"] + ")")
  if args.envelope:
    _envelope(args, clips[0])


def _sheet(args, clips):
  """The contact sheet: a row per clip, frames picked by _pick_frames."""
  tile, pad = args.size, 14
  sheet = Image.new("RGB", (args.columns * tile, len(clips) * (tile + pad)), "white")
  draw = ImageDraw.Draw(sheet)
  for r, clip in enumerate(clips):
    idx, labels = _pick_frames(clip, args.columns)
    for c, (i, label) in enumerate(zip(idx, labels)):
      sheet.paste(Image.fromarray(clip["frames"][i]), (c * tile, r * (tile + pad) + pad))
      draw.text((c * tile + 2, r * (tile + pad)), f"{clip['id'][-2:]} {label} (f{i})",
                fill="black")
  fileio.save_png(args.sheet, sheet)
  print("wrote", args.sheet)


def _envelope(args, clip):
  """The envelope plot: the audio's per-frame RMS over the jaw curve."""
  # matplotlib is no dependency of the package: only this optional plot needs it.
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  t = clip["expression"].shape[0]
  a = clip["audio"].astype(np.float64) / 32768
  edges = (np.arange(t + 1) * schema.SAMPLE_RATE) // schema.FPS
  rms = np.array([np.sqrt(np.mean(a[edges[i]:edges[i + 1]]**2)) for i in range(t)])
  jaw = clip["expression"][:, E["jaw_open"]]
  fig, ax = plt.subplots(figsize=(10, 3))
  ax.plot(np.arange(t) / schema.FPS, rms / rms.max(), label="audio RMS per frame (normalised)")
  ax.plot(np.arange(t) / schema.FPS, jaw, label="jaw_open")
  ax.plot(np.arange(t) / schema.FPS, clip["expression"][:, E["blink_left"]], label="blink",
          alpha=0.5)
  ax.set_title(f"{clip['id']}: Pearson(RMS, jaw) = {np.corrcoef(rms, jaw)[0, 1]:.3f}")
  ax.set_xlabel("s")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(args.envelope, dpi=80)
  print("wrote", args.envelope)


if __name__ == "__main__":
  main()
