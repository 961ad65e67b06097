"""The base video model at 128² (paper §3.2, Supp. C.2) in two stages chosen by config.stage.

'pretrain': the image UNet learns ε-prediction on single frames with a reference frame of the same
  clip as its identity input (no Imagen weights are public, so this project makes its own).
'control': ControlledVideoUNet on N-frame windows: the pre-trained image model is loaded from
  config.pretrained into the frozen 'unet/' subtree (and copied into the control encoder), frozen
  by config.frozen = FROZEN_PATTERNS, and the control copy, hint encoder, zero convolutions and
  temporal layers train. Controls are rendered from the batch's parameters inside the jitted loss
  (targets and reference in one render call). With probability config.context.p the first
  1..config.context.max_frames frames are given clean as outpainting context (their loss is
  masked out), and with probability config.guidance.p_drop the hint and reference are dropped
  (cond['drop']) for classifier-free guidance.

config.pretrained: a pretrain workdir or one of its checkpoints (<workdir>/checkpoints/<step>);
'none' for an untrained image model (benchmarks and tests); '' means "pre-train one first":
`VideoTask.prepare_run(config, workdir)` trains config.pretrain_stage in <workdir>/pretrain
(resuming it if interrupted) and returns the config pointing there; loop.train calls it before it
builds the Trainer, so `launch/train.py --config=configs/base128.py:tiny` runs from nothing.
"""

from __future__ import annotations

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vlogger_jax import diffusion
from vlogger_jax import head as head_lib
from vlogger_jax import render
from vlogger_jax import video_eval
from vlogger_jax import video_sampler
from vlogger_jax.nn import layers
from vlogger_jax.nn import unet as unet_lib

STAGES = ("pretrain", "control")
PRETRAIN_SUBDIR = "pretrain"


def to_pixels(frames: jax.Array) -> jax.Array:
  """uint8 frames [...] -> float32 in [-1, 1]."""
  return frames.astype(jnp.float32) / 127.5 - 1.0


def batch_shapes(batch: int, num_frames: int, size: int) -> dict:
  """{key: (shape, dtype)} of the video batch of the data pipelines (vlogger_jax/data)."""
  b, n, f = batch, num_frames, np.float32
  return {"frames": ((b, n, size, size, 3), np.uint8), "ref_frame": ((b, size, size, 3), np.uint8),
          "shape": ((b, 64), f), "fov": ((b,), f), "expression": ((b, n, 64), f),
          "head_pose": ((b, n, 9), f), "body_keypoints": ((b, n, 75, 2), f),
          "body_visibility": ((b, n, 75), f), "ref_expression": ((b, 64), f),
          "ref_head_pose": ((b, 9), f), "ref_body_keypoints": ((b, 75, 2), f),
          "ref_body_visibility": ((b, 75), f)}


def _checkpoint_location(path: str) -> tuple[str, int | None]:
  """(workdir, step or None for the latest) of a pretrain workdir or checkpoint path."""
  path = os.path.abspath(path)
  base, parent = os.path.basename(path), os.path.dirname(path)
  if os.path.isdir(os.path.join(path, "checkpoints")):
    return path, None
  if base == "checkpoints" and os.path.isdir(path):
    return parent, None
  if base.isdigit() and os.path.basename(parent) == "checkpoints" and os.path.isdir(path):
    return os.path.dirname(parent), int(base)
  raise ValueError(f"config.pretrained '{path}' is neither a workdir holding checkpoints/ nor a "
                   "checkpoint <workdir>/checkpoints/<step>; expected the workdir of a run of "
                   "configs/base128.py:pretrain (or '' to pre-train first, 'none' for no weights).")


def load_image_params(path: str) -> dict:
  """Image-model params (host numpy, EMA if the run kept one) of a pretrain workdir/checkpoint."""
  from vlogger_jax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  from vlogger_jax.train import loop  # pylint: disable=g-import-not-at-top  (loop imports tasks)
  from vlogger_jax.train.state import merge  # pylint: disable=g-import-not-at-top
  workdir, step = _checkpoint_location(path)
  # keep is irrelevant: this manager only reads (it deletes old checkpoints only when saving).
  ckpt = ckpt_lib.Checkpointer(workdir, keep=1 << 30, async_save=False)
  try:
    step = ckpt.latest_step() if step is None else step
    if step is None or step not in ckpt.all_steps():
      raise ValueError(f"config.pretrained '{path}' has no checkpoint"
                       f"{'' if step is None else f' at step {step}'}; expected a pretrain run "
                       "that saved at least one.")
    saved = ml_collections.ConfigDict(ckpt.read_config(step))
    if saved.get("task") != "video" or saved.get("stage") != "pretrain":
      raise ValueError(f"config.pretrained '{path}' was written by task '{saved.get('task')}' "
                       f"stage '{saved.get('stage')}'; expected task 'video' stage 'pretrain'.")
    # The abstract state of the run that wrote it, placed on one local device of this process.
    saved.mesh.shape = (-1,) + (1,) * (len(saved.mesh.axes) - 1)
    try:
      device = jax.local_devices(backend="cpu")[:1]
    except RuntimeError:
      device = jax.local_devices()[:1]
    trainer = loop.Trainer(saved, devices=device)
    state, _ = ckpt.restore(step, trainer.abstract_state)
  finally:
    ckpt.close()
  params = merge(state.ema if saved.ema_decay else state.params, state.frozen)
  return jax.tree.map(np.asarray, params)


def _host_constant(a: np.ndarray) -> jax.Array:
  # A callback rather than a captured constant: gigabytes of weights embedded in the init
  # program would make XLA compile them (and exceed protobuf's 2 GB limit at paper size).
  return jax.pure_callback(lambda: a, jax.ShapeDtypeStruct(a.shape, a.dtype))


class VideoTask:
  """Image pre-training or control-stage training of the 128² base video model (module doc)."""

  def __init__(self, config):
    self.config = config
    self.stage = config.stage
    if self.stage not in STAGES:
      raise ValueError(f"config.stage '{self.stage}' is unknown; expected one of {STAGES}.")
    self.schedule = diffusion.make_schedule(config.diffusion.num_steps, config.diffusion.schedule)
    self.prediction = config.diffusion.prediction
    self.size = config.data.resolution
    self.num_frames = 1 if self.stage == "pretrain" else config.data.num_frames
    m = config.model
    kw = dict(dtype=jnp.dtype(config.precision.compute_dtype),
              param_dtype=jnp.dtype(config.precision.param_dtype))
    ucfg = unet_lib.unet_config(m.name, dropout=m.dropout, attention_impl=m.attention_impl or None)
    self.head_model = head_lib.load_default()
    self._image_params = None
    if self.stage == "pretrain":
      self.model = unet_lib.UNet(ucfg, **kw)
      return
    self.control_cfg = unet_lib.control_config(m.name, unet=ucfg, temporal=m.temporal,
                                               temporal_blocks=m.temporal_blocks)
    self.model = unet_lib.ControlledVideoUNet(self.control_cfg, **kw)
    if not config.pretrained:
      raise ValueError("config.pretrained is empty; expected the workdir of a "
                       "configs/base128.py:pretrain run, 'none', or the config returned by "
                       "VideoTask.prepare_run(config, workdir), which pre-trains one first.")
    if config.pretrained != "none":
      self._image_params = load_image_params(config.pretrained)

  @classmethod
  def prepare_run(cls, config, workdir: str):
    """The config to train in `workdir`: for the control stage with config.pretrained == '',
    first trains config.pretrain_stage (with this config's data, model, mesh and diffusion) in
    <workdir>/pretrain, resuming it if interrupted, and points config.pretrained there."""
    if config.get("stage") != "control" or config.pretrained:
      return config
    from vlogger_jax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
    from vlogger_jax.train import config_lib, loop  # pylint: disable=g-import-not-at-top
    pre = ml_collections.ConfigDict(config.pretrain_stage.to_dict())
    for key in ("seed", "data", "model", "diffusion", "mesh", "sharding_rules"):
      value = config[key]
      pre[key] = (ml_collections.ConfigDict(value.to_dict())
                  if isinstance(value, ml_collections.ConfigDict) else value)
    config_lib.validate(pre, "config.pretrain_stage")
    pre.lock()
    sub = os.path.join(workdir, PRETRAIN_SUBDIR)
    ckpt = ckpt_lib.Checkpointer(sub, keep=pre.checkpoint.keep, async_save=False)
    done = ckpt.latest_step() is not None and ckpt.latest_step() >= pre.num_train_steps
    ckpt.close()
    if not done:
      if jax.process_index() == 0:
        print(f"video: pre-training the image model first in {sub}", flush=True)
      loop.train(pre, sub)
    return config_lib.overridden(config, pretrained=sub)

  # --- model ---

  def _dummy_cond(self):
    s, n, cc = self.size, self.num_frames, render.CONTROL_CHANNELS
    return {"ref": jnp.zeros((1, s, s, 3)), "ref_controls": jnp.zeros((1, s, s, cc)),
            "controls": jnp.zeros((1, n, s, s, cc)), "context": jnp.zeros((1, n, s, s, 3)),
            "context_mask": jnp.zeros((1, n)), "drop": jnp.zeros((1,), bool)}

  def init(self, rng):
    s, n = self.size, self.num_frames
    x, t = jnp.zeros((1, n, s, s, 3)), jnp.zeros((1,), jnp.int32)
    if self.stage == "pretrain":
      return self.model.init(rng, x, t, jnp.zeros((1, s, s, 3)))["params"]
    params = self.model.init(rng, x, t, self._dummy_cond())["params"]
    if self._image_params is not None:
      params = unet_lib.control_params_from_unet(
          params, jax.tree.map(_host_constant, self._image_params))
    return params

  def apply(self, params, x, t, cond, rng=None):
    """The denoiser: prediction [B, N, R, R, 3]; `cond` is the reference image [B, R, R, 3] for
    the pretrain stage and the conditioning dict of ControlledVideoUNet for the control stage."""
    rngs = None if rng is None else {
        "dropout": layers.dropout_key(rng, self.config.model.get("dropout_prng", "threefry"))}
    return self.model.apply({"params": params}, x, t, cond, train=rng is not None, rngs=rngs)

  def controls(self, batch: dict) -> tuple[jax.Array, jax.Array]:
    """(controls [B, N, S, S, 22], ref_controls [B, S, S, 22]) rendered from the batch's
    parameters, targets and reference in one render call laid out [B, N + 1] so that the frames
    of one example stay on the device that holds the example."""
    b, n = batch["expression"].shape[:2]
    cat = lambda k: jnp.concatenate([batch[k], batch[f"ref_{k}"][:, None]], axis=1)
    per = lambda a: jnp.broadcast_to(a[:, None], (b, n + 1) + a.shape[1:])
    c = video_sampler.frame_controls(self.head_model, per(batch["shape"]), per(batch["fov"]),
                                     *(cat(k) for k in video_sampler.FRAME_KEYS), self.size)
    c = nn.with_logical_constraint(c, ("batch", None, None, None, None))
    return c[:, :n], c[:, n]

  def example_batch(self, batch: int, seed: int = 0) -> dict:
    """A host batch of `batch` examples for benchmarks: random pixels, but the motion parameters
    of synthetic clips (vlogger_jax/data/synthetic.py), so that the controls rendered in the step
    cost what they cost in training. (Uniform random parameters put heads across and behind the
    camera; the rasterizer's per-call window then covers whole frames, which took 32 % of the
    measured paper-size step on an H200. Synthetic parameters kept it at 4-8 pixels in the
    batches checked; BENCHMARKS.md.)"""
    from vlogger_jax.data import synthetic  # pylint: disable=g-import-not-at-top
    n, size = self.num_frames, self.size
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(batch):   # frames 0..n-1 of each plan are the window, frame n the reference
      plan = synthetic.plan_clip(seed * 100_003 + i, n + 1, size, self.head_model)
      rows.append({"shape": plan.shape, "fov": plan.fov,
                   **{k: getattr(plan, k)[:n] for k in video_sampler.FRAME_KEYS},
                   **{f"ref_{k}": getattr(plan, k)[n] for k in video_sampler.FRAME_KEYS},
                   "frames": rng.integers(0, 256, (n, size, size, 3), np.uint8),
                   "ref_frame": rng.integers(0, 256, (size, size, 3), np.uint8)})
    return {k: np.stack([r[k] for r in rows]).astype(dtype)
            for k, (_, dtype) in batch_shapes(batch, n, size).items()}

  def batch_spec(self, batch: int) -> dict:
    return {k: (jax.ShapeDtypeStruct(shape, dtype), ("batch",) + (None,) * (len(shape) - 1))
            for k, (shape, dtype) in batch_shapes(batch, self.num_frames, self.size).items()}

  def loss(self, params, batch, rng):
    x0, ref = to_pixels(batch["frames"]), to_pixels(batch["ref_frame"])
    b, n = x0.shape[:2]
    k_t, k_eps, k_drop, k_ctx, k_len, k_dropout = jax.random.split(rng, 6)
    t = jax.random.randint(k_t, (b,), 0, self.schedule.num_steps)
    eps = jax.random.normal(k_eps, x0.shape, jnp.float32)
    x_t = diffusion.q_sample(self.schedule, x0, t, eps)
    drop = jax.random.uniform(k_drop, (b,)) < self.config.guidance.p_drop
    target = diffusion.training_target(self.schedule, t, x0, eps, self.prediction)
    if self.stage == "pretrain":
      ref = ref * (1.0 - drop.astype(jnp.float32))[:, None, None, None]
      pred = self.apply(params, x_t, t, ref, rng=k_dropout)
      loss = diffusion.masked_mse(pred, target)
      return loss, {"loss": loss}
    controls, ref_controls = self.controls(batch)
    ctx = self.config.context
    length = jax.random.randint(k_len, (b,), 1, max(min(ctx.max_frames, n - 1), 1) + 1)
    use = jax.random.uniform(k_ctx, (b,)) < ctx.p
    context_mask = ((jnp.arange(n)[None] < length[:, None]) & use[:, None]).astype(jnp.float32)
    cond = {"ref": ref, "ref_controls": ref_controls, "controls": controls, "context": x0,
            "context_mask": context_mask, "drop": drop}
    pred = self.apply(params, x_t, t, cond, rng=k_dropout)
    # Context frames are given, not generated: the sampler never uses their prediction.
    loss = diffusion.masked_mse(pred, target, mask=(1.0 - context_mask)[..., None, None, None])
    return loss, {"loss": loss, "context_frames": jnp.mean(jnp.sum(context_mask, axis=1))}

  # --- data ---

  def _dataset_path(self) -> str:
    from vlogger_jax.data import builders  # pylint: disable=g-import-not-at-top
    return builders.dataset_dir(self.config.data)

  def data_iterator(self, process_index: int, process_count: int, local_batch: int):
    from vlogger_jax.data import pipelines  # pylint: disable=g-import-not-at-top
    d = self.config.data
    path = self._dataset_path()
    kw = dict(resolution=self.size, num_workers=d.num_workers,
              min_ref_distance=d.min_ref_distance)
    if self.stage == "pretrain":
      return pipelines.image_pipeline(path, "train", local_batch, self.config.seed,
                                      process_index, process_count, **kw)
    return pipelines.video_pipeline(path, "train", local_batch, self.config.seed, process_index,
                                    process_count, num_frames=self.num_frames, **kw)

  # --- evaluation ---

  @functools.cached_property
  def _eval_batch(self) -> dict:
    from vlogger_jax.data import pipelines  # pylint: disable=g-import-not-at-top
    e, d = self.config.evaluation, self.config.data
    # Held-out identities: the test split; the same clips and windows at every evaluation.
    it = pipelines.video_pipeline(self._dataset_path(), "test", e.num_clips, seed=0,
                                  resolution=self.size, num_frames=self.num_frames,
                                  min_ref_distance=d.min_ref_distance)
    return next(it)

  def evaluate(self, params, rng) -> dict:
    """Control stage: reenactment of held-out clips with their true controls, PSNR and L1 of the
    generated window against the true frames, beside repeating the reference frame."""
    if self.stage != "control" or not self.config.evaluation.num_clips:
      return {}
    batch, e = self._eval_batch, self.config.evaluation
    scores = {"eval/psnr": [], "eval/l1": [], "eval/psnr_repeat_ref": []}
    for i in range(batch["frames"].shape[0]):
      clip = {k: batch[k][i] for k in video_sampler.CLIP_KEYS}
      ref = to_pixels(batch["ref_frame"][i])
      truth = np.asarray(to_pixels(batch["frames"][i]))
      out = np.asarray(self.generate(params, ref, clip, jax.random.fold_in(rng, i),
                                     sampler=e.sampler, num_steps=e.num_steps, eta=e.eta))
      scores["eval/psnr"].append(video_eval.psnr(out, truth))
      scores["eval/l1"].append(float(np.abs(out - truth).mean() / 2))
      scores["eval/psnr_repeat_ref"].append(video_eval.psnr(np.broadcast_to(ref, truth.shape),
                                                               truth))
    return {k: float(np.mean(v)) for k, v in scores.items()}

  # --- sampling ---

  def sampler_config(self, **overrides) -> video_sampler.SamplerConfig:
    s = self.config.sampling
    kw = dict(window=self.config.data.num_frames, overlap=s.overlap, sampler=s.sampler,
              num_steps=s.num_steps, eta=s.eta, guidance=s.guidance, prediction=self.prediction)
    kw.update(overrides)
    return video_sampler.SamplerConfig(**kw)

  @functools.cached_property
  def _generate(self):
    fn = functools.partial(video_sampler.generate, self.apply)
    return jax.jit(fn, static_argnames=("cfg",))

  def generate(self, params, ref_image, clip: dict, key, **overrides) -> jax.Array:
    """Frames [T, S, S, 3] in [-1, 1] for ref_image [S, S, 3] in [-1, 1] and a clip of motion
    parameters (video_sampler module doc); control stage only; jitted per (length, overrides)."""
    if self.stage != "control":
      raise ValueError("generate needs the control stage; expected config.stage 'control'.")
    return self._generate(params, self.schedule, self.head_model, ref_image, clip, key,
                          cfg=self.sampler_config(**overrides))
