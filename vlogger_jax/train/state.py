"""Train state, the optimizer with the paper's learning-rate schedules, and the EMA.

The trainable/frozen split of the parameters is vlogger_jax/models/params.py.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """Everything a train step reads and returns; a pytree that Orbax checkpoints whole."""
  step: jax.Array          # int32 scalar: updates applied so far
  params: Any              # trainable parameters (fp32 masters)
  frozen: Any              # frozen parameters: no gradient, no optimizer state, never updated
  opt_state: Any
  ema: Any                 # EMA of `params` ({} when disabled)
  rng: jax.Array           # base key; each step folds in its step number
  bad_step: jax.Array      # int32: first step whose loss or gradients were not finite, -1 if none


def learning_rate_schedule(opt, num_train_steps: int) -> optax.Schedule:
  """The paper's schedules: 'staircase' (1e-4 x0.99 every 4000 steps), 'constant', 'cosine'."""
  if opt.schedule == "constant":
    sched = optax.constant_schedule(opt.lr)
  elif opt.schedule == "staircase":
    sched = optax.exponential_decay(opt.lr, transition_steps=opt.decay_every,
                                    decay_rate=opt.decay_rate, staircase=True)
  elif opt.schedule == "cosine":
    sched = optax.cosine_decay_schedule(opt.lr, max(num_train_steps - opt.warmup_steps, 1))
  else:
    raise ValueError(f"optimizer.schedule '{opt.schedule}' is unknown; expected 'constant', "
                     "'staircase' or 'cosine'.")
  if opt.warmup_steps:
    warm = optax.linear_schedule(0.0, opt.lr, opt.warmup_steps)
    sched = optax.join_schedules([warm, sched], [opt.warmup_steps])
  return sched


def make_optimizer(opt, num_train_steps: int) -> tuple[optax.GradientTransformation,
                                                       optax.Schedule]:
  """Gradient clipping + Adam(W) with the configured schedule."""
  sched = learning_rate_schedule(opt, num_train_steps)
  if opt.name == "adam":
    core = optax.adam(sched, b1=opt.b1, b2=opt.b2, eps=opt.eps)
  elif opt.name == "adamw":
    core = optax.adamw(sched, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay)
  else:
    raise ValueError(f"optimizer.name '{opt.name}' is unknown; expected 'adam' or 'adamw'.")
  chain = [optax.clip_by_global_norm(opt.grad_clip)] if opt.grad_clip > 0 else []
  return optax.chain(*chain, core), sched


def ema_decay_at(step, decay: float, warmup: bool = True):
  """The EMA decay used at `step` (0-based count of updates before this one): `decay`, or with
  warmup min(decay, (1 + step) / (10 + step)), so that a short run's average is not dominated by
  the initialisation (with 0.9999 and no warmup, the initial weights still hold 56 % of the
  average after 5,725 steps)."""
  if not warmup:
    return jnp.asarray(decay, jnp.float32)
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema, params, decay):
  """ema <- decay * ema + (1 - decay) * params, leaf by leaf (decay may be a traced scalar)."""
  return jax.tree.map(lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), ema, params)
