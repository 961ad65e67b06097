"""Shared test set-up: CPU only, quiet logs, a helper to run code in a fresh process."""

import os
import subprocess
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

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
def synthetic_tiny(tmp_path_factory):
  """(data_dir, dataset folder) of the `tiny` synthetic dataset, built once per test session."""
  # Imported here, not at the top: every test session loads this file, and the builders bring
  # JAX, TFDS and the renderer (about 2 s) that most test files never use.
  from vlogger_jax.data import builders  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp("data"))
  return data_dir, builders.ensure_synthetic(data_dir, "tiny")
