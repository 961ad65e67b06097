"""The README's first command, generation, run from a clean checkout: it makes a playable mp4.

The command as written takes about 5 minutes on 2 cores (`slow`); CI runs it with fewer sampler
steps (the same image, text, weights and output). The install part (`pip install -e ...`) is
CI's own first step, so the tests run what follows `&&`.
"""

import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

from vlogger_jax import contracts
from vlogger_jax import video_io

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEWER_STEPS = ["--video_steps=1", "--motion_steps=4"]


def readme_first_command() -> list[str]:
  readme = open(os.path.join(REPO, "README.md")).read()
  block = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, re.S).group(1)
  line = block.strip().splitlines()[0]
  assert line.startswith("pip install -e"), line
  cmd = line.split("&&", 1)[1].strip()
  assert cmd.startswith("python launch/generate.py"), cmd
  return shlex.split(cmd)


def _clean_checkout(tmp_path) -> str:
  """A clone of the committed tree (the shipped weights come with it), as a newcomer has."""
  clone = str(tmp_path / "checkout")
  subprocess.run(["git", "clone", "-q", "--no-hardlinks", REPO, clone], check=True)
  return clone


def _audio_seconds(path: str) -> float:
  """Duration of the mp4's audio stream, from ffmpeg decoding it (ffprobe is not shipped)."""
  import imageio_ffmpeg  # pylint: disable=g-import-not-at-top  (only for this check)
  out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", path, "-map",
                        "0:a:0", "-f", "null", "-"], capture_output=True, text=True)
  assert "Audio:" in out.stderr, out.stderr[-2000:]
  times = re.findall(r"time=(\d+):(\d+):(\d+\.\d+)", out.stderr)
  h, m, s = times[-1]
  return int(h) * 3600 + int(m) * 60 + float(s)


def _run_and_check(tmp_path, extra: list[str], timeout: int) -> None:
  if not os.path.isdir(os.path.join(REPO, ".git")):
    pytest.skip("not a git checkout")
  clone = _clean_checkout(tmp_path)
  argv = readme_first_command()
  env = dict(os.environ, PYTHONPATH=clone, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable] + argv[1:] + extra, cwd=clone, env=env,
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = [a.split("=", 1)[1] for a in argv if a.startswith("--out=")][0]
  path = os.path.join(clone, out)
  frames, fps = video_io.read_video(path)
  assert fps == contracts.FPS and frames.shape[1:] == (128, 128, 3)
  assert frames.shape[0] > 2 * contracts.FPS            # the sentence lasts seconds
  assert abs(_audio_seconds(path) - frames.shape[0] / contracts.FPS) < 0.15
  # A person, not noise or a flat frame: frames differ from each other but stay close to the
  # first (the same person and background throughout).
  f = frames.astype(np.float32)
  assert f.std() > 20 and np.abs(f[1:] - f[:-1]).mean() < 25
  assert "wrote hello.mp4" in proc.stdout or out in proc.stdout


@pytest.mark.slow
def test_readme_first_command_makes_a_playable_mp4(tmp_path):
  _run_and_check(tmp_path, [], timeout=1800)


def test_readme_first_command_with_fewer_steps_makes_a_playable_mp4(tmp_path):
  _run_and_check(tmp_path, FEWER_STEPS, timeout=900)
