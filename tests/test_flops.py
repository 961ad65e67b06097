"""The analytic FLOP counter against hand counts and XLA's (complete) CPU cost analysis."""

import jax
import jax.numpy as jnp
import pytest

from vlogger_jax.flops import count_flops


def _xla_flops(fn, *args):
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return cost["flops"]


def test_matmul_and_batched_einsum_hand_counts():
  a = jax.ShapeDtypeStruct((8, 32, 64), jnp.float32)
  b = jax.ShapeDtypeStruct((8, 64, 16), jnp.float32)
  assert count_flops(lambda x, y: jnp.einsum("bij,bjk->bik", x, y), a, b) == 2 * 8 * 32 * 64 * 16


@pytest.mark.parametrize("stride,padding,dilation", [(1, "SAME", 1), (2, "SAME", 1),
                                                     (1, "VALID", 2), (2, ((1, 0), (0, 1)), 1)])
def test_conv_forward_and_gradients_match_xla_cpu(stride, padding, dilation):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 8))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 8, 12))

  def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), padding,
                                        rhs_dilation=(dilation, dilation),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  fwd = count_flops(conv, x, w)
  out = conv(x, w)
  if padding == "SAME" and dilation == 1:  # every output sees the full kernel but at borders
    assert fwd <= 2 * out.size * 3 * 3 * 8
  assert fwd == pytest.approx(_xla_flops(conv, x, w), rel=0.02)
  loss = lambda x, w: jnp.sum(conv(x, w) ** 2)
  grads = lambda x, w: jax.grad(loss, argnums=(0, 1))(x, w)
  counted = count_flops(grads, x, w)
  # Forward + input gradient + weight gradient: three convolutions of equal real work.
  assert counted == pytest.approx(3 * fwd, rel=0.02)
  assert counted == pytest.approx(_xla_flops(grads, x, w), rel=0.05)


def test_frozen_weights_cost_no_weight_gradient():
  x = jax.ShapeDtypeStruct((64, 128), jnp.float32)
  w1 = jax.ShapeDtypeStruct((128, 256), jnp.float32)
  w2 = jax.ShapeDtypeStruct((256, 32), jnp.float32)
  f = lambda w1, w2, x: jnp.sum(jnp.tanh(x @ w1) @ w2)
  fwd = 2 * 64 * 128 * 256 + 2 * 64 * 256 * 32
  # Only w2 trains: forward + its weight gradient; nothing flows back into x @ w1.
  only_w2 = count_flops(jax.grad(f, argnums=1), w1, w2, x)
  assert only_w2 == fwd + 2 * 64 * 256 * 32
  # Only w1 trains: forward + input gradient through w2 + weight gradient of w1.
  only_w1 = count_flops(jax.grad(f, argnums=0), w1, w2, x)
  assert only_w1 == fwd + 2 * 64 * 256 * 32 + 2 * 64 * 128 * 256


def test_scan_multiplies_by_length():
  w = jax.ShapeDtypeStruct((16, 16), jnp.float32)
  f = lambda w: jax.lax.fori_loop(0, 10, lambda i, h: h @ w, jnp.ones((4, 16)))
  assert count_flops(f, w) == 10 * 2 * 4 * 16 * 16
