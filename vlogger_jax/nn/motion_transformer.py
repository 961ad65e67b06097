"""The audio-to-motion network M (paper §3.1, Supp. C.1): a causal transformer decoder.

Per frame it sums an embedding of the noisy motion (with optional known context frames), an MLP
embedding of the 256-bin log-mel, a sinusoidal position over frames and an MLP of the diffusion
step's 128-d embedding; four pre-LayerNorm blocks of causal multi-head self-attention (4 heads,
query/key/value size 256) and a two-layer GELU MLP follow; separate output layers predict the
expression (64), head-pose residual (9) and body residual (150) of the clean motion (x0).

Causality: frame i attends only to frames <= i that are not padding, so the prediction at frame i
never depends on audio or noise after it. That is what lets long audio be generated window by
window with the previous window's frames as context (vlogger_jax/windowed_sampler.py).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlogger_jax import contracts
from vlogger_jax.nn.layers import TimeEmbed, sharded_dense, timestep_embedding

N_MELS = contracts.MEL_BINS
# Log-mel values (audio.py: log(mel + 1e-10)) span about [-23, 5]; a fixed affine map brings them
# near unit scale. A per-frame LayerNorm would erase loudness, the strongest cue for the mouth.
MEL_CENTER, MEL_SCALE = -12.0, 6.0


class Block(nn.Module):
  """Pre-LN causal self-attention + GELU MLP, both residual."""
  width: int
  heads: int
  mlp_ratio: int = 4
  dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, attn_mask, deterministic: bool):
    norm = lambda name: nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    dense = lambda f, axes, name: sharded_dense(f, axes, dtype=self.dtype,
                                                param_dtype=self.param_dtype, name=name)
    x = norm("attn_norm")(h)
    head_dim = self.width // self.heads
    q, k, v = (dense(self.width, ("embed", "heads"), n)(x) for n in ("query", "key", "value"))
    split = lambda a: a.reshape(a.shape[:2] + (self.heads, head_dim))
    att = jax.nn.dot_product_attention(split(q), split(k), split(v), mask=attn_mask)
    att = dense(self.width, ("heads", "embed"), "out")(att.reshape(x.shape[:2] + (self.width,)))
    h = h + nn.Dropout(self.dropout)(att, deterministic=deterministic)
    x = norm("mlp_norm")(h)
    x = dense(self.width * self.mlp_ratio, ("embed", "mlp"), "mlp_in")(x)
    x = dense(self.width, ("mlp", "embed"), "mlp_out")(nn.gelu(x))
    return h + nn.Dropout(self.dropout)(x, deterministic=deterministic)


class MotionTransformer(nn.Module):
  """(x_t [B,T,223], t [B], mel [B,T,256], mask [B,T], ...) -> x0 prediction [B,T,223]."""
  width: int = 256
  depth: int = 4
  heads: int = 4
  time_dim: int = 128
  dropout: float = 0.0
  max_frames: int = 4096
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_t, t, mel, mask, *, context=None, context_mask=None, audio_keep=None,
               deterministic: bool = True):
    """context [B,T,223] holds known clean frames where context_mask [B,T] is 1 (else ignored);
    audio_keep [B] in {0, 1}: 0 replaces the audio by a learned null embedding (guidance)."""
    b, n, _ = x_t.shape
    dense = lambda f, axes, name: sharded_dense(f, axes, dtype=self.dtype,
                                                param_dtype=self.param_dtype, name=name)
    if context is None:
      context = jnp.zeros_like(x_t)
      context_mask = jnp.zeros((b, n), jnp.float32)
    cm = context_mask[..., None].astype(x_t.dtype)
    inp = jnp.concatenate([x_t * (1 - cm), context * cm, cm], axis=-1)
    h = dense(self.width, (None, "embed"), "motion_in")(inp)

    m = (mel.astype(jnp.float32) - MEL_CENTER) / MEL_SCALE
    m = dense(self.width, (None, "mlp"), "mel_in")(m)
    m = dense(self.width, ("mlp", "embed"), "mel_out")(nn.gelu(m))
    null = self.param("null_audio", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), ("embed",)), (self.width,), self.param_dtype)
    if audio_keep is not None:
      keep = audio_keep.astype(m.dtype)[:, None, None]
      m = keep * m + (1 - keep) * null.astype(m.dtype)
    h = h + m

    pos = timestep_embedding(jnp.arange(n), self.width, max_period=self.max_frames)
    h = h + pos[None].astype(h.dtype)
    temb = TimeEmbed(self.width, self.time_dim, self.dtype, self.param_dtype, name="time_embed")(t)
    h = h + temb[:, None, :]
    h = nn.with_logical_constraint(h, ("batch", None, "embed"))

    valid = mask.astype(bool)
    causal = jnp.tril(jnp.ones((n, n), bool))
    # Padded keys are hidden; a padded query still sees itself so its softmax stays finite.
    attn_mask = (causal[None] & valid[:, None, :]) | jnp.eye(n, dtype=bool)[None]
    attn_mask = attn_mask[:, None]  # [B, 1, T, T], broadcast over heads
    for i in range(self.depth):
      h = Block(self.width, self.heads, dropout=self.dropout, dtype=self.dtype,
                param_dtype=self.param_dtype, name=f"block_{i}")(h, attn_mask, deterministic)
    h = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="out_norm")(h)
    outs = [dense(contracts.NUM_EXPRESSION, ("embed", None), "expression_out")(h),
            dense(contracts.HEAD_POSE_DIM, ("embed", None), "head_out")(h),
            dense(contracts.BODY_DIM, ("embed", None), "body_out")(h)]
    return jnp.concatenate(outs, axis=-1).astype(jnp.float32)
