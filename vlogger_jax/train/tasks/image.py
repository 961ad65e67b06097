"""Image pre-training of the base video model's frozen image UNet (paper §3.2): ε-, x0- or
v-prediction on single frames, with a reference frame of the same clip as the identity input
(dropped with probability config.guidance.p_drop for classifier-free guidance). No Imagen
weights are public, so this project makes its own; the control stage (tasks/video.py) loads
them. config.task = 'image'.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vlogger_jax import diffusion
from vlogger_jax import head as head_lib
from vlogger_jax.data import paths, pipelines
from vlogger_jax.models.image import ImageModel, to_pixels
from vlogger_jax.train.tasks import frames


class ImageTask:
  """Trains an ImageModel on (frame, reference frame) pairs of the talking-human dataset."""

  def __init__(self, config, model: ImageModel | None = None):
    self.config = config
    self.model = model or ImageModel(config)
    self.size = self.model.size

  def init(self, rng):
    return self.model.init(rng)

  def batch_spec(self, batch: int) -> dict:
    return frames.batch_spec(batch, 1, self.size)

  def example_batch(self, batch: int, seed: int = 0) -> dict:
    """A benchmark batch (frames.example_batch)."""
    return frames.example_batch(head_lib.load_default(), batch, 1, self.size, seed)

  def loss(self, params, batch, rng):
    x0, ref = to_pixels(batch["frames"]), to_pixels(batch["ref_frame"])
    b = x0.shape[0]
    k_t, k_eps, k_drop, _, _, k_dropout = jax.random.split(rng, 6)
    schedule = self.model.schedule
    t = jax.random.randint(k_t, (b,), 0, schedule.num_steps)
    eps = jax.random.normal(k_eps, x0.shape, jnp.float32)
    x_t = diffusion.q_sample(schedule, x0, t, eps)
    drop = jax.random.uniform(k_drop, (b,)) < self.config.guidance.p_drop
    target = diffusion.training_target(schedule, t, x0, eps, self.model.prediction)
    ref = ref * (1.0 - drop.astype(jnp.float32))[:, None, None, None]
    pred = self.model.apply(params, x_t, t, ref, rng=k_dropout)
    loss = diffusion.masked_mse(pred, target)
    return loss, {"loss": loss}

  def data_iterator(self, process_index: int, process_count: int, local_batch: int):
    d = self.config.data
    return pipelines.image_pipeline(paths.dataset_dir(self.config.data), "train", local_batch,
                                    self.config.seed, process_index, process_count,
                                    resolution=self.size, num_workers=d.num_workers,
                                    min_ref_distance=d.min_ref_distance,
                                    samples_per_clip=d.get("samples_per_clip", 1))
