"""Writes the synthetic-data figures: a contact sheet of frames and a short sample video with audio.

  python launch/make_synthetic_sample.py --sheet docs/synthetic_frames.png \
      --video docs/synthetic_sample.mp4 --envelope /tmp/synthetic_envelope.png

Rows of the sheet are seeds (framings from a tight face to the torso with hands); columns are
frames picked to show the mouth closed and open, a blink, and a gesture. The video puts four seeds
side by side (the first one's audio). The envelope plot (--envelope, needs matplotlib) overlays
the audio's per-frame RMS and the jaw curve. How long it takes is in BENCHMARKS.md (Pictures).
"""

import argparse

import numpy as np
from PIL import Image, ImageDraw

from vlogger_jax import fileio
from vlogger_jax import head
from vlogger_jax import video_io
from vlogger_jax.data import schema
from vlogger_jax.data import synthetic

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


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sheet", default="docs/synthetic_frames.png")
  parser.add_argument("--video", default="docs/synthetic_sample.mp4")
  parser.add_argument("--envelope", default="")
  parser.add_argument("--seeds", default="0,2,4,6,9")
  parser.add_argument("--size", type=int, default=128)
  parser.add_argument("--frames", type=int, default=schema.CLIP_FRAMES)
  parser.add_argument("--columns", type=int, default=6)
  args = parser.parse_args(argv)
  model = head.load_default()
  seeds = [int(s) for s in args.seeds.split(",")]
  clips = synthetic.generate_clips(seeds, args.frames, args.size, model)

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

  four = clips[:4]
  grid = np.concatenate([np.concatenate([c["frames"] for c in four[:2]], 2),
                         np.concatenate([c["frames"] for c in four[2:4]], 2)], 1)
  video_io.write_video(args.video, grid[: 6 * schema.FPS], fps=schema.FPS,
                       audio=clips[0]["audio"][: schema.num_samples(6 * schema.FPS)])
  print("wrote", args.video, "(audio of", clips[0]["id"] + ")")

  if args.envelope:
    # matplotlib is no dependency of the package: only this optional plot needs it.
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    clip = clips[0]
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
