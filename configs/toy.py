r"""Toy task: diffusion on a 2-D mixture of 8 Gaussians; exercises the whole training engine.

  python launch/train.py --config=configs/toy.py:tiny --workdir=workdir/toy

`tiny` takes about a minute on a 2-core CPU: the loss falls from ~1.0 to ~0.3 and the eval metrics
(logged to metrics.jsonl and TensorBoard) reach eval/near_mode > 0.8 (share of samples within 3
std of a mode) and eval/mean_err < 0.1. The default variant is the size used to measure the
engine's per-step overhead on an accelerator (launch/benchmark.py).
"""

import ml_collections

from vlogger_jax.train import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = config_lib.engine_config()
  c.task = "toy"
  c.num_train_steps = 20_000
  c.batch_size = 1024
  c.log_every = 500
  c.eval_every = 5000
  c.checkpoint.every = 5000
  c.optimizer.lr = 1e-3
  c.optimizer.schedule = "cosine"
  c.optimizer.warmup_steps = 100
  c.ema_decay = 0.999
  c.precision.compute_dtype = "float32"
  c.diffusion = ml_collections.ConfigDict(dict(num_steps=1000, schedule="cosine",
                                               prediction="eps"))
  c.model = ml_collections.ConfigDict(dict(hidden=256, depth=4))
  c.data = ml_collections.ConfigDict(dict(num_modes=8))

  def tiny(c):
    c.num_train_steps = 1500
    c.batch_size = 256
    c.log_every = 100
    c.eval_every = 500
    c.checkpoint.every = 500
    c.model.hidden = 64
    c.model.depth = 3
    c.ema_decay = 0.99

  return config_lib.pick_variant(c, arg, {"default": lambda c: None, "tiny": tiny},
                                 "configs/toy.py")
