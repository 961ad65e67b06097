r"""Fitting speed (seconds per clip, amortised over a batch) and its accuracy on known truth; and the
landmark detector's frames per second on this CPU.

  python launch/benchmark_fitting.py --clips=64 --frames=240           # one H200: the target
  python launch/benchmark_fitting.py --clips=2 --frames=240            # a CPU
  python launch/benchmark_fitting.py --clips=0 --detect_frames=96      # detection only

The fit: --clips synthetic clips of --frames frames (different identities, cameras and motion),
their true landmarks projected at 256² with 1 px Gaussian noise, 10 % of them dropped and 3 % off
by 15 px, fitted in one batch with the default FitConfig (30 rigid + 300 full L-BFGS steps).
The first call (compilation included) is reported apart from the timed one. Accuracy against
the truth: landmark error (px), head rotation error (degrees), FOV error (degrees), mouth
opening's correlation. Detection: MediaPipe Holistic in its own environment on --detect_frames
frames of a rendered synthetic clip at 256², in tracking (video) mode, the worker's own time
without its start-up. Figures: docs/real_data.md.
"""

import time

from absl import flags
import jax
import numpy as np
from PIL import Image

from vlogger_jax import cli
from vlogger_jax import detector
from vlogger_jax import fitting
from vlogger_jax import geometry
from vlogger_jax import head as head_lib
from vlogger_jax import motion_eval
from vlogger_jax.data import synthetic

_CLIPS = flags.DEFINE_integer("clips", 2, "Clips fitted in one batch (0: no fit benchmark).")
_FRAMES = flags.DEFINE_integer("frames", 240, "Frames per clip.")
_STEPS = flags.DEFINE_integer("steps", fitting.FitConfig.steps, "Full-stage L-BFGS steps.")
_DETECT = flags.DEFINE_integer("detect_frames", 0, "Frames to time the detector on (0: none).")
_DETECT_HEIGHT = flags.DEFINE_integer("detect_height", 256, "Detection frames: "
                                      "the synthetic frames scaled to this height, centred in a "
                                      "16:9 frame when larger than 256 (e.g. 540 or 1080).")
SIZE = 256


def _fit_benchmark(model):
  rng = np.random.default_rng(0)
  plans = [synthetic.plan_clip(s, _FRAMES.value, SIZE, model) for s in range(_CLIPS.value)]
  true = np.stack([np.asarray(fitting.project_landmarks(
      model, p.shape, p.expression, p.head_pose, p.fov, SIZE, SIZE)) for p in plans])
  obs = true + rng.normal(0, 1.0, true.shape)
  conf = (rng.uniform(size=true.shape[:-1]) > 0.1).astype(np.float32)
  wild = rng.uniform(size=true.shape[:-1]) < 0.03
  obs[wild] += rng.normal(0, 15.0, (int(wild.sum()), 2))
  cfg = fitting.FitConfig(steps=_STEPS.value)
  t = time.perf_counter()
  fitting.fit(model, obs, conf, SIZE, SIZE, cfg)
  first = time.perf_counter() - t
  t = time.perf_counter()
  fit = fitting.fit(model, obs, conf, SIZE, SIZE, cfg)
  seconds = time.perf_counter() - t
  lm, rot, fov, mouth = [], [], [], []
  for i, p in enumerate(plans):
    lm.append(np.linalg.norm(fit["landmarks"][i] - true[i], axis=-1).mean())
    ra = geometry.rot6d_to_matrix(p.head_pose[:, :6])
    rb = geometry.rot6d_to_matrix(fit["head_pose"][i, :, :6])
    cos = (np.trace(np.swapaxes(ra, -1, -2) @ rb, axis1=-2, axis2=-1) - 1) / 2
    rot.append(np.degrees(np.arccos(np.clip(cos, -1, 1))).mean())
    fov.append(abs(float(fit["fov"][i]) - float(p.fov)))
    mouth.append(motion_eval.pearson(
        motion_eval.mouth_opening(model, p.shape, p.expression),
        motion_eval.mouth_opening(model, fit["shape"][i], fit["expression"][i])))
  n = len(plans)
  print(f"fit on {jax.devices()[0].device_kind}: {n} clips x {_FRAMES.value} frames, "
        f"{cfg.rigid_steps}+{cfg.steps} steps | first call {first:.1f} s | batch "
        f"{seconds:.2f} s | {seconds / n:.3f} s per clip")
  print(f"accuracy (mean over clips, worst in brackets): landmarks {np.mean(lm):.2f} px "
        f"({np.max(lm):.2f}) from the truth at {SIZE}², head rotation {np.mean(rot):.2f} deg "
        f"({np.max(rot):.2f}), fov {np.mean(fov):.1f} deg ({np.max(fov):.1f}), mouth opening "
        f"r = {np.mean(mouth):.3f} ({np.min(mouth):.3f})")


def _detect_benchmark(model):
  frames = synthetic.generate_clip(7, num_frames=_DETECT.value, resolution=SIZE,
                                   head_model=model)["frames"]
  h = _DETECT_HEIGHT.value
  if h != SIZE:
    w = h * 16 // 9
    big = np.stack([np.asarray(Image.fromarray(f).resize((h, h), Image.Resampling.BICUBIC))
                    for f in frames])
    frames = np.zeros((big.shape[0], h, w, 3), np.uint8)
    frames[:, :, (w - h) // 2:(w - h) // 2 + h] = big
  t = time.perf_counter()
  det = detector.detect(frames, video=True, count_every=12)
  wall = time.perf_counter() - t
  print(f"detection: {frames.shape[0]} frames of {frames.shape[2]}x{frames.shape[1]}, tracking "
        "mode | "
        f"{det.frames_per_second:.1f} frames/s in the worker ({wall:.1f} s with its start-up) "
        f"| a face in {det.face_found.mean():.0%} of the frames")


def main(argv):
  del argv
  model = head_lib.load_default()
  if _CLIPS.value:
    _fit_benchmark(model)
  if _DETECT.value:
    _detect_benchmark(model)


if __name__ == "__main__":
  cli.run(main)
