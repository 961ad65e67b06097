r"""Audio-to-motion diffusion model M (paper §3.1, Supp. C.1).

  python launch/train.py --config=configs/motion.py:tiny --workdir=workdir/motion_tiny
  python launch/train.py --config=configs/motion.py --workdir=workdir/motion   # paper size

The paper variant: 4 layers, 4 heads, width 256, batch 512, lr 1e-4 decayed x0.99 every 4000
steps, 600k steps, 1000-step DDPM with the cosine schedule, x0-prediction, lambda_temp = 42,
audio dropped with p = 0.2 and guidance weight 5 at inference. Without a named dataset the
synthetic talking-human dataset is built first (`small` for tiny, `large` for the paper variant).
`tiny` trains a 2-layer width-64 model on CPU in minutes; its loss falls by several times.
Ablations (Table 2): --config.diffusion.prediction=eps, --config.loss.lambda_temp=0,
--config.guidance.p_drop=0 --config.sampling.guidance=1, --config.data.absolute=True.
"""

import ml_collections

from vlogger_jax.train import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = config_lib.engine_config()
  c.task = "motion"
  c.num_train_steps = 600_000
  c.batch_size = 512
  c.log_every = 500
  c.eval_every = 20_000
  c.checkpoint.every = 10_000
  c.optimizer.lr = 1e-4
  c.optimizer.schedule = "staircase"
  c.optimizer.decay_rate = 0.99
  c.optimizer.decay_every = 4000
  c.ema_decay = 0.9999
  c.frozen = ("^stats/",)      # the dataset's motion statistics travel in the checkpoint
  c.precision.compute_dtype = "bfloat16"
  c.diffusion = ml_collections.ConfigDict(dict(num_steps=1000, schedule="cosine",
                                               prediction="x0"))
  c.model = ml_collections.ConfigDict(dict(width=256, depth=4, heads=4, time_dim=128,
                                           dropout=0.1))
  c.loss = ml_collections.ConfigDict(dict(
      lambda_temp=42.0,
      temporal_mode="velocity",  # velocity: match the target's frame-to-frame change;
                                 # smoothness: the paper's literal |pred_i+1 - pred_i|^2
      temporal_weights=dict(expression=0.1, head=1.0, body=0.5)))
  c.guidance = ml_collections.ConfigDict(dict(p_drop=0.2))
  c.context = ml_collections.ConfigDict(dict(p=0.5, max_fraction=0.5))
  c.sampling = ml_collections.ConfigDict(dict(sampler="ddpm", num_steps=50, guidance=5.0,
                                              overlap=120))
  c.data = ml_collections.ConfigDict(dict(
      dataset="synthetic",     # synthetic | folder
      config_name="large",     # synthetic builder config
      data_dir="",             # '' -> ./data
      path="",                 # dataset == 'folder': a dataset built by launch/build_dataset.py
      min_frames=72, max_frames=240, absolute=False, num_workers=8,
      # True: hold the split's parameters and mel in RAM and gather whole batches at once
      # (vlogger_jax/data/motion_bank.py; ~0.3 MB per clip); False: grain workers over records.
      in_memory=True,
      num_eval_clips=32))

  def tiny(c):
    c.num_train_steps = 2000
    c.batch_size = 16
    c.log_every = 100
    c.eval_every = 1000
    c.checkpoint.every = 500
    c.optimizer.lr = 1e-3
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 100
    c.ema_decay = 0.99
    c.precision.compute_dtype = "float32"
    c.model.update(dict(width=64, depth=2, heads=4, time_dim=64, dropout=0.0))
    c.sampling.update(dict(sampler="ddim", num_steps=50))
    c.data.update(dict(config_name="small", num_workers=0, num_eval_clips=4))

  return config_lib.pick_variant(c, arg, {"default": lambda c: None, "tiny": tiny},
                                 "configs/motion.py")
