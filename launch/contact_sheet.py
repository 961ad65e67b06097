"""Writes a contact sheet of the control images and the shaded render of the procedural head.

  python launch/contact_sheet.py --out docs/controls_contact_sheet.png --size 224

Columns are variants (shapes, expressions, poses); rows are the shaded render with the skeleton
behind it, the dense map, the semantic classes (one colour per class) and the skeleton alone,
all rendered in one jitted call. How long it takes is in BENCHMARKS.md (Pictures).
"""

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw

from vlogger_jax import body
from vlogger_jax import fileio
from vlogger_jax import geometry
from vlogger_jax import head
from vlogger_jax import render

FOV = 40.0
DISTANCE = 1.5
HEAD_Y = -0.13  # metres; lifts the head into the upper third so arms and hands fit below

# (label, shape settings, expression settings, head rotation (rx, ry, rz) in radians)
VARIANTS = (
    ("neutral", {}, {}, (0, 0, 0)),
    ("shape A", {"seed": 1}, {}, (0, 0, 0)),
    ("shape B", {"seed": 2}, {}, (0, 0, 0)),
    ("jaw open", {}, {"jaw_open": 1.0}, (0, 0, 0)),
    ("smile", {}, {"smile_left": 1.0, "smile_right": 1.0}, (0, 0, 0)),
    ("blink", {}, {"blink_left": 1.0, "blink_right": 1.0}, (0, 0, 0)),
    ("gaze left", {}, {"gaze_horizontal": 1.0}, (0, 0, 0)),
    ("gaze right", {}, {"gaze_horizontal": -1.0}, (0, 0, 0)),
    ("yaw 35", {}, {"jaw_open": 0.4}, (0, 0.6, 0)),
    ("profile", {}, {}, (0, 1.45, 0)),
    ("nod + roll", {}, {"brow_raise_left": 1.0, "brow_raise_right": 1.0}, (0.3, -0.25, 0.15)),
)

CLASS_COLOURS = np.array([
    (0.85, 0.65, 0.55), (0.45, 0.25, 0.10), (0.25, 0.45, 0.10), (0.95, 0.95, 0.95),
    (0.80, 0.90, 1.00), (0.10, 0.35, 0.95), (0.95, 0.35, 0.10), (0.90, 0.30, 0.75),
    (0.95, 0.10, 0.15), (0.60, 0.05, 0.35), (0.20, 0.05, 0.05), (1.00, 1.00, 0.55),
    (0.95, 0.75, 0.20), (0.55, 0.80, 0.65), (0.35, 0.30, 0.65)], np.float32)


def build_inputs(model):
  """Parameters for every variant: shapes [F, 64], expressions [F, 64], poses [F, 9], body."""
  n = len(VARIANTS)
  shapes = np.zeros((n, 64), np.float32)
  expr = np.zeros((n, 64), np.float32)
  poses = np.zeros((n, 9), np.float32)
  for i, (_, shape_cfg, expr_cfg, rot) in enumerate(VARIANTS):
    if "seed" in shape_cfg:
      shapes[i] = 1.5 * np.random.RandomState(shape_cfg["seed"]).normal(size=64)
    for name, value in expr_cfg.items():
      expr[i, model.expression_names.index(name)] = value
    mat = geometry.euler_xyz_to_matrix(jnp.asarray(rot, jnp.float32))
    poses[i, :6] = np.asarray(geometry.matrix_to_rot6d(mat))
    poses[i, 6:] = (0.0, HEAD_Y, DISTANCE)
  # The body follows the head: project the head centre to place the 2-D skeleton under it.
  centre, _ = geometry.project(jnp.array([[0.0, HEAD_Y - 0.005, DISTANCE]]), FOV, 1, 1)
  cx, cy = np.asarray(centre)[0]
  head_height = 0.2 * float(geometry.focal_from_fov(FOV, 1, 1)) / DISTANCE
  kp, vis = body.rest_pose((float(cx), float(cy)), head_height=head_height)
  return shapes, expr, poses, np.broadcast_to(kp, (n, 75, 2)), np.broadcast_to(vis, (n, 75))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="docs/controls_contact_sheet.png")
  parser.add_argument("--size", type=int, default=224, help="tile size in pixels")
  args = parser.parse_args(argv)
  model = head.load_default()
  shapes, expr, poses, kp, vis = build_inputs(model)
  fn = jax.jit(render.render_controls, static_argnames=("size", "budget"))
  out = jax.tree.map(np.asarray, fn(model, shapes, expr, poses, kp, vis, FOV, size=args.size))
  mask = out["mask"]
  backdrop = np.array([0.32, 0.34, 0.38], np.float32)
  skeleton_alpha = out["skeleton"].max(-1, keepdims=True)
  behind = backdrop * (1 - skeleton_alpha) + out["skeleton"]
  rgb = out["rgb"] + (1 - mask) * behind
  semantic = np.einsum("fhwc,cd->fhwd", out["semantic"], CLASS_COLOURS)
  rows = [rgb, out["dense"], semantic, out["skeleton"]]
  n, s = len(VARIANTS), args.size
  label_h = 16
  sheet = np.ones((len(rows) * s + label_h, n * s, 3), np.float32)
  for r, imgs in enumerate(rows):
    for c in range(n):
      sheet[label_h + r * s:label_h + (r + 1) * s, c * s:(c + 1) * s] = imgs[c]
  image = Image.fromarray((np.clip(sheet, 0, 1) * 255).round().astype(np.uint8))
  draw = ImageDraw.Draw(image)
  for c, (label, *_) in enumerate(VARIANTS):
    draw.text((c * s + 4, 2), label, fill=(0, 0, 0))
  fileio.save_png(args.out, image)
  print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB, {image.size[0]}x"
        f"{image.size[1]})")


if __name__ == "__main__":
  main()
