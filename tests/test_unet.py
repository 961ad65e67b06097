"""The image UNet, its temporal layers and the zero-initialised control copy (tiny config)."""

import os
import re
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from conftest import REPO, run_python
from vlogger_jax.models.params import merge, split_frozen
from vlogger_jax.nn import unet as unet_lib

B, T, S = 2, 4, 16


def _inputs(cfg, seed=0, b=B, t=T, s=S):
  """Random frames, steps and conditioning; numpy, so no generator compiles per shape."""
  rng = np.random.default_rng(seed)
  u = lambda *shape: rng.uniform(-1, 1, shape).astype(np.float32)
  cond = {"ref": u(b, s, s, 3), "ref_controls": u(b, s, s, cfg.control_channels),
          "controls": u(b, t, s, s, cfg.control_channels),
          "context": np.ones((b, t, s, s, 3), np.float32),
          "context_mask": np.zeros((b, t), np.float32), "drop": np.zeros((b,), bool)}
  return (rng.standard_normal((b, t, s, s, 3)).astype(np.float32),
          rng.integers(0, 1000, (b,)).astype(np.int32), cond)


def _perturb(tree, seed, where=lambda path: True, scale=0.2):
  """Adds noise to the leaves whose path passes `where`: a 'trained' stand-in for tests."""
  rng = np.random.default_rng(seed)   # numpy: no per-shape compilation of JAX's generator
  flat = traverse_util.flatten_dict(tree, sep="/")
  out = {p: (np.asarray(v) + scale * rng.standard_normal(v.shape).astype(v.dtype) if where(p)
             else np.asarray(v)) for p, v in flat.items()}
  return traverse_util.unflatten_dict(out, sep="/")


_JITTED = {}


def _apply(model, train=False):
  """model.apply jitted once per (model, train): (params, x, t, cond_or_ref[, rng]) -> output."""
  key = (model, train)
  if key not in _JITTED:
    if train:
      fn = lambda p, x, t, c, r: model.apply({"params": p}, x, t, c, train=True,
                                             rngs={"dropout": r})
    else:
      fn = lambda p, x, t, c: model.apply({"params": p}, x, t, c)
    _JITTED[key] = jax.jit(fn)
  return _JITTED[key]


def _drop_unet_temporal(params):
  flat = traverse_util.flatten_dict(params, sep="/")
  return traverse_util.unflatten_dict(
      {k: v for k, v in flat.items() if not (k.startswith("unet/") and "/temporal/" in k)},
      sep="/")


@pytest.fixture(scope="module")
def tiny():
  """One real initialisation shared by the tests (threefry init compiles slowly on CPU)."""
  cfg = unet_lib.control_config("tiny", temporal="both")
  x, t, cond = _inputs(cfg)
  video = unet_lib.ControlledVideoUNet(cfg)
  fresh = jax.jit(lambda r: video.init(r, x, t, cond)["params"])(
      jax.random.key(3, impl="unsafe_rbg"))
  # A random image model whose output conv is not zero, so "equal outputs" says something.
  image_params = _perturb(_drop_unet_temporal(nn.meta.unbox(fresh))["unet"], 2)
  params = nn.meta.unbox(unet_lib.control_params_from_unet(fresh, image_params))
  return dict(cfg=cfg, inputs=(x, t, cond), fresh=fresh, image_params=image_params,
              params=params)


def _models(tiny, temporal):
  cfg = unet_lib.control_config("tiny", temporal=temporal)
  params = tiny["params"] if temporal == "both" else _drop_unet_temporal(tiny["params"])
  return (cfg, unet_lib.UNet(cfg.unet), unet_lib.ControlledVideoUNet(cfg), tiny["image_params"],
          params, tiny["inputs"])


@pytest.mark.parametrize("temporal", ["control", "both"])
def test_init_equals_image_model_frame_by_frame(tiny, temporal):
  cfg, image, video, image_params, params, (x, t, cond) = _models(tiny, temporal)
  out = _apply(video)(params, x, t, cond)
  assert out.shape == x.shape and out.dtype == jnp.float32
  alone = jnp.concatenate([_apply(image)(image_params, x[:, i:i + 1], t, cond["ref"])
                           for i in range(T)], axis=1)
  assert float(jnp.abs(alone).mean()) > 1e-2   # the image model is not the zero function
  np.testing.assert_allclose(out, alone, rtol=0, atol=1e-5)

  # Moving the zero-initialised parts away from zero must change the output: the test above
  # could otherwise pass on a control branch that is not wired in.
  moved = _perturb(params, 4, where=lambda p: re.search(r"/(zero_\w+|temporal|hint)/", p))
  out2 = _apply(video)(moved, x, t, cond)
  assert float(jnp.abs(out2 - out).max()) > 1e-3
  # ...and the temporal layers then couple neighbouring frames: changing frame 0 changes
  # frame 1 (kernel 3), while the controls of frame 3 stay its own.
  x_b = x.copy()
  x_b[:, 0] = 0.0
  out3 = _apply(video)(moved, x_b, t, cond)
  assert float(jnp.abs(out3[:, 1] - out2[:, 1]).max()) > 1e-4


def test_param_tree_and_frozen_split(tiny):
  cfg, image, _, image_params, params, (x, t, cond) = _models(tiny, "both")
  assert set(params) == {"unet", "control"}
  assert set(params["control"]) == {"time_embed", "encoder", "hint"} | {
      k for k in params["control"] if k.startswith("zero_")}
  train, frozen = split_frozen(params, unet_lib.FROZEN_PATTERNS)
  flat_t = traverse_util.flatten_dict(train, sep="/")
  flat_f = traverse_util.flatten_dict(frozen, sep="/")
  assert all(k.startswith("control/") or "/temporal/" in k for k in flat_t)
  assert any(k.startswith("unet/") and "/temporal/" in k for k in flat_t)
  assert not any("temporal" in k for k in flat_f)
  # The frozen part has exactly the paths and shapes of a UNet's params and holds the image
  # model; the copy starts as the image encoder and step embedding.
  abstract = jax.eval_shape(lambda: image.init(jax.random.PRNGKey(0), x, t, cond["ref"]))
  shapes = {k: v.shape for k, v in traverse_util.flatten_dict(
      nn.meta.unbox(abstract["params"]), sep="/").items()}
  assert {k[len("unet/"):]: v.shape for k, v in flat_f.items()} == shapes
  image_flat = traverse_util.flatten_dict(image_params, sep="/")
  for k, v in image_flat.items():
    np.testing.assert_array_equal(flat_f["unet/" + k], v)
    if k.startswith(("encoder/", "time_embed/")):
      np.testing.assert_array_equal(flat_t["control/" + k], v)
  # The pieces that must start at zero do, in the real initialisation.
  fresh = traverse_util.flatten_dict(nn.meta.unbox(tiny["fresh"]), sep="/")
  zero = [k for k in fresh if re.search(r"/(zero_\w+|temporal)/|hint/conv_out|decoder/conv_out", k)]
  assert len(zero) > 10 and all(not np.any(fresh[k]) for k in zero)
  # Boxed leaves keep their logical names through the copy.
  boxed = unet_lib.control_params_from_unet(tiny["fresh"], image_params)
  k = boxed["control"]["encoder"]["down_0_0"]["conv_0"]["kernel"]
  assert k.names == ("conv_h", "conv_w", "conv_in", "conv_out")


def test_optax_step_leaves_frozen_params_unchanged(tiny):
  _, _, _, _, params, (x, t, cond) = _models(tiny, "both")
  cfg = unet_lib.control_config("tiny", temporal="both",
                                unet=unet_lib.unet_config("tiny", dropout=0.2))
  video = unet_lib.ControlledVideoUNet(cfg)
  train, frozen = split_frozen(params, unet_lib.FROZEN_PATTERNS)
  frozen_before = jax.tree.map(np.array, frozen)
  target = np.random.default_rng(9).standard_normal(x.shape).astype(np.float32)
  tx = optax.adam(1e-2)

  @jax.jit
  def step(tr, fr, opt_state, rng):
    loss_fn = lambda tr: jnp.mean((video.apply({"params": merge(tr, fr)}, x, t, cond, train=True,
                                               rngs={"dropout": rng}) - target) ** 2)
    loss, grads = jax.value_and_grad(loss_fn)(tr)
    updates, opt_state = tx.update(grads, opt_state, tr)
    return loss, optax.apply_updates(tr, updates), opt_state

  opt_state = tx.init(train)
  assert jax.tree.structure(opt_state[0].mu) == jax.tree.structure(train)
  key = lambda i: jax.random.key(i, impl="unsafe_rbg")   # dropout bits compile fast on CPU
  rng = key(0)
  loss0, train1, opt_state1 = step(train, frozen, opt_state, rng)
  loss1, _, _ = step(train1, frozen, opt_state1, rng)
  assert float(loss1) < float(loss0)          # the trainable part does learn
  jax.tree.map(np.testing.assert_array_equal, frozen_before, jax.tree.map(np.asarray, frozen))
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), train, train1)
  assert max(jax.tree.leaves(moved)) > 0
  assert max(jax.tree.leaves(moved["control"]["zero_mid"])) > 0
  # Dropout is live in training: another dropout key gives another loss.
  loss0b, _, _ = step(train, frozen, opt_state, key(1))
  assert float(loss0b) != float(loss0)


def test_drop_zeroes_hint_and_reference(tiny):
  cfg, _, video, _, params, (x, t, cond) = _models(tiny, "control")
  cond = dict(cond, context_mask=np.ones((B, T), np.float32), drop=np.array([True, False]))
  hint = unet_lib.hint_input(cfg, x.shape, cond).reshape(B, T, S, S, -1)
  assert hint.shape[-1] == cfg.hint_in_channels == 3 + 2 * 22 + 3 + 1
  assert float(jnp.abs(hint[0]).max()) == 0.0
  assert float(hint[1, ..., -1].min()) == 1.0   # the context-mask channel of example 1
  # A dropped example gets the same output whatever its controls and reference were.
  params = _perturb(params, 6, where=lambda p: "zero_" in p or "/hint/" in p)
  other = dict(cond, ref=cond["ref"] * 0.3, controls=cond["controls"][::-1])
  a = _apply(video)(params, x, t, cond)
  b = _apply(video)(params, x, t, other)
  np.testing.assert_array_equal(a[0], b[0])
  assert float(jnp.abs(a[1] - b[1]).max()) > 1e-4


def test_errors_name_the_input(tiny):
  cfg, image, video, image_params, _, (x, t, cond) = _models(tiny, "control")
  init = lambda m, *a: jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), *a))
  with pytest.raises(ValueError, match=r"cond\['controls'\] has shape"):
    init(video, x, t, dict(cond, controls=cond["controls"][:, :2]))
  with pytest.raises(ValueError, match="x frames are 15x15"):
    init(video, x[:, :, :15, :15], t, cond)
  with pytest.raises(ValueError, match="ref has shape None"):
    init(image, x, t)
  with pytest.raises(ValueError, match="per-level tuples"):
    unet_lib.unet_config("tiny", attention=(True,))
  with pytest.raises(ValueError, match="temporal 'everywhere'"):
    unet_lib.control_config("tiny", temporal="everywhere")
  with pytest.raises(ValueError, match="has no place in the video model"):
    unet_lib.control_params_from_unet(tiny["fresh"], dict(image_params, extra={"w": x}))
  narrow = _perturb(image_params, 0, where=lambda p: False)
  narrow["encoder"]["conv_in"]["kernel"] = narrow["encoder"]["conv_in"]["kernel"][..., :8]
  with pytest.raises(ValueError, match="same UNetConfig"):
    unet_lib.control_params_from_unet(tiny["fresh"], narrow)


def test_temporal_conv_is_the_3d_convolution_over_time():
  # The layer runs its [k, 1, 1, C, C] kernel as a 2-D (k, 1) convolution over [B, T, H*W, C];
  # it must equal the (k, 1, 1) 3-D convolution with zero padding in time, plus the residual.
  rng = np.random.default_rng(0)
  h = rng.standard_normal((2 * 5, 4, 3, 6)).astype(np.float32)
  layer = unet_lib.TemporalConv(3)
  shapes = nn.meta.unbox(jax.eval_shape(lambda: layer.init(jax.random.PRNGKey(0), h, 5)))
  params = jax.tree.map(lambda a: rng.standard_normal(a.shape).astype(np.float32), shapes)
  assert params["params"]["conv"]["kernel"].shape == (3, 1, 1, 6, 6)
  conv3d = nn.Conv(6, (3, 1, 1), padding=((1, 1), (0, 0), (0, 0)))
  v = h.reshape(2, 5, 4, 3, 6)
  want = v + conv3d.apply({"params": params["params"]["conv"]}, v)
  np.testing.assert_allclose(layer.apply(params, h, 5), want.reshape(h.shape), rtol=1e-5,
                             atol=1e-5)


def test_attention_implementation_choice():
  pick = unet_lib.attention_implementation
  assert pick("xla", jnp.bfloat16, 64) == "xla"
  assert pick("cudnn", jnp.float32, 64) == "cudnn"   # asked for: passed through
  fused = "cudnn" if jax.default_backend() == "gpu" else "xla"
  assert pick(None, jnp.bfloat16, 64) == fused
  assert pick(None, jnp.float32, 64) == "xla"        # cuDNN's fused kernel wants 16-bit heads
  assert pick(None, jnp.bfloat16, 12) == "xla"       # head size not a multiple of 8


def test_dropout_key_is_a_deterministic_rbg_key():
  from vlogger_jax.nn import layers
  key = jax.random.PRNGKey(3)
  assert layers.dropout_key(key, "threefry") is key
  fast = layers.dropout_key(key)
  assert jax.random.key_impl(fast) == jax.random.key_impl(jax.random.key(0, impl="rbg"))
  drop = lambda k: nn.Dropout(0.25).apply({}, jnp.ones((4096,)), deterministic=False,
                                          rngs={"dropout": k})
  a, b = drop(fast), drop(layers.dropout_key(key))
  np.testing.assert_array_equal(a, b)                                   # a function of the key
  assert abs(float(jnp.mean(a == 0)) - 0.25) < 0.03                     # the asked-for rate
  assert not np.array_equal(a, drop(layers.dropout_key(jax.random.PRNGKey(4))))
  with pytest.raises(ValueError, match="dropout PRNG 'philox' is unknown"):
    layers.dropout_key(key, "philox")


def test_sharded_on_8_devices_matches_one_device(tmp_path):
  script = tmp_path / "sharded.py"
  script.write_text(textwrap.dedent("""
      import jax, jax.numpy as jnp, numpy as np, flax.linen as nn
      from jax.sharding import NamedSharding, PartitionSpec as P
      from vlogger_jax.nn import unet as U
      from vlogger_jax import mesh as mesh_lib
      from vlogger_jax.train import config_lib

      config = config_lib.engine_config()
      config.mesh.shape = (2, 4)
      rules = mesh_lib.rules_tuple(config.sharding_rules)
      mesh = mesh_lib.make_mesh(config.mesh)
      cfg = U.control_config("tiny", temporal="both")
      model = U.ControlledVideoUNet(cfg, dtype=jnp.bfloat16)
      b, t, s = 8, 2, 16
      rng = np.random.default_rng(0)
      u = lambda *shape: rng.uniform(-1, 1, shape).astype(np.float32)
      x, steps = u(b, t, s, s, 3), np.arange(b, dtype=np.int32) * 100
      cond = {"ref": u(b, s, s, 3), "ref_controls": u(b, s, s, 22), "controls": u(b, t, s, s, 22)}

      def init(rng):
        with nn.logical_axis_rules(rules):
          return model.init(rng, x, steps, cond)["params"]

      key = jax.random.key(1, impl="unsafe_rbg")   # compiles faster than threefry on CPU
      boxed = jax.eval_shape(init, key)
      shardings = mesh_lib.logical_shardings(boxed, mesh, rules)
      # Shifted away from zero so the zero-initialised control parts do real work.
      params = jax.jit(lambda r: jax.tree.map(lambda p: p + 0.05, nn.meta.unbox(init(r))),
                       out_shardings=shardings)(key)
      k = params["unet"]["encoder"]["down_1_0"]["conv_0"]["kernel"]
      assert "fsdp" in str(k.sharding.spec), k.sharding.spec
      assert k.addressable_shards[0].data.shape[-1] == k.shape[-1] // 4
      tk = params["control"]["encoder"]["down_0_0"]["temporal"]["conv"]["kernel"]
      assert tk.addressable_shards[0].data.shape[-1] == tk.shape[-1] // 4
      split = [a for a in jax.tree.leaves(params)
               if a.addressable_shards[0].data.shape != a.shape]
      print("split params", len(split), "of", len(jax.tree.leaves(params)))
      assert len(split) > len(jax.tree.leaves(params)) // 2

      batch = NamedSharding(mesh, P(("data", "fsdp")))
      x, steps, cond = jax.device_put((x, steps, cond), batch)

      def apply(p, x, steps, cond, model=model):
        with nn.logical_axis_rules(rules):
          return model.apply({"params": p}, x, steps, cond)

      out = jax.jit(apply)(params, x, steps, cond)   # bf16 compute, sharded
      assert out.shape == x.shape and out.dtype == jnp.float32
      assert out.sharding.spec[0] is not None, out.sharding
      # Reference: float32 on one device. The bf16, sharded result must agree to bf16 precision.
      one = jax.devices()[0]
      f32 = lambda *a: apply(*a, model=U.ControlledVideoUNet(cfg))
      ref = np.asarray(jax.jit(f32)(jax.device_put(params, one),
                                    *jax.device_put((x, steps, cond), one)))
      err = float(np.abs(np.asarray(out) - ref).max() / np.abs(ref).max())
      print("max rel err", err)
      assert 0 < err < 0.05, err
      print("OK")
  """))
  proc = run_python([str(script)], devices=8, timeout=300)
  assert "OK" in proc.stdout, proc.stdout


def test_docs_quote_current_sizes():
  line = unet_lib.size_report("base128")
  with open(os.path.join(REPO, "docs", "video_model.md")) as f:
    assert line in f.read(), f"docs/video_model.md lacks the current size line:\n{line}"
