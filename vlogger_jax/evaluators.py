"""Held-out evaluation of trained models: the one home of the evaluators that training's periodic
evaluation and launch/eval_*.py share.

- `motion_scores`: audio -> motion on held-out clips, through the head model (motion_eval.py):
  mouth-opening correlation, lip error (LME), vertex jitter beside the truth's, diversity, the
  mouth's opening range beside the truth's and (given the phonemes) bilabial closure.
- `reenact` and `reenactment_scores`: the video model regenerates held-out clips from their
  reference frame and true motion parameters; PSNR/SSIM/L1 against the true frames beside the
  baseline of repeating the reference, pixel jitter, and the jump at window seams
  (video_eval.py, docs/video_eval.md).
- `super_resolve` and `sr_scores`: a super-resolution stage restores held-out frames from their
  box-filtered low-resolution versions; PSNR/SSIM/L1, jitter and seams beside bicubic.

The callers bring the held-out data (records or a batch of the data pipelines); nothing here reads
datasets or checkpoints.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import jax
import numpy as np

from vlogger_jax import contracts
from vlogger_jax import head as head_lib
from vlogger_jax import motion_eval
from vlogger_jax import video_eval
from vlogger_jax import windowed_sampler
from vlogger_jax.models import sr as sr_lib
from vlogger_jax.models.image import to_pixels


def per_clip_keys(key: jax.Array, num: int) -> jax.Array:
  """Keys [num, 2] with clip i's key fold_in(key, i): a clip's sample does not depend on how
  many clips are evaluated with it."""
  return windowed_sampler.example_keys(key, num)


def motion_scores(model, params, records: Iterable[dict | None], key: jax.Array,
                  num_samples: int = 2, bilabials: Sequence | None = None,
                  **sampler_overrides) -> dict:
  """Motion metrics (eval/...) averaged over held-out clip records (unreadable ones are None and
  skipped): each record needs mel [T, 256], shape, expression, head_pose, body_keypoints.

  The mouth's opening range (95th percentile, mm) is reported for the generated and the true
  motion, and their ratio (mean over clips of each, generated / true). bilabials: per record, the
  (start_s, end_s) of its /p b m/ (the caller knows the phonemes; records do not hold them); with
  them, the share of bilabials whose generated (and true) lips close.
  """
  head_model = head_lib.load_default()
  cfg = model.sampler_config(**sampler_overrides)
  rows = []
  for i, rec in enumerate(records):
    if rec is None:
      continue
    mel = np.asarray(rec["mel"], np.float32)
    keys = windowed_sampler.batch_keys(jax.random.fold_in(key, i), num_samples)
    motion = np.asarray(model.jitted_generate(params, np.broadcast_to(mel, (num_samples,) +
                                                                     mel.shape), keys, cfg))
    expr_true = np.asarray(rec["expression"], np.float32)
    pose_true = np.asarray(rec["head_pose"], np.float32)
    kp_true = np.asarray(rec["body_keypoints"], np.float32)
    shape = np.asarray(rec["shape"], np.float32)
    preds = [model.to_parameters(params, m, pose_true[0], kp_true[0]) for m in motion]
    expr, pose, _ = preds[0]
    open_true = motion_eval.mouth_opening(head_model, shape, expr_true)
    open_pred = motion_eval.mouth_opening(head_model, shape, expr)
    row = {
        "mouth_corr": motion_eval.pearson(open_pred, open_true),
        "lme_mm": motion_eval.lip_error(head_model, shape, expr, expr_true),
        "jitter": motion_eval.jitter(head_model, shape, expr, pose),
        "jitter_true": motion_eval.jitter(head_model, shape, expr_true, pose_true),
        "diversity": motion_eval.diversity(np.stack([p[0] for p in preds])),
        "opening_p95_mm": motion_eval.opening_range(open_pred),
        "opening_p95_true_mm": motion_eval.opening_range(open_true),
    }
    if bilabials is not None:
      row["bilabial_closure"] = motion_eval.bilabial_closure(open_pred, bilabials[i])
      row["bilabial_closure_true"] = motion_eval.bilabial_closure(open_true, bilabials[i])
    rows.append(row)
  if not rows:
    return {}
  # nanmean: a clip without bilabials has no closure share.
  out = {f"eval/{k}": float(np.nanmean([r[k] for r in rows])) for k in rows[0]}
  out["eval/opening_range_ratio"] = out["eval/opening_p95_mm"] / max(
      out["eval/opening_p95_true_mm"], 1e-9)
  return out


def reenact(model, params, batch: dict, key: jax.Array,
            cfg: windowed_sampler.SamplerConfig) -> np.ndarray:
  """Frames [B, T, S, S, 3] in [-1, 1] generated for a video batch (the data pipelines' layout)
  from each clip's reference frame and true motion parameters; clip i uses fold_in(key, i)."""
  clip = {k: np.asarray(batch[k], np.float32) for k in contracts.CLIP_KEYS}
  ref = np.asarray(to_pixels(batch["ref_frame"]))
  keys = per_clip_keys(key, ref.shape[0])
  return np.asarray(model.jitted_generate(params, ref, clip, keys, cfg))


def reenactment_scores(generated: np.ndarray, batch: dict,
                       starts: np.ndarray | None = None, window: int | None = None) -> dict:
  """Per-clip lists {metric: [B floats]} of generated frames [B, T, S, S, 3] against the batch's
  true frames: psnr, ssim, l1, pixel_jitter, and with the windows' `starts` the seam jump of the
  generation and of the truth; plus the repeat-the-reference baseline (repeat_psnr, ...) and
  the truth's own jitter (truth_jitter). Undefined values are NaN."""
  truth = np.asarray(to_pixels(batch["frames"]))
  ref = np.asarray(to_pixels(batch["ref_frame"]))
  out: dict[str, list] = {}
  add = lambda name, value: out.setdefault(name, []).append(float(value))  # noqa: E731
  for g, t, r in zip(np.asarray(generated), truth, ref):
    repeat = np.broadcast_to(r, t.shape)
    for name, fn in (("psnr", video_eval.psnr), ("ssim", video_eval.ssim),
                     ("l1", video_eval.l1)):
      add(name, fn(g, t))
      add(f"repeat_{name}", fn(repeat, t))
    add("pixel_jitter", video_eval.pixel_jitter(g))
    add("truth_jitter", video_eval.pixel_jitter(t))
    if starts is not None:
      add("boundary_jump", video_eval.boundary_jump(g, starts, window))
      add("boundary_jump_truth", video_eval.boundary_jump(t, starts, window))
  return out


def window_starts(model, num_frames: int, overlap: int) -> np.ndarray:
  """The first frame of each generation window of `num_frames` frames (for the seam metrics)."""
  return windowed_sampler.window_starts(num_frames, model.num_frames, overlap)


def super_resolve(model, params, batch: dict, key: jax.Array,
                  cfg: windowed_sampler.SamplerConfig, aug_level: float | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(SR frames, bicubic frames), each [B, T, S, S, 3] in [-1, 1], of a super-resolution model
  (vlogger_jax/models/sr.py) from the true frames of a batch (the data pipelines' layout)
  box-filtered down to its input size, with their true controls; clip i uses fold_in(key, i).
  `aug_level`: the input's augmentation level (default: the model's config.sampling)."""
  truth = to_pixels(np.asarray(batch["frames"]))
  low = sr_lib.downsample(truth, model.factor)
  clip = {k: np.asarray(batch[k], np.float32) for k in ("shape", "fov") + contracts.FRAME_KEYS}
  keys = per_clip_keys(key, truth.shape[0])
  out = np.asarray(model.jitted_generate(params, low, clip, keys, cfg, aug_level=aug_level))
  bicubic = np.clip(np.asarray(sr_lib.upsample(low, truth.shape[2])), -1.0, 1.0)
  return out, bicubic


def sr_scores(generated: np.ndarray, bicubic: np.ndarray, truth: np.ndarray,
              starts: np.ndarray | None = None, window: int | None = None) -> dict:
  """Per-clip lists {metric: [B floats]} of super-resolved frames [B, T, S, S, 3] against the
  true frames, all in [-1, 1]: psnr, ssim, l1, pixel_jitter (and with the
  windows' `starts` the seam jump), each beside bicubic upsampling (bicubic_psnr, ...)."""
  out: dict[str, list] = {}
  add = lambda name, value: out.setdefault(name, []).append(float(value))  # noqa: E731
  for g, c, t in zip(np.asarray(generated), np.asarray(bicubic), np.asarray(truth)):
    for name, fn in (("psnr", video_eval.psnr), ("ssim", video_eval.ssim),
                     ("l1", video_eval.l1)):
      add(name, fn(g, t))
      add(f"bicubic_{name}", fn(c, t))
    add("pixel_jitter", video_eval.pixel_jitter(g))
    add("bicubic_pixel_jitter", video_eval.pixel_jitter(c))
    if starts is not None:
      add("boundary_jump", video_eval.boundary_jump(g, starts, window))
      add("bicubic_boundary_jump", video_eval.boundary_jump(c, starts, window))
  return out
