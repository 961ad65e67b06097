"""How learnable is lip sync on the synthetic speech? A small sequence probe, on the CPU.

  python launch/probe_lipsync.py --train_clips=200 --steps=1500    # ~7 min on 2 CPU cores

Plans --train_clips training clips and 16 held-out ones (seeds 1,000,000 on: held-out speakers
and sentences) of 10 s, and fits a dilated 1-D conv net (receptive field ~2.5 s) from each clip's
log-mel (256 bins averaged to 64, the clip's mean removed) to the true inner-lip gap per frame,
with an MSE loss. It prints the held-out mouth-opening correlation, bilabial closure and opening
range (motion_eval.py), the numbers the motion model is judged by. It is no substitute for
training the motion model: it says whether a change to the data makes the audio-to-mouth mapping
easier or harder to learn, in minutes and without an accelerator.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vlogger_jax import head
from vlogger_jax import motion_eval
from vlogger_jax.data import records
from vlogger_jax.data import synthetic

FRAMES, BANDS, WIDTH, DILATIONS = 240, 64, 128, (1, 2, 4, 8)


def clips(seeds, model):
  """(mel [N, T, 64], lip gap [N, T] mm, bilabial intervals per clip) of the clips of `seeds`."""
  mels, gaps, bilabials = [], [], []
  for seed in seeds:
    plan = synthetic.plan_clip(seed, FRAMES, 32, model)
    mel = records.clip_mel(plan.audio, FRAMES).astype(np.float32)
    mels.append(mel.reshape(FRAMES, BANDS, -1).mean(-1))
    gaps.append(motion_eval.mouth_opening(model, plan.shape, plan.expression))
    bilabials.append(synthetic.bilabial_intervals(plan.clip_id, FRAMES, plan.audio))
  return np.stack(mels), np.stack(gaps), bilabials


def _conv(x, w, dilation):
  return jax.lax.conv_general_dilated(x, w, (1,), "SAME", rhs_dilation=(dilation,),
                                      dimension_numbers=("NWC", "WIO", "NWC"))


def init(key):
  """Parameters of the probe: an input conv, residual dilated convs, a linear read-out."""
  keys = jax.random.split(key, len(DILATIONS) + 1)
  params = {"in": jax.random.normal(keys[0], (5, BANDS, WIDTH)) / np.sqrt(5 * BANDS),
            "out": jnp.zeros((WIDTH, 1))}
  for i, k in enumerate(keys[1:]):
    params[f"c{i}"] = jax.random.normal(k, (5, WIDTH, WIDTH)) / np.sqrt(5 * WIDTH)
  return params


def apply(params, mel):
  """mel [N, T, 64] (normalised) -> normalised lip gap [N, T]."""
  h = jax.nn.gelu(_conv(mel, params["in"], 1))
  for i, d in enumerate(DILATIONS):
    h = h + jax.nn.gelu(_conv(h, params[f"c{i}"], d))
  return (h @ params["out"])[..., 0]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--train_clips", type=int, default=200)
  parser.add_argument("--test_clips", type=int, default=16)
  parser.add_argument("--steps", type=int, default=1500)
  args = parser.parse_args(argv)
  start = time.time()
  model = head.load_default()
  mel_tr, gap_tr, _ = clips(range(args.train_clips), model)
  mel_te, gap_te, bil_te = clips(range(synthetic.HELD_OUT_SEEDS,
                                       synthetic.HELD_OUT_SEEDS + args.test_clips), model)
  scale = mel_tr.std((0, 1)) + 1e-6
  norm = lambda m: (m - m.mean(1, keepdims=True)) / scale  # the clip's level removed
  g_mean, g_std = gap_tr.mean(), gap_tr.std()
  x, y = jnp.asarray(norm(mel_tr)), jnp.asarray((gap_tr - g_mean) / g_std)
  params = init(jax.random.PRNGKey(0))
  opt = optax.adamw(1e-3, weight_decay=1e-2)
  state = opt.init(params)

  @jax.jit
  def step(params, state, idx):
    loss, grads = jax.value_and_grad(lambda p: jnp.mean((apply(p, x[idx]) - y[idx]) ** 2))(params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  rng = np.random.default_rng(0)
  for _ in range(args.steps):
    params, state, loss = step(params, state, jnp.asarray(rng.integers(0, len(x), 16)))
  pred = np.asarray(apply(params, jnp.asarray(norm(mel_te)))) * g_std + g_mean
  corr = np.mean([motion_eval.pearson(p, t) for p, t in zip(pred, gap_te)])
  closure = np.nanmean([motion_eval.bilabial_closure(p, b) for p, b in zip(pred, bil_te)])
  ratio = np.mean([motion_eval.opening_range(p) for p in pred]) / np.mean(
      [motion_eval.opening_range(t) for t in gap_te])
  print(f"train clips {args.train_clips}, steps {args.steps}: train loss {float(loss):.3f}; "
        f"held-out mouth correlation {corr:.3f}, bilabial closure {closure:.3f}, opening range "
        f"ratio {ratio:.2f} ({time.time() - start:.0f} s)")


if __name__ == "__main__":
  main()
