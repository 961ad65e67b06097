"""Times `render.render_controls` (+ `controls_to_input`) for clips of frames at several sizes.

  python launch/benchmark_controls.py --frames 240 --sizes 128,512 --json /tmp/controls.json
  python launch/benchmark_controls.py --frames 24 --sizes 64 --repeats 2 --warmup 1   # quick

Compile time is measured apart (lower + compile); the run time is the median of --repeats timed
calls after --warmup calls, each blocked on (vlogger_jax/timing.py). Frames are a synthetic clip:
random expressions and small head motions of the procedural head at a talking-head framing.
Measured figures and their commands: BENCHMARKS.md and docs/controls.md.
"""

import argparse
import os
import sys

import jax
import numpy as np

from vlogger_jax import body
from vlogger_jax import fileio
from vlogger_jax import geometry
from vlogger_jax import head
from vlogger_jax import render
from vlogger_jax import timing

FOV = 40.0
DISTANCE = 1.2


def clip_inputs(num_frames, seed=0):
  """A synthetic clip: shape [64], expression [F, 64], head pose [F, 9], body keypoints
  [F, 75, 2] and visibility [F, 75]."""
  rng = np.random.RandomState(seed)
  t = np.arange(num_frames) / 24.0
  expr = (0.3 * rng.normal(size=(num_frames, 64))).astype(np.float32)
  expr[:, head.EXPRESSION["jaw_open"]] = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)
  rot = np.stack([0.1 * np.sin(2 * np.pi * 0.3 * t), 0.3 * np.sin(2 * np.pi * 0.2 * t),
                  0.05 * np.sin(2 * np.pi * 0.5 * t)], -1).astype(np.float32)
  pose = np.concatenate([np.asarray(geometry.matrix_to_rot6d(geometry.euler_xyz_to_matrix(rot))),
                         np.tile([[0.0, -0.08, DISTANCE]], (num_frames, 1))], -1)
  kp, vis = body.rest_pose((0.5, 0.33), 0.2)
  kp = kp[None] + 0.01 * rng.normal(size=(num_frames, 75, 2))
  vis = np.broadcast_to(vis, (num_frames, 75))
  shape = rng.normal(size=64).astype(np.float32)
  return shape, expr, pose.astype(np.float32), kp.astype(np.float32), vis.astype(np.float32)


def controls_step(model, shape, expr, pose, kp, vis, *, size, budget):
  """Everything a training step needs: the network input and the shaded frames."""
  out = render.render_controls(model, shape, expr, pose, kp, vis, FOV, size=size, budget=budget)
  return render.controls_to_input(out), out["rgb"]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--frames", type=int, default=240)
  parser.add_argument("--sizes", default="128,512")
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--budget", type=int, default=0,
                      help="rasterizer candidate budget; 0 picks 2^28 on accelerators, 2^25 on CPU")
  parser.add_argument("--json", default=None, help="write the results here as JSON")
  args = parser.parse_args(argv)
  backend = jax.default_backend()
  budget = args.budget or (2**25 if backend == "cpu" else 2**28)
  model = head.load_default()
  inputs = clip_inputs(args.frames)
  device = jax.devices()[0]
  rows = []
  for size in [int(s) for s in args.sizes.split(",")]:
    fn = jax.jit(controls_step, static_argnames=("size", "budget"))
    dev_inputs = jax.device_put(inputs, device)
    compiled, compile_s = timing.compile_timed(fn, model, *dev_inputs, size=size, budget=budget)
    _, times = timing.time_calls(compiled, model, *dev_inputs, repeats=args.repeats,
                                 warmup=args.warmup)
    median = timing.median(times)
    rows.append({"size": size, "frames": args.frames, "compile_s": compile_s,
                 "median_s": median, "min_s": min(times),
                 "ms_per_frame": 1e3 * median / args.frames})
  result = {"device": str(device.device_kind), "backend": backend, "triangles": model.num_faces,
            "vertices": model.num_vertices, "budget": budget, "repeats": args.repeats,
            "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]), "results": rows}
  print(f"device: {result['device']} ({backend}), {model.num_faces} triangles")
  print(f"{'size':>6} {'frames':>7} {'compile s':>10} {'median s':>10} {'min s':>8} "
        f"{'ms/frame':>9}")
  for r in rows:
    print(f"{r['size']:>6} {r['frames']:>7} {r['compile_s']:>10.2f} {r['median_s']:>10.4f} "
          f"{r['min_s']:>8.4f} {r['ms_per_frame']:>9.3f}")
  if args.json:
    fileio.write_json(args.json, result)


if __name__ == "__main__":
  main()
