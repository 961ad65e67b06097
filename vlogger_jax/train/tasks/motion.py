"""Audio-to-motion training (paper §3.1, Supp. A.2, C.1) of the causal transformer, x0-prediction.

Loss: L_diff (masked MSE of the parameterisation's target) + lambda_temp * L_temp, L_temp on the
implied x0 over consecutive frames with one weight per motion part (config.loss.temporal_weights),
so the head can be held smoother than the expression. Audio is dropped with probability
config.guidance.p_drop for classifier-free guidance; a random clean prefix of the window is given
as context with probability config.context.p so that long audio can be generated window by window.
The paper's ablations (Table 2) are config switches: diffusion.prediction='eps',
loss.lambda_temp=0, guidance.p_drop=0 with guidance.weight=1, data.absolute=True.
config.task = 'motion'.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vlogger_jax import contracts
from vlogger_jax import diffusion
from vlogger_jax import evaluators
from vlogger_jax import motion as motion_lib
from vlogger_jax.data import motion_bank, paths, pipelines
from vlogger_jax.models.motion import MotionModel


def part_weights(weights: dict) -> np.ndarray:
  """A [223] vector holding each part's weight over its dimensions."""
  w = np.zeros(contracts.MOTION_DIM, np.float32)
  for name, sl in motion_lib.PARTS.items():
    w[sl] = weights[name]
  return w


class MotionTask:
  """Trains a MotionModel on motion windows from the talking-human dataset."""

  def __init__(self, config, model: MotionModel | None = None):
    self.config = config
    self.model = model or MotionModel(config)
    self.window = self.model.window
    self.temporal_weights = part_weights(config.loss.temporal_weights)
    self._stats = None
    self._dataset = None

  # --- data ---

  def prepare(self) -> None:
    """Builds or opens the dataset and loads its statistics, outside any trace."""
    _ = self.stats

  def dataset(self) -> str:
    """The dataset folder (the synthetic one is built on first use)."""
    if self._dataset is None:
      self._dataset = paths.dataset_dir(self.config.data)
    return self._dataset

  @property
  def stats(self) -> motion_lib.Stats:
    """The dataset's motion statistics (saved beside it), unless set explicitly."""
    if self._stats is None:
      records = pipelines.open_records(self.dataset(), "train")
      self._stats = pipelines.load_stats(None, records, self.config.data.absolute)
    return self._stats

  @stats.setter
  def stats(self, value: motion_lib.Stats):
    self._stats = value

  def data_iterator(self, process_index: int, process_count: int, local_batch: int):
    d = self.config.data
    if d.get("in_memory", False):
      return motion_bank.motion_batches(
          self.dataset(), "train", local_batch, self.config.seed, process_index, process_count,
          stats=self.stats, min_frames=d.min_frames, max_frames=d.max_frames,
          absolute=d.absolute)
    return pipelines.motion_pipeline(
        self.dataset(), "train", local_batch, self.config.seed, process_index, process_count,
        stats=self.stats, num_workers=d.num_workers, min_frames=d.min_frames,
        max_frames=d.max_frames, absolute=d.absolute)

  # --- training ---

  def init(self, rng):
    """The model's parameters with the dataset's statistics (frozen, saved with them)."""
    return self.model.init(rng, self.stats)

  def batch_spec(self, batch: int) -> dict:
    w, f32 = self.window, jnp.float32
    return {"mel": (jax.ShapeDtypeStruct((batch, w, contracts.MEL_BINS), f32),
                    ("batch", None, None)),
            "motion": (jax.ShapeDtypeStruct((batch, w, contracts.MOTION_DIM), f32),
                       ("batch", None, None)),
            "mask": (jax.ShapeDtypeStruct((batch, w), f32), ("batch", None))}

  def loss(self, params, batch, rng):
    x0, mel, mask = batch["motion"], batch["mel"], batch["mask"]
    b, w, _ = x0.shape
    schedule = self.model.schedule
    k_t, k_eps, k_drop, k_ctx, k_len, k_dropout = jax.random.split(rng, 6)
    t = jax.random.randint(k_t, (b,), 0, schedule.num_steps)
    eps = jax.random.normal(k_eps, x0.shape, jnp.float32)
    x_t = diffusion.q_sample(schedule, x0, t, eps)
    keep = (jax.random.uniform(k_drop, (b,)) >= self.config.guidance.p_drop).astype(jnp.float32)
    max_ctx = max(int(self.config.context.max_fraction * w), 1)
    ctx_len = jax.random.randint(k_len, (b,), 1, max_ctx + 1)
    use_ctx = jax.random.uniform(k_ctx, (b,)) < self.config.context.p
    ctx_mask = ((jnp.arange(w)[None] < ctx_len[:, None]) & use_ctx[:, None]).astype(jnp.float32)
    ctx_mask = ctx_mask * mask
    pred = self.model.apply(params, x_t, t, mel, mask, context=x0, context_mask=ctx_mask,
                            audio_keep=keep, rng=k_dropout)
    target = diffusion.training_target(schedule, t, x0, eps, self.model.prediction)
    gen_mask = (mask * (1 - ctx_mask))[..., None]
    l_diff = diffusion.masked_mse(pred, target, mask=gen_mask)
    x0_hat, _ = diffusion.to_x0_eps(schedule, x_t, t, pred, self.model.prediction)
    # Context frames are given exactly, so the temporal loss sees the sequence the sampler builds.
    x0_hat = jnp.where(ctx_mask[..., None] > 0, x0, x0_hat)
    velocity_target = x0 if self.config.loss.temporal_mode == "velocity" else None
    l_temp = diffusion.temporal_difference_loss(x0_hat, target=velocity_target,
                                                weights=self.temporal_weights, mask=mask)
    loss = l_diff + self.config.loss.lambda_temp * l_temp
    return loss, {"loss": loss, "l_diff": l_diff, "l_temp": l_temp}

  # --- evaluation on held-out clips ---

  def evaluate(self, params, rng, split: str = "test", num_clips: int | None = None,
               num_samples: int = 2, **sampler_overrides) -> dict:
    """Motion metrics on held-out clips (evaluators.motion_scores), averaged over clips."""
    records = pipelines.open_records(self.dataset(), split)
    n = min(num_clips or self.config.data.num_eval_clips, len(records))
    return evaluators.motion_scores(self.model, params, (records[i] for i in range(n)), rng,
                                    num_samples=num_samples, **sampler_overrides)
