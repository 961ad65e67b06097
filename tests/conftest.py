"""Shared test set-up: CPU only, quiet logs, a helper to run code in a fresh process."""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# One persistent compilation cache for the session, set before JAX is imported: this process
# and every process the tests start (which inherit the variable) compile each program once.
# Many tests start `launch/*.py` processes that compile the same tiny programs; on a 2-core CPU
# compilation is most of their time.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="vlogger_jax_test_jit_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  atexit.register(shutil.rmtree, _CACHE, True)
# One folder for the session's tiny synthetic dataset, shared the same way by the test processes
# that pytest-xdist starts: the first to need it builds it under builders.prepare's lock file, the
# others wait for it and read it (tests that change a dataset copy it first).
if "VLOGGER_TEST_DATA_DIR" not in os.environ:
  _DATA = tempfile.mkdtemp(prefix="vlogger_jax_test_data_")
  os.environ["VLOGGER_TEST_DATA_DIR"] = _DATA
  atexit.register(shutil.rmtree, _DATA, True)

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(args, *, devices=1, env=None, timeout=600, check=True):
  """Runs `python args...` in a fresh process with `devices` fake CPU devices; returns the result."""
  full_env = dict(os.environ)
  full_env["JAX_PLATFORMS"] = "cpu"
  full_env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  full_env["PYTHONPATH"] = REPO + os.pathsep + full_env.get("PYTHONPATH", "")
  full_env.update(env or {})
  proc = subprocess.run([sys.executable, *args], cwd=REPO, env=full_env, capture_output=True,
                        text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f"command {args} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                         f"{proc.stderr[-6000:]}")
  return proc


@pytest.fixture
def python_runner():
  return run_python


@pytest.fixture(scope="session")
def synthetic_tiny():
  """(data_dir, dataset folder) of the `tiny` synthetic dataset, built once per test session."""
  # Imported here, not at the top: every test session loads this file, and the builders bring
  # JAX, TFDS and the renderer (about 2 s) that most test files never use.
  from vlogger_jax.data import builders  # pylint: disable=g-import-not-at-top
  data_dir = os.environ["VLOGGER_TEST_DATA_DIR"]
  return data_dir, builders.ensure_synthetic(data_dir, "tiny")


def random_params(model, seed=0):
  """Parameters of `model`'s shapes drawn with NumPy, without compiling `model.init` (the tiny
  video model's init compiles for ~20 s on CPU): kernels N(0, 1 / fan_in), biases N(0, 0.02²),
  scales 1, the motion statistics mean 0 and std 1, anything else N(0, 0.02²). Unlike a real
  init no layer is zero (ControlNet's zero convolutions, the UNet's output convolution), so
  every input (reference, controls, context) reaches the output."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  abstract = nn.meta.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0)))

  def draw(path, a):
    name = str(getattr(path[-1], "key", path[-1]))
    shape, dtype = a.shape, a.dtype
    if name == "kernel":
      fan_in = int(np.prod(shape[:-1])) or 1
      v = rng.normal(0.0, fan_in ** -0.5, shape)
    elif name in ("scale", "std"):
      v = np.ones(shape)
    elif name == "mean":
      v = np.zeros(shape)
    else:
      v = rng.normal(0.0, 0.02, shape)
    return np.asarray(v, dtype)

  return jax.tree_util.tree_map_with_path(draw, abstract)


# The tiny stages' configs for generation tests: the motion model with a short window (48 frames,
# overlap 24) so that a few seconds of speech span several windows; the 32² video model.
TINY_STAGES = {"motion": ("configs/motion.py:tiny", {"data.max_frames": 48,
                                                     "sampling.overlap": 24}),
               "video": ("configs/base128.py:tiny", {"pretrained": "none"})}


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
  """{'motion': path, 'video': path}: weights files (float32) of the tiny stages with random
  parameters (random_params), written once per test session."""
  from vlogger_jax import models  # pylint: disable=g-import-not-at-top
  from vlogger_jax.models import weights  # pylint: disable=g-import-not-at-top
  from vlogger_jax.train import config_lib  # pylint: disable=g-import-not-at-top
  folder = tmp_path_factory.mktemp("weights")
  out = {}
  for kind, (spec, overrides) in TINY_STAGES.items():
    config = config_lib.overridden(config_lib.load_config_file(os.path.join(REPO, spec)),
                                   **overrides)
    config = models.resolve(config)
    model = models.build(config)
    out[kind] = weights.save(str(folder / f"{kind}.npz"), config, random_params(model), 0,
                             dtype="float32")
  return out


@pytest.fixture(scope="session")
def tiny_reference(tmp_path_factory):
  """Path of a reference file (.npz) of held-out synthetic identity 0 at 32², written once per
  test session (rendering it compiles the renderer: ~5 s on CPU)."""
  from vlogger_jax.inference import reference  # pylint: disable=g-import-not-at-top
  path = tmp_path_factory.mktemp("reference") / "synthetic0.npz"
  return reference.synthetic(0, 32).save(str(path))


def detector_or_skip():
  """The landmark detector's environment (detector.check()), or a skip where it is not
  installed; a failure where VLOGGER_REQUIRE_DETECTOR is set (CI installs it, so there its
  tests must not skip)."""
  from vlogger_jax import detector  # pylint: disable=g-import-not-at-top  (two test files)
  try:
    return detector.check()
  except detector.DetectorError as e:
    if os.environ.get("VLOGGER_REQUIRE_DETECTOR", "") not in ("", "0"):
      pytest.fail(str(e))
    pytest.skip(str(e))
