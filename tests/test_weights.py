"""Weights files (vlogger_jax/models/weights.py): round trips in float32 and bfloat16, loading
through models.loading, the one-sentence errors, and launch/export_weights.py on a real run."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import REPO, TINY_STAGES, random_params, run_python

from vlogger_jax import models
from vlogger_jax.models import loading
from vlogger_jax.models import weights
from vlogger_jax.train import config_lib

EXPORT = os.path.join(REPO, "launch", "export_weights.py")
TRAIN = os.path.join(REPO, "launch", "train.py")


def _flat(tree):
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.fixture(scope="module")
def motion():
  """(config, model, random parameters) of the tiny motion model."""
  spec, overrides = TINY_STAGES["motion"]
  config = models.resolve(config_lib.overridden(
      config_lib.load_config_file(os.path.join(REPO, spec)), **overrides))
  model = models.build(config)
  return config, model, random_params(model, seed=3)


def test_float32_round_trip_is_exact(tmp_path, motion):
  config, _, params = motion
  path = weights.save(str(tmp_path / "m.npz"), config, params, 123, dtype="float32",
                      source="/runs/m")
  model, back, config_back, step = weights.load(path)
  assert step == 123 and isinstance(model, type(motion[1]))
  assert config_back.to_dict() == json.loads(json.dumps(config.to_dict()))
  a, b = _flat(params), _flat(back)
  assert a.keys() == b.keys()
  for k in a:
    assert b[k].dtype == a[k].dtype, k
    np.testing.assert_array_equal(b[k], a[k], err_msg=k)
  saved, saved_step = weights.read_config(path)
  assert isinstance(saved, ml_collections.ConfigDict) and saved_step == 123
  assert saved.task == "motion"
  with np.load(path) as f:
    assert json.loads(str(f["__meta__"]))["source"] == "/runs/m"


def test_bfloat16_round_trip_is_within_bfloat16_rounding(tmp_path, motion):
  config, _, params = motion
  half = weights.save(str(tmp_path / "half.npz"), config, params, 0)       # bfloat16: default
  full = weights.save(str(tmp_path / "full.npz"), config, params, 0, dtype="float32")
  assert os.path.getsize(half) < 0.7 * os.path.getsize(full)
  _, back, _, _ = weights.load(half)
  a, b = _flat(params), _flat(back)
  for k in a:
    assert b[k].dtype == a[k].dtype == np.float32, k          # cast back to the model's dtype
    np.testing.assert_array_equal(b[k], a[k].astype(jnp.bfloat16).astype(np.float32),
                                  err_msg=k)
    # bfloat16 keeps 8 significant bits: relative error at most 2^-8 (round to nearest).
    np.testing.assert_allclose(b[k], a[k], rtol=2.0 ** -8, atol=0, err_msg=k)
  kept = weights.save(str(tmp_path / "kept.npz"), config, params, 0, dtype=None)
  for k, v in _flat(weights.load(kept)[1]).items():
    np.testing.assert_array_equal(v, a[k])


def test_loading_a_weights_file_gives_a_model_that_generates(tiny_weights):
  loaded = loading.load(tiny_weights["motion"], expect=("motion",))
  assert loaded.step == 0 and loaded.workdir == tiny_weights["motion"]
  assert models.kind(loaded.config) == "motion"
  mel = np.random.default_rng(0).normal(size=(1, 30, 256)).astype(np.float32)
  cfg = loaded.model.sampler_config(sampler="ddim", num_steps=3)
  keys = jax.random.PRNGKey(0)[None]
  out = np.asarray(loaded.model.jitted_generate(loaded.params, mel, keys, cfg))
  assert out.shape == (1, 30, 223) and np.all(np.isfinite(out)) and out.std() > 0.1
  again = np.asarray(loaded.model.jitted_generate(loaded.params, mel, keys, cfg))
  np.testing.assert_array_equal(out, again)
  with pytest.raises(loading.LoadError, match="holds a 'motion' model; expected 'video'"):
    loading.load(tiny_weights["motion"], expect=("video",))


def _one_sentence(error):
  text = str(error)
  assert "\n" not in text and text.endswith("."), text
  return text


def test_bad_weights_files_give_one_sentence(tmp_path, motion):
  config, _, params = motion
  with pytest.raises(weights.WeightsError, match="does not end in .npz") as e:
    weights.save(str(tmp_path / "m.bin"), config, params, 0)
  _one_sentence(e.value)
  assert not os.listdir(tmp_path)

  good = weights.save(str(tmp_path / "good.npz"), config, params, 7, dtype="float32")
  with np.load(good) as f:
    data = {k: f[k] for k in f.files}

  def variant(name, **changes):
    d = dict(data)
    for k, v in changes.items():
      if v is None:
        del d[k]
      else:
        d[k] = v
    np.savez(tmp_path / name, **d)
    return str(tmp_path / name)

  meta = json.loads(str(data["__meta__"]))
  other = variant("other.npz", __meta__=np.array(json.dumps(dict(meta, format="weights/0"))))
  first = next(k for k in data if not k.startswith("__"))
  missing = variant("missing.npz", **{first: None})
  extra = variant("extra.npz", **{"model/extra/kernel": np.zeros(3, np.float32)})
  shaped = variant("shaped.npz", **{first: np.zeros(data[first].shape + (2,), np.float32)})
  random_npz = str(tmp_path / "random.npz")
  np.savez(random_npz, x=np.ones(3))
  garbage = tmp_path / "garbage.npz"
  garbage.write_bytes(np.random.default_rng(0).bytes(1000))
  cases = [(str(tmp_path / "none.npz"), "does not exist"),
           (str(garbage), "is not a valid .npz archive"),
           (random_npz, "has no __meta__/__config__ entries"),
           (other, "has format 'weights/0'; this version of vlogger_jax reads "
                   "'vlogger_jax.weights/1'"),
           (missing, f"lacks '{first}' \\(1 missing, 0 unknown\\)"),
           (extra, "has an unknown parameter 'model/extra/kernel'"),
           (shaped, f"holds '{first}' of shape")]
  for path, words in cases:
    with pytest.raises(weights.WeightsError, match=words) as e:
      weights.load(path)
    _one_sentence(e.value)
    with pytest.raises(loading.LoadError, match=words) as e:    # through loading.load too
      loading.load(path)
    _one_sentence(e.value)
  assert weights.is_weights_file(good) and not weights.is_weights_file(str(tmp_path))


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
  """A real run directory: launch/train.py, toy tiny, 5 steps, one checkpoint."""
  workdir = tmp_path_factory.mktemp("toy_run")
  run_python([TRAIN, "--config=configs/toy.py:tiny", f"--workdir={workdir}",
              "--config.num_train_steps=5", "--config.checkpoint.every=5",
              "--config.eval_every=0", "--config.log_every=5"], timeout=300)
  return str(workdir)


def test_export_weights_writes_a_file_that_loads(toy_run, tmp_path):
  out = str(tmp_path / "toy.npz")
  proc = run_python([EXPORT, f"--run={toy_run}", f"--out={out}", "--dtype=float32"],
                    timeout=300)
  assert "wrote" in proc.stdout and "toy model, step 5" in proc.stdout
  run = loading.load(toy_run)
  from_file = loading.load(out)
  assert from_file.step == run.step == 5
  assert from_file.config.to_dict() == run.config.to_dict()
  a, b = _flat(run.params), _flat(from_file.params)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(b[k], a[k], err_msg=k)
  x = from_file.model.generate(from_file.params, jax.random.PRNGKey(0), 4, num_steps=3)
  y = run.model.generate(run.params, jax.random.PRNGKey(0), 4, num_steps=3)
  np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert sorted(os.listdir(tmp_path)) == ["toy.npz"]          # no temporary file left


def test_export_weights_error_is_one_line(toy_run, tmp_path):
  proc = run_python([EXPORT, f"--run={toy_run}", f"--out={tmp_path / 'a.bin'}"], check=False,
                    timeout=300)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = proc.stderr.strip().splitlines()
  assert lines[-1].startswith("error: ") and "does not end in .npz" in lines[-1], proc.stderr
  assert os.listdir(tmp_path) == []
