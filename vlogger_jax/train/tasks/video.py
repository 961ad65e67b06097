"""The control stage of the base video model (paper §3.2, Supp. C.2): ControlledVideoUNet on
N-frame windows. config.task = 'video'.

The pre-trained image model (config.pretrained: a run of tasks/image.py) is loaded weights-only
into the frozen 'unet/' subtree and copied into the control encoder; config.frozen =
FROZEN_PATTERNS freezes it, and the control copy, hint encoder, zero convolutions and temporal
layers train. Controls are rendered from the batch's parameters inside the jitted loss (targets
and reference in one render call). With probability config.context.p the first
1..config.context.max_frames frames are given clean as outpainting context (their loss is masked
out), and with probability config.guidance.p_drop the hint and reference are dropped
(cond['drop']) for classifier-free guidance.

config.pretrained: an image run's workdir or one of its checkpoints, at config.pretrained_step
when that is >= 0; 'none' for an untrained image model (benchmarks and tests). '' means "pre-train
one first", which the stage chain does (vlogger_jax/train/stages.py); this task never trains
another stage.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vlogger_jax import diffusion
from vlogger_jax import evaluators
from vlogger_jax.data import paths, pipelines
from vlogger_jax.models import loading
from vlogger_jax.models.image import to_pixels
from vlogger_jax.models.video import VideoModel
from vlogger_jax.train.tasks import frames


class VideoTask:
  """Trains a VideoModel's control copy and temporal layers around its frozen image model."""

  def __init__(self, config, model: VideoModel | None = None):
    self.config = config
    self.model = model or VideoModel(config)
    self.size, self.num_frames = self.model.size, self.model.num_frames
    if not config.pretrained:
      raise ValueError("config.pretrained is empty; expected the workdir of an image "
                       "pre-training run (configs/base128.py:pretrain) or 'none'; "
                       "launch/train.py pre-trains one first when it is empty.")
    self.image_params = None     # host arrays of the pre-trained image model, after prepare()

  def prepare(self) -> None:
    """Loads the pre-trained image model's weights (outside any trace); a network that does not
    fit the video model's frozen UNet fails in init with the parameter it lacks."""
    if self.config.pretrained == "none" or self.image_params is not None:
      return
    step = self.config.get("pretrained_step", -1)
    loaded = loading.load(self.config.pretrained, step=None if step < 0 else step,
                          expect=("image",))
    self.image_params = jax.tree.map(np.asarray, loaded.params)

  def init(self, rng):
    if self.config.pretrained != "none" and self.image_params is None:
      raise ValueError("VideoTask.init needs the pre-trained image model; call prepare() first "
                       "(the Trainer does).")
    return self.model.init(rng, self.image_params)

  def batch_spec(self, batch: int) -> dict:
    return frames.batch_spec(batch, self.num_frames, self.size)

  def example_batch(self, batch: int, seed: int = 0) -> dict:
    """A benchmark batch (frames.example_batch)."""
    return frames.example_batch(self.model.head_model, batch, self.num_frames, self.size, seed)

  def loss(self, params, batch, rng):
    x0, ref = to_pixels(batch["frames"]), to_pixels(batch["ref_frame"])
    b, n = x0.shape[:2]
    schedule = self.model.schedule
    k_t, k_eps, k_drop, k_ctx, k_len, k_dropout = jax.random.split(rng, 6)
    t = jax.random.randint(k_t, (b,), 0, schedule.num_steps)
    eps = jax.random.normal(k_eps, x0.shape, jnp.float32)
    x_t = diffusion.q_sample(schedule, x0, t, eps)
    drop = jax.random.uniform(k_drop, (b,)) < self.config.guidance.p_drop
    target = diffusion.training_target(schedule, t, x0, eps, self.model.prediction)
    controls, ref_controls = self.model.controls(batch)
    ctx = self.config.context
    length = jax.random.randint(k_len, (b,), 1, max(min(ctx.max_frames, n - 1), 1) + 1)
    use = jax.random.uniform(k_ctx, (b,)) < ctx.p
    context_mask = ((jnp.arange(n)[None] < length[:, None]) & use[:, None]).astype(jnp.float32)
    cond = {"ref": ref, "ref_controls": ref_controls, "controls": controls, "context": x0,
            "context_mask": context_mask, "drop": drop}
    pred = self.model.apply(params, x_t, t, cond, rng=k_dropout)
    # Context frames are given, not generated: the sampler never uses their prediction.
    loss = diffusion.masked_mse(pred, target, mask=(1.0 - context_mask)[..., None, None, None])
    return loss, {"loss": loss, "context_frames": jnp.mean(jnp.sum(context_mask, axis=1))}

  def data_iterator(self, process_index: int, process_count: int, local_batch: int):
    d = self.config.data
    return pipelines.video_pipeline(paths.dataset_dir(self.config.data), "train", local_batch,
                                    self.config.seed, process_index, process_count,
                                    resolution=self.size, num_frames=self.num_frames,
                                    num_workers=d.num_workers,
                                    min_ref_distance=d.min_ref_distance)

  @functools.cached_property
  def _eval_batch(self) -> dict:
    # Held-out identities: the test split; the same clips and windows at every evaluation.
    e, d = self.config.evaluation, self.config.data
    it = pipelines.video_pipeline(paths.dataset_dir(self.config.data), "test", e.num_clips, seed=0,
                                  resolution=self.size, num_frames=self.num_frames,
                                  min_ref_distance=d.min_ref_distance)
    return next(it)

  def evaluate(self, params, rng) -> dict:
    """Reenactment of held-out clips with their true controls: PSNR and L1 of the generated
    window against the true frames, beside repeating the reference frame."""
    e = self.config.evaluation
    if not e.num_clips:
      return {}
    batch = self._eval_batch
    cfg = self.model.sampler_config(sampler=e.sampler, num_steps=e.num_steps, eta=e.eta)
    out = evaluators.reenact(self.model, params, batch, rng, cfg)
    scores = evaluators.reenactment_scores(out, batch)
    return {"eval/psnr": float(np.mean(scores["psnr"])), "eval/l1": float(np.mean(scores["l1"])),
            "eval/psnr_repeat_ref": float(np.mean(scores["repeat_psnr"]))}
