"""Audio-to-motion diffusion (paper §3.1, Supp. A.2, C.1): the causal transformer predicts x0.

Loss: L_diff (masked MSE of the parameterisation's target) + lambda_temp * L_temp, L_temp on the
implied x0 over consecutive frames with one weight per motion part (config.loss.temporal_weights),
so the head can be held smoother than the expression. Audio is dropped with probability
config.guidance.p_drop for classifier-free guidance; a random clean prefix of the window is given
as context with probability config.context.p so that long audio can be generated window by window.
The paper's ablations (Table 2) are config switches: diffusion.prediction='eps',
loss.lambda_temp=0, guidance.p_drop=0 with guidance.weight=1, data.absolute=True.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vlogger_jax import diffusion
from vlogger_jax import motion as motion_lib
from vlogger_jax import motion_sampler
from vlogger_jax.nn.motion_transformer import N_MELS, MotionTransformer


def part_weights(weights: dict) -> np.ndarray:
  """A [223] vector holding each part's weight over its dimensions."""
  w = np.zeros(motion_lib.MOTION_DIM, np.float32)
  for name, sl in motion_lib.PARTS.items():
    w[sl] = weights[name]
  return w


class MotionTask:
  """Trains MotionTransformer on motion windows from the talking-human dataset."""

  def __init__(self, config):
    self.config = config
    self.schedule = diffusion.make_schedule(config.diffusion.num_steps, config.diffusion.schedule)
    self.prediction = config.diffusion.prediction
    m = config.model
    self.model = MotionTransformer(width=m.width, depth=m.depth, heads=m.heads,
                                   time_dim=m.time_dim, dropout=m.dropout,
                                   dtype=jnp.dtype(config.precision.compute_dtype),
                                   param_dtype=jnp.dtype(config.precision.param_dtype))
    self.window = config.data.max_frames
    self.temporal_weights = part_weights(config.loss.temporal_weights)
    self._stats = None
    self._dataset = None

  # --- data ---

  def prepare(self) -> None:
    """Builds or opens the dataset and loads its statistics, outside any trace."""
    _ = self.stats  # the property opens (or builds) the dataset and caches the statistics

  def dataset(self) -> str:
    """The dataset folder (the synthetic one is built on first use)."""
    if self._dataset is None:
      from vlogger_jax.data import builders  # pylint: disable=g-import-not-at-top
      self._dataset = builders.dataset_dir(self.config.data)
    return self._dataset

  @property
  def stats(self) -> motion_lib.Stats:
    """The dataset's motion statistics (saved beside it), unless set explicitly."""
    if self._stats is None:
      from vlogger_jax.data import pipelines  # pylint: disable=g-import-not-at-top
      records = pipelines.open_records(self.dataset(), "train")
      self._stats = pipelines.load_stats(None, records, self.config.data.absolute)
    return self._stats

  @stats.setter
  def stats(self, value: motion_lib.Stats):
    self._stats = value

  def data_iterator(self, process_index: int, process_count: int, local_batch: int):
    from vlogger_jax.data import pipelines  # pylint: disable=g-import-not-at-top
    d = self.config.data
    if d.get("in_memory", False):
      from vlogger_jax.data import motion_bank  # pylint: disable=g-import-not-at-top
      return motion_bank.motion_batches(
          self.dataset(), "train", local_batch, self.config.seed, process_index, process_count,
          stats=self.stats, min_frames=d.min_frames, max_frames=d.max_frames,
          absolute=d.absolute)
    return pipelines.motion_pipeline(
        self.dataset(), "train", local_batch, self.config.seed, process_index, process_count,
        stats=self.stats, num_workers=d.num_workers, min_frames=d.min_frames,
        max_frames=d.max_frames, absolute=d.absolute)

  # --- model ---

  def init(self, rng):
    """{'model': network parameters, 'stats': the normalisation (frozen, saved with them)}."""
    w = self.window
    net = self.model.init(rng, jnp.zeros((1, w, motion_lib.MOTION_DIM)),
                          jnp.zeros((1,), jnp.int32), jnp.zeros((1, w, N_MELS)),
                          jnp.ones((1, w)))["params"]
    stats = {"mean": jnp.asarray(self.stats.mean), "std": jnp.asarray(self.stats.std)}
    return {"model": net, "stats": stats}

  def apply(self, params, x_t, t, mel, mask, context=None, context_mask=None, audio_keep=None,
            rngs=None):
    """The denoiser: prediction [B, W, 223] in the configured parameterisation."""
    return self.model.apply({"params": params["model"]}, x_t, t, mel, mask, context=context,
                            context_mask=context_mask, audio_keep=audio_keep,
                            deterministic=rngs is None, rngs=rngs)

  def batch_spec(self, batch: int) -> dict:
    w = self.window
    f32 = jnp.float32
    return {"mel": (jax.ShapeDtypeStruct((batch, w, N_MELS), f32), ("batch", None, None)),
            "motion": (jax.ShapeDtypeStruct((batch, w, motion_lib.MOTION_DIM), f32),
                       ("batch", None, None)),
            "mask": (jax.ShapeDtypeStruct((batch, w), f32), ("batch", None))}

  def loss(self, params, batch, rng):
    x0, mel, mask = batch["motion"], batch["mel"], batch["mask"]
    b, w, _ = x0.shape
    k_t, k_eps, k_drop, k_ctx, k_len, k_dropout = jax.random.split(rng, 6)
    t = jax.random.randint(k_t, (b,), 0, self.schedule.num_steps)
    eps = jax.random.normal(k_eps, x0.shape, jnp.float32)
    x_t = diffusion.q_sample(self.schedule, x0, t, eps)
    keep = (jax.random.uniform(k_drop, (b,)) >= self.config.guidance.p_drop).astype(jnp.float32)
    max_ctx = max(int(self.config.context.max_fraction * w), 1)
    ctx_len = jax.random.randint(k_len, (b,), 1, max_ctx + 1)
    use_ctx = jax.random.uniform(k_ctx, (b,)) < self.config.context.p
    ctx_mask = ((jnp.arange(w)[None] < ctx_len[:, None]) & use_ctx[:, None]).astype(jnp.float32)
    ctx_mask = ctx_mask * mask
    pred = self.apply(params, x_t, t, mel, mask, context=x0, context_mask=ctx_mask,
                      audio_keep=keep, rngs={"dropout": k_dropout})
    target = diffusion.training_target(self.schedule, t, x0, eps, self.prediction)
    gen_mask = (mask * (1 - ctx_mask))[..., None]
    l_diff = diffusion.masked_mse(pred, target, mask=gen_mask)
    x0_hat, _ = diffusion.to_x0_eps(self.schedule, x_t, t, pred, self.prediction)
    # Context frames are given exactly, so the temporal loss sees the sequence the sampler builds.
    x0_hat = jnp.where(ctx_mask[..., None] > 0, x0, x0_hat)
    velocity_target = x0 if self.config.loss.temporal_mode == "velocity" else None
    l_temp = diffusion.temporal_difference_loss(x0_hat, target=velocity_target,
                                                weights=self.temporal_weights, mask=mask)
    loss = l_diff + self.config.loss.lambda_temp * l_temp
    return loss, {"loss": loss, "l_diff": l_diff, "l_temp": l_temp}

  # --- sampling ---

  def sampler_config(self, **overrides) -> motion_sampler.SamplerConfig:
    s = self.config.sampling
    kw = dict(window=self.window, overlap=s.overlap, sampler=s.sampler, num_steps=s.num_steps,
              guidance=s.guidance, prediction=self.prediction)
    kw.update(overrides)
    return motion_sampler.SamplerConfig(**kw)

  def generate(self, params, mel, key, num_samples: int = 1, **overrides):
    """Normalised motion [num_samples, T, 223] for mel [T, 256]; jit this (cfg is static)."""
    cfg = self.sampler_config(**overrides)
    apply = lambda p, *a: self.apply(p, *a)
    return motion_sampler.generate(apply, params, self.schedule, mel, key, cfg, num_samples)

  # --- evaluation on held-out clips ---

  def evaluate(self, params, rng, split: str = "test", num_clips: int | None = None,
               num_samples: int = 2, **sampler_overrides) -> dict:
    """Motion metrics on held-out clips (vlogger_jax/motion_eval.py), averaged over clips."""
    from vlogger_jax import head as head_lib  # pylint: disable=g-import-not-at-top
    from vlogger_jax import motion_eval  # pylint: disable=g-import-not-at-top
    from vlogger_jax.data import pipelines  # pylint: disable=g-import-not-at-top

    records = pipelines.open_records(self.dataset(), split)
    model = head_lib.load_default()
    stats = motion_lib.Stats(np.asarray(params["stats"]["mean"]), np.asarray(params["stats"]["std"]))
    key = tuple(sorted(sampler_overrides.items())) + (num_samples,)
    cache = self.__dict__.setdefault("_generate_jit", {})
    if key not in cache:
      cache[key] = jax.jit(lambda p, m, k: self.generate(p, m, k, num_samples,
                                                         **sampler_overrides))
    gen = cache[key]
    absolute = self.config.data.absolute
    rows = []
    n = min(num_clips or self.config.data.num_eval_clips, len(records))
    for i in range(n):
      rec = records[i]
      if rec is None:
        continue
      mel = jnp.asarray(np.asarray(rec["mel"], np.float32))
      motion = np.asarray(gen(params, mel, jax.random.fold_in(rng, i)))
      expr_true = np.asarray(rec["expression"], np.float32)
      pose_true = np.asarray(rec["head_pose"], np.float32)
      kp_true = np.asarray(rec["body_keypoints"], np.float32)
      shape = np.asarray(rec["shape"], np.float32)
      preds = [motion_lib.unpack(stats.denormalize(m), pose_true[0], kp_true[0], absolute)
               for m in motion]
      expr, pose, _ = preds[0]
      open_true = motion_eval.mouth_opening(model, shape, expr_true)
      rows.append({
          "mouth_corr": motion_eval.pearson(motion_eval.mouth_opening(model, shape, expr),
                                            open_true),
          "lme_mm": motion_eval.lip_error(model, shape, expr, expr_true),
          "jitter": motion_eval.jitter(model, shape, expr, pose),
          "jitter_true": motion_eval.jitter(model, shape, expr_true, pose_true),
          "diversity": motion_eval.diversity(np.stack([p[0] for p in preds])),
      })
    return {f"eval/{k}": float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}
