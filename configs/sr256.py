r"""Super-resolution 128² -> 256² (paper §3.2, Supp. C.2): an Efficient U-Net with temporal
layers, trained on its own (it needs no other stage's weights).

  python launch/train.py --config=configs/sr256.py --workdir=workdir/sr256
  python launch/train.py --config=configs/sr256.py:short --workdir=workdir/sr256_short
  python launch/train.py --config=configs/sr256.py:tiny --workdir=workdir/sr256_tiny

`default` is the paper's recipe: the `sr256` network (Imagen's 64 -> 256 Efficient U-Net sized;
parameters and FLOPs per frame in docs/super_resolution.md) on 8-frame windows at 256², the
128² input made from the true frames on the device with the noise-conditioning augmentation
(level ~ U[0, 0.5)), ε-prediction with the 1000-step cosine schedule, Adam at a constant 5e-5,
batch 128, 280k steps, bf16. Generation samples with DPM-Solver++ (20 steps) at augmentation
level 0.1, window and overlap following the base model. `short` is the ten-minute GPU run of
BENCHMARKS.md (the `short` network, batch 16, 2e-4, x0-prediction: see _SHORT_RUN_PREDICTION);
`tiny` runs on a CPU in minutes (a pipeline check, not a model). Without a named dataset the
synthetic `sr256` set (the same identities as `sr512`) is built first under data.data_dir.
"""

import ml_collections

from vlogger_jax.train import config_lib

# Minutes of training: x0-prediction. The low-resolution input pins the answer down, and an
# x0-model learns to pass it through at once; an ε-model has to learn that at every noise level,
# and until it has, its samples fall far below bicubic (BENCHMARKS.md, issue 14: a tiny model on
# one clip after 300-800 steps samples 14.1 dB with ε, 24.3 dB with v, 42.6 dB with x0, against
# 30.4 dB for bicubic).
_SHORT_RUN_PREDICTION = "x0"
# ... as bicubic plus a correction, so that an untrained stage starts at bicubic.
_SHORT_RUN_RESIDUAL = True


def stage(size: int, low: int, network: str, dataset: str, arg: str | None, source: str,
          paper_crop: int = 0) -> ml_collections.ConfigDict:
  """The config of an SR stage from `low`² to `size`², variant `arg` (sr256.py and sr512.py)."""
  c = config_lib.engine_config()
  c.task = "sr"
  c.num_train_steps = 280_000
  c.batch_size = 128
  c.log_every = 100
  c.eval_every = 10_000
  c.checkpoint.every = 5000
  c.optimizer.lr = 5e-5
  c.optimizer.schedule = "constant"
  c.ema_decay = 0.9999
  c.precision.compute_dtype = "bfloat16"
  c.diffusion = ml_collections.ConfigDict(dict(num_steps=1000, schedule="cosine",
                                               prediction="eps"))
  c.model = ml_collections.ConfigDict(dict(
      name=network,                    # vlogger_jax.nn.efficient_unet: sr256 | sr512 | short | tiny
      dropout=0.0,
      attention_impl="",               # '' -> cuDNN flash attention on GPU (bf16), else 'xla'
      dropout_prng="rbg",
      temporal_blocks="first"))        # temporal conv in the 'first' res block of a level | 'all'
  # Noise-conditioning augmentation: training levels ~ U[0, train_aug_max) (continuous cosine).
  # residual: predict x0 as bicubic + the network's output (x0-prediction only; models/sr.py).
  c.sr = ml_collections.ConfigDict(dict(low_resolution=low, train_aug_max=0.5, residual=False))
  c.context = ml_collections.ConfigDict(dict(p=0.5, max_frames=4))
  # Generation: the pipeline uses the base model's window and overlap for every stage.
  c.sampling = ml_collections.ConfigDict(dict(sampler="dpm", num_steps=20, eta=0.0, overlap=4,
                                              aug_level=0.1))
  c.evaluation = ml_collections.ConfigDict(dict(num_clips=4, sampler="dpm", num_steps=20,
                                                eta=0.0))
  c.data = ml_collections.ConfigDict(dict(
      dataset="synthetic",             # synthetic | folder
      config_name=dataset,             # synthetic builder config
      data_dir="",                     # '' -> ./data
      path="",                         # dataset 'folder': one built by launch/build_dataset.py
      resolution=size, num_frames=8,
      crop=paper_crop,                 # > 0: train on random crops of this size (sampling: full)
      num_workers=8))

  def short(c):
    c.model.name = "short"
    c.num_train_steps = 20_000
    c.batch_size = 16
    c.log_every = 200
    c.eval_every = 0
    c.checkpoint.every = 2000
    c.optimizer.lr = 2e-4
    c.optimizer.warmup_steps = 200
    c.ema_decay = 0.999
    c.data.num_workers = 12           # crop: the paper variant's (sr512: 256² crops)
    c.sampling.num_steps = 10
    c.evaluation.num_steps = 10
    c.diffusion.prediction = _SHORT_RUN_PREDICTION
    c.sr.residual = _SHORT_RUN_RESIDUAL

  def tiny(c):
    c.model.name = "tiny"
    c.num_train_steps = 200
    c.batch_size = 2
    c.log_every = 25
    c.eval_every = 200
    c.checkpoint.every = 100
    c.optimizer.lr = 2e-3
    c.ema_decay = 0.0
    c.precision.compute_dtype = "float32"
    c.diffusion.prediction = _SHORT_RUN_PREDICTION
    c.sr.residual = _SHORT_RUN_RESIDUAL
    c.sr.low_resolution = 32
    c.data.update(dict(config_name="sr_tiny", resolution=64, num_frames=4, crop=0,
                       num_workers=0))
    c.sampling.update(dict(num_steps=10, overlap=2))
    c.evaluation.update(dict(num_clips=2, num_steps=10))

  return config_lib.pick_variant(c, arg, {"default": lambda c: None, "short": short,
                                          "tiny": tiny}, source)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return stage(256, 128, "sr256", "sr256", arg, "configs/sr256.py")
