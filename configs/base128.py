r"""Base video model at 128² (paper §3.2, Supp. C.2): image pre-training, then the control stage.

  python launch/train.py --config=configs/base128.py:pretrain --workdir=workdir/base128_pretrain
  python launch/train.py --config=configs/base128.py \
      --config.pretrained=workdir/base128_pretrain --workdir=workdir/base128
  python launch/train.py --config=configs/base128.py:tiny --workdir=workdir/base128_tiny

`default` is the paper's control stage: the frozen 509 M-parameter image UNet (`base128`, see
docs/video_model.md) plus its trainable control copy and temporal layers (220 M) on 8-frame
windows at 128² with a reference frame >= 3 s away, ε-prediction, 1000-step cosine schedule,
Adam at a constant 5e-5, batch 128, 280k steps, bf16; every 10k steps it reenacts 8 held-out
windows (eval/psnr beside eval/psnr_repeat_ref, the repeat-the-reference baseline). `pretrain`
(task 'image') trains the image model on single frames with a reference frame of the same clip
(batch 256, 1e-4 after 1k warm-up steps, 200k steps). config.pretrained names the pretrain
workdir (or one of its checkpoints); left empty, launch/train.py first pre-trains the image model
in <workdir>/pretrain from config.pretrain_stage (the `pretrain`, `small_pretrain` or
`tiny_pretrain` variant, with this config's data and model; vlogger_jax/train/stages.py), and
rerunning the command resumes whichever stage was interrupted. Without a named dataset the
synthetic talking-human dataset is built first under data.data_dir (`large` for the paper
variants, `tiny` for the tiny ones).

`tiny` (control stage) and `tiny_pretrain` run the `tiny` networks (0.2 M + 0.1 M parameters)
at 32² on CPU in minutes: a pipeline check, not a model. `small` and `small_pretrain` are for
short accelerator runs (the `small` networks at 128² on the 160-clip `video` synthetic set,
v-prediction); stop them with SIGTERM (`timeout -s TERM`) and the checkpoint is kept. What each
reaches, with its command and time, is in BENCHMARKS.md (issue 6).
Ablations: --config.model.temporal=both|none, --config.context.p=0 (no outpainting training),
--config.guidance.p_drop=0.
"""

import ml_collections

from vlogger_jax.nn.unet import FROZEN_PATTERNS
from vlogger_jax.train import config_lib


def _base() -> ml_collections.ConfigDict:
  c = config_lib.engine_config()
  c.task = "video"                     # 'image' (pre-training) | 'video' (the control stage)
  # '' -> pre-train first in <workdir>/pretrain; a pretrain workdir or <workdir>/checkpoints/<step>;
  # 'none' -> untrained image model (benchmarks only).
  c.pretrained = ""
  c.pretrained_step = -1               # the image model's step (-1: its latest); the stage chain
                                       # records the step it trains on
  c.pretrain_stage = ml_collections.ConfigDict()
  c.frozen = FROZEN_PATTERNS
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
      name="base128",                  # vlogger_jax.nn.unet: base128 | small | tiny
      dropout=0.1,
      attention_impl="",               # '' -> cuDNN flash attention on GPU (bf16), else 'xla'
      dropout_prng="rbg",              # dropout bits: 'rbg' (XLA RngBitGenerator) | 'threefry'
      temporal="control",              # temporal convs: 'control' | 'both' | 'none'
      temporal_blocks="first"))        # 'first' res block of each down level | 'all'
  c.guidance = ml_collections.ConfigDict(dict(p_drop=0.1))   # hint + reference dropped together
  # Outpainting: with probability p the first 1..max_frames frames are given clean as context.
  c.context = ml_collections.ConfigDict(dict(p=0.5, max_frames=4))
  # Generation (vlogger_jax/windowed_sampler.py): 'ddpm' (all steps, the paper's) | 'ddim' | 'dpm'.
  c.sampling = ml_collections.ConfigDict(dict(sampler="ddpm", num_steps=50, eta=0.0,
                                              guidance=1.0, overlap=4))
  # Every eval_every steps (control stage): reenact num_clips held-out windows. Ancestral DDIM
  # (eta 1) is as forgiving as DDPM of a young model, where deterministic solvers are not.
  c.evaluation = ml_collections.ConfigDict(dict(num_clips=8, sampler="ddim", num_steps=100,
                                                eta=1.0))
  c.data = ml_collections.ConfigDict(dict(
      dataset="synthetic",             # synthetic | folder
      config_name="large",             # synthetic builder config
      data_dir="",                     # '' -> ./data
      path="",                         # dataset == 'folder': a dataset built by launch/build_dataset.py
      resolution=128, num_frames=8,
      min_ref_distance=72,             # 3 s at 24 fps (Supp. C.2)
      # Image pre-training: frame/reference pairs drawn from each clip read (a record is a whole
      # clip, whose reading costs about ten decoded frames at 128 px; docs/data.md).
      samples_per_clip=1,
      num_workers=8))
  return c


def _pretrain(c):
  c.task = "image"
  c.frozen = ()
  c.eval_every = 0
  c.num_train_steps = 200_000
  c.batch_size = 256
  c.optimizer.lr = 1e-4
  c.optimizer.warmup_steps = 1000


def _small(c):
  """Short accelerator runs (the issue 6 learning run): the `small` networks (23 M frozen + 10 M
  trainable parameters, 63 GFLOPs per frame) at 128² on the 160-clip `video` synthetic set."""
  c.model.update(dict(name="small", dropout=0.0))
  # v-prediction: in minutes of training ε's frame estimate at low SNR sets colours at random
  # (BENCHMARKS.md: the session-3 and session-4 runs, and the tiny ε/v pairs on CPU).
  c.diffusion.prediction = "v"
  c.num_train_steps = 20_000
  c.batch_size = 32
  c.log_every = 200
  c.eval_every = 0
  c.checkpoint.every = 2000
  c.optimizer.lr = 2e-4
  c.optimizer.warmup_steps = 200
  c.ema_decay = 0.999
  c.data.update(dict(config_name="video", num_workers=12))


def _small_pretrain(c):
  _small(c)
  _pretrain(c)
  c.num_train_steps = 20_000
  c.batch_size = 128
  c.optimizer.lr = 3e-4
  c.optimizer.warmup_steps = 500
  c.data.samples_per_clip = 8  # 16 clips of the 160 per batch; the loader had set the pace


def _demo(c):
  """The shipped default weights (vlogger_jax/assets/weights, docs/generation.md): the `small`
  recipe on the `demo` networks (8 M parameters in all), trained for minutes on one GPU and
  sampled on a CPU in minutes."""
  _small(c)
  c.model.name = "demo"
  c.optimizer.lr = 3e-4
  c.sampling.update(dict(sampler="ddim", num_steps=10, eta=1.0, overlap=2))


def _demo_pretrain(c):
  _small_pretrain(c)
  c.model.name = "demo"
  c.optimizer.lr = 5e-4


def _tiny(c):
  c.model.update(dict(name="tiny", dropout=0.0))
  c.num_train_steps = 300
  c.batch_size = 4
  c.log_every = 25
  c.eval_every = 300
  c.checkpoint.every = 100
  c.optimizer.lr = 3e-3
  c.ema_decay = 0.99
  c.precision.compute_dtype = "float32"
  c.data.update(dict(config_name="tiny", resolution=32, min_ref_distance=24, num_workers=0))
  c.evaluation.update(dict(num_clips=4, num_steps=25))


def _tiny_pretrain(c):
  _tiny(c)
  _pretrain(c)
  c.num_train_steps = 300
  c.batch_size = 8
  c.optimizer.lr = 2e-3
  c.optimizer.schedule = "cosine"
  c.optimizer.warmup_steps = 20


_VARIANTS = {"default": lambda c: None, "pretrain": _pretrain, "small": _small,
             "small_pretrain": _small_pretrain, "demo": _demo, "demo_pretrain": _demo_pretrain,
             "tiny": _tiny, "tiny_pretrain": _tiny_pretrain}
_PRETRAIN_OF = {"default": "pretrain", "small": "small_pretrain", "demo": "demo_pretrain",
                "tiny": "tiny_pretrain"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  name = arg or "default"

  def variant(c):
    _VARIANTS[name](c)
    if name in _PRETRAIN_OF:  # the stage that `pretrained = ''` trains first
      c.pretrain_stage = ml_collections.ConfigDict(get_config(_PRETRAIN_OF[name]).to_dict())

  return config_lib.pick_variant(_base(), arg, {k: variant for k in _VARIANTS},
                                 "configs/base128.py")
