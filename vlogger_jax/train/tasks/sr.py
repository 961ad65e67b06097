"""A super-resolution stage (paper §3.2, Supp. C.2): the Efficient U-Net of
vlogger_jax/models/sr.py on N-frame windows at its output resolution. config.task = 'sr'.

The low-resolution input is made from the true frames on the device, inside the step: box-filtered
down to config.sr.low_resolution, upsampled bicubically, and corrupted by the noise-conditioning
augmentation at a level u ~ U[0, config.sr.train_aug_max) per example, which the network is told.
The controls are rendered at the output resolution from the batch's parameters. With probability
config.context.p the first 1..config.context.max_frames frames are given clean as outpainting
context (their loss is masked out), as in the base model, so that long videos continue window
after window. With config.data.crop > 0 the loss sees a random crop of that size of every window
(the same crop for its frames, its low-resolution input and its controls), which is how a
paper-size model fits a large batch at 512²; generation always runs on full frames (the network
is convolutional; its self-attention, where it has any, then sees the whole frame).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vlogger_jax import contracts
from vlogger_jax import diffusion
from vlogger_jax import evaluators
from vlogger_jax.data import paths, pipelines
from vlogger_jax.models.image import to_pixels
from vlogger_jax.models import sr as sr_lib
from vlogger_jax.models.sr import SRModel
from vlogger_jax.train.tasks import frames

BATCH_KEYS = ("frames", "shape", "fov") + contracts.FRAME_KEYS


def _crop(x: jax.Array, top: jax.Array, left: jax.Array, size: int) -> jax.Array:
  """x [B, T, S, S, C] -> [B, T, size, size, C] at per-example offsets top, left [B]."""
  one = lambda v, i, j: jax.lax.dynamic_slice(v, (0, i, j, 0), (v.shape[0], size, size,
                                                                v.shape[-1]))
  return jax.vmap(one)(x, top, left)


class SRTask:
  """Trains an SRModel on windows of consecutive frames and their parameters."""

  def __init__(self, config, model: SRModel | None = None):
    self.config = config
    self.model = model or SRModel(config)
    self.size, self.num_frames = self.model.size, self.model.num_frames
    crop = config.data.get("crop", 0)
    div = 2 ** (len(self.model.network.channel_mult) - 1)
    if crop and (crop > self.size or crop % div):
      raise ValueError(f"config.data.crop is {crop}; expected 0 (full frames) or a size up to "
                       f"{self.size} divisible by {div} (the network's levels).")
    self.crop = crop

  def init(self, rng):
    return self.model.init(rng, self.crop or None)

  def batch_spec(self, batch: int) -> dict:
    spec = frames.batch_spec(batch, self.num_frames, self.size)
    return {k: spec[k] for k in BATCH_KEYS}

  def example_batch(self, batch: int, seed: int = 0) -> dict:
    """A benchmark batch (frames.example_batch)."""
    b = frames.example_batch(self.model.head_model, batch, self.num_frames, self.size, seed)
    return {k: b[k] for k in BATCH_KEYS}

  def loss(self, params, batch, rng):
    model, cfg = self.model, self.config
    x0 = to_pixels(batch["frames"])
    b, n = x0.shape[:2]
    schedule = model.schedule
    k_t, k_eps, k_aug, k_aug_eps, k_ctx, k_len, k_crop, k_dropout = jax.random.split(rng, 8)
    level = jax.random.uniform(k_aug, (b,), maxval=cfg.sr.train_aug_max)
    base = model.base_input(sr_lib.downsample(x0, model.factor))
    low = sr_lib.augment(base, level, jax.random.normal(k_aug_eps, x0.shape, jnp.float32))
    controls = model.controls(batch)
    if self.crop:
      top, left = (jax.random.randint(k, (b,), 0, self.size - self.crop + 1)
                   for k in jax.random.split(k_crop))
      x0, low, base, controls = (_crop(v, top, left, self.crop)
                                 for v in (x0, low, base, controls))
    t = jax.random.randint(k_t, (b,), 0, schedule.num_steps)
    eps = jax.random.normal(k_eps, x0.shape, jnp.float32)
    x_t = diffusion.q_sample(schedule, x0, t, eps)
    target = diffusion.training_target(schedule, t, x0, eps, model.prediction)
    ctx = cfg.context
    length = jax.random.randint(k_len, (b,), 1, max(min(ctx.max_frames, n - 1), 1) + 1)
    use = jax.random.uniform(k_ctx, (b,)) < ctx.p
    context_mask = ((jnp.arange(n)[None] < length[:, None]) & use[:, None]).astype(jnp.float32)
    cond = {"low": low, "base": base, "aug_level": level, "controls": controls, "context": x0,
            "context_mask": context_mask}
    pred = model.apply(params, x_t, t, cond, rng=k_dropout)
    loss = diffusion.masked_mse(pred, target, mask=(1.0 - context_mask)[..., None, None, None])
    return loss, {"loss": loss, "context_frames": jnp.mean(jnp.sum(context_mask, axis=1))}

  def data_iterator(self, process_index: int, process_count: int, local_batch: int):
    d = self.config.data
    return pipelines.frames_pipeline(paths.dataset_dir(d), "train", local_batch,
                                     self.config.seed, process_index, process_count,
                                     resolution=self.size, num_frames=self.num_frames,
                                     num_workers=d.num_workers)

  @functools.cached_property
  def _eval_batch(self) -> dict:
    # Held-out identities: the test split; the same clips and windows at every evaluation.
    e = self.config.evaluation
    it = pipelines.frames_pipeline(paths.dataset_dir(self.config.data), "test", e.num_clips,
                                   seed=0, resolution=self.size, num_frames=self.num_frames)
    return next(it)

  def evaluate(self, params, rng) -> dict:
    """Held-out windows restored from their box-filtered low-resolution frames: PSNR and SSIM
    against the true frames, beside bicubic upsampling."""
    e = self.config.evaluation
    if not e.num_clips:
      return {}
    batch = self._eval_batch
    cfg = self.model.sampler_config(sampler=e.sampler, num_steps=e.num_steps, eta=e.eta)
    out, bicubic = evaluators.super_resolve(self.model, params, batch, rng, cfg)
    scores = evaluators.sr_scores(out, bicubic, to_pixels(np.asarray(batch["frames"])))
    return {f"eval/{k}": float(np.mean(scores[k]))
            for k in ("psnr", "bicubic_psnr", "ssim", "bicubic_ssim")}
