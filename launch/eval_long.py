r"""Drift over long videos: identity and colour per window of a long reenactment.

  python launch/eval_long.py --seconds=60 --window_seconds=10 --identities=4 --out=long.json
  python launch/eval_long.py --video=workdir/base128 --seconds=20 --identities=2

For each held-out synthetic identity it makes the true clip of --seconds (frames and
parameters), then generates the whole clip through the generation pipeline from the clip's
first frame and its true per-frame parameters (reenactment: `--driving_params` mode, so the
motion model is not involved), and reports per --window_seconds window: PSNR against the true
frames and the mean RGB colour of the head region (where the head's dense control map is drawn)
in the generated and the true frames. The drift is the last window's PSNR minus the first's
(the issue's bar: no more than 1 dB lower) and the change of the head's mean colour. It prints a
table and writes --out (JSON).
"""

import sys

from absl import flags, logging
import jax
import numpy as np

from vlogger_jax import cli
from vlogger_jax import contracts
from vlogger_jax import fileio
from vlogger_jax import render
from vlogger_jax import video_eval
from vlogger_jax.data import synthetic
from vlogger_jax.inference import errors
from vlogger_jax.inference import pipeline as pipeline_lib
from vlogger_jax.inference import reference as reference_lib
from vlogger_jax.models import video as video_lib

_VIDEO = flags.DEFINE_string("video", None, "Video stage (default: the shipped weights).")
_SECONDS = flags.DEFINE_float("seconds", 60.0, "Length of each video.")
_WINDOW = flags.DEFINE_float("window_seconds", 10.0, "Length of each scored window.")
_IDENTITIES = flags.DEFINE_integer("identities", 2, "Held-out identities (synthetic:0..N-1).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampler seed.")
_STEPS = flags.DEFINE_integer("video_steps", None, "Video sampler steps (default: the stage's).")
_OUT = flags.DEFINE_string("out", None, "Write the figures as JSON here.")


def head_masks(pipe, clip: dict) -> np.ndarray:
  """[T, S, S] bool: where the head's dense control map is drawn in each frame."""
  size = pipe.resolution
  t = clip["expression"].shape[0]
  rep = lambda a: np.broadcast_to(np.asarray(a, np.float32), (t,) + np.shape(a))
  controls = jax.jit(video_lib.frame_controls, static_argnums=(7,))(
      pipe.head_model, rep(clip["shape"]), rep(clip["fov"]), clip["expression"],
      clip["head_pose"], clip["body_keypoints"], clip["body_visibility"], size)
  dense = np.asarray(controls)[..., render.CONTROL_LAYOUT["dense"]]
  return dense.max(axis=-1) > 0


def score(pipe, index: int, frames: int, window: int, options) -> dict:
  size = pipe.resolution
  clip = synthetic.generate_clip(reference_lib.synthetic_seed(index), num_frames=frames,
                                 resolution=size)
  ref = reference_lib.Reference(
      image=clip["frames"][0], shape=clip["shape"], fov=np.float32(clip["fov"]),
      **{k: clip[k][0] for k in contracts.FRAME_KEYS}, name=f"synthetic identity {index}")
  driving = {k: clip[k] for k in ("expression", "head_pose", "body_keypoints")}
  driving_vis = clip["body_visibility"]
  params = pipe.retarget(ref, driving, 1)
  params["body_visibility"] = driving_vis[None]
  result = pipe.generate_video(ref, pipe.clip(ref, params), options)
  gen, truth = result[0], clip["frames"]
  masks = head_masks(pipe, clip)
  rows = []
  for start in range(0, frames - window + 1, window):
    sl = slice(start, start + window)
    g = gen[sl].astype(np.float32) / 127.5 - 1.0
    t = truth[sl].astype(np.float32) / 127.5 - 1.0
    m = masks[sl]
    rows.append({"start_s": start / contracts.FPS, "psnr": video_eval.psnr(g, t),
                 "head_rgb": gen[sl][m].mean(axis=0).tolist(),
                 "head_rgb_truth": truth[sl][m].mean(axis=0).tolist()})
  first, last = rows[0], rows[-1]
  colour = float(np.abs(np.subtract(last["head_rgb"], first["head_rgb"])).max())
  colour_truth = float(np.abs(np.subtract(last["head_rgb_truth"],
                                          first["head_rgb_truth"])).max())
  return {"identity": index, "windows": rows, "psnr_drift_db": last["psnr"] - first["psnr"],
          "head_colour_change": colour, "head_colour_change_truth": colour_truth}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  frames = int(round(_SECONDS.value * contracts.FPS))
  window = int(round(_WINDOW.value * contracts.FPS))
  if window < 1 or frames < window or _IDENTITIES.value < 1:
    print(f"error: --seconds {_SECONDS.value:g}, --window_seconds {_WINDOW.value:g}, "
          f"--identities {_IDENTITIES.value}; expected windows of at least one frame that fit "
          "the video and at least one identity.", file=sys.stderr)
    return 1
  try:
    pipe = pipeline_lib.Pipeline.load(None, _VIDEO.value, need_motion=False)
  except errors.InputError as e:
    return cli.report(e)
  options = pipeline_lib.Options(seed=_SEED.value, video_steps=_STEPS.value)
  out = []
  for i in range(_IDENTITIES.value):
    r = score(pipe, i, frames, window, options)
    out.append(r)
    psnrs = "  ".join(f"{w['psnr']:.2f}" for w in r["windows"])
    print(f"identity {i}: PSNR per {_WINDOW.value:g}-s window {psnrs} dB; last - first "
          f"{r['psnr_drift_db']:+.2f} dB; head colour change {r['head_colour_change']:.1f} "
          f"(truth {r['head_colour_change_truth']:.1f}) of 255")
  drift = [r["psnr_drift_db"] for r in out]
  print(f"mean drift {np.mean(drift):+.2f} dB, worst {min(drift):+.2f} dB (bar: >= -1 dB)")
  if _OUT.value:
    fileio.write_json(_OUT.value, {"seconds": _SECONDS.value, "window_seconds": _WINDOW.value,
                                   "identities": out})
  return 0


if __name__ == "__main__":
  cli.run(main)
