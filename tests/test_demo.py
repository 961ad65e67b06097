"""launch/demo.py end to end: the server as a process on a free localhost port, driven through
its HTTP API with urllib as the page's fetch() drives it: a synthetic identity and text make
playable mp4s (the sample and the controls video), a bad upload and a bad option are each the pipeline's one sentence,
and the server serves a good request after them. The stages are the tiny ones with random
parameters (conftest.tiny_weights), sampled with DDIM in one step.

Also the Colab notebook: its cells are notebooks/colab_script.py's (checked here, fast), and
the script itself trains the tiny stages and generates a video on a CPU (`slow`: minutes).
"""

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import REPO, run_python

from vlogger_jax import contracts
from vlogger_jax import video_io

DEMO = os.path.join(REPO, "launch", "demo.py")
NOTEBOOKS = os.path.join(REPO, "notebooks")
FAST = ["--motion_sampler=ddim", "--motion_steps=1", "--video_sampler=ddim", "--video_steps=1"]


@pytest.fixture(scope="module")
def server(tiny_weights):
  """The demo's base URL, its process serving the tiny stages."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.Popen([sys.executable, DEMO, "--port=0", f"--motion={tiny_weights['motion']}",
                           f"--video={tiny_weights['video']}", *FAST], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    line = proc.stdout.readline()   # printed once the stages are loaded and the port is bound
    assert line.startswith("serving the demo on http://127.0.0.1:"), (line, proc.stderr.read())
    yield line.split(" on ", 1)[1].split()[0].rstrip("/")
  finally:
    proc.terminate()
    proc.wait(timeout=30)


def _get(url):
  with urllib.request.urlopen(url, timeout=30) as r:
    return r.read()


def _generate(base, request, timeout=120):
  """The finished job's JSON of one request, polled as the page polls it."""
  body = json.dumps(request).encode()
  sent = json.loads(urllib.request.urlopen(urllib.request.Request(
      base + "/api/generate", data=body, method="POST"), timeout=30).read())
  deadline = time.time() + timeout
  seen = set()
  while time.time() < deadline:
    job = json.loads(_get(f"{base}/api/jobs/{sent['job']}"))
    seen.add(job["stage"])
    if job["state"] in ("done", "error"):
      return job, seen
    time.sleep(0.2)
  raise AssertionError(f"request {sent['job']} did not finish in {timeout} s")


def _check_video(base, url, tmp_path, name, width):
  path = tmp_path / name
  path.write_bytes(_get(base + url))
  frames, fps = video_io.read_video(str(path))
  assert fps == contracts.FPS
  assert frames.shape[1:] == (32, width, 3) and frames.shape[0] >= 10, frames.shape
  return frames


def test_page_and_info(server):
  page = _get(server + "/").decode()
  assert "<form" in page and "/api/generate" in page
  assert json.loads(_get(server + "/api/info"))["resolutions"] == [32]


def test_text_to_video_then_a_bad_upload_then_another_video(server, tmp_path):
  good = {"identity": "synthetic:1", "text": "Hi there.", "num_samples": 1, "seed": 3}
  job, stages = _generate(server, good)
  assert job["state"] == "done", job["error"]
  assert {"speech", "motion", "video 32²", "encode"} <= stages, stages  # the progress shown
  first = _check_video(server, job["videos"][0], tmp_path, "a.mp4", 32)
  _check_video(server, job["controls"], tmp_path, "a_controls.mp4", 64)

  photo = {"name": "me.png", "data": base64.b64encode(b"\x89PNG\r\n\x1a\nnot really").decode()}
  job, _ = _generate(server, dict(good, identity="upload", image=photo))
  assert job["state"] == "error"
  assert job["error"].startswith("image file 'me.png' cannot be read as an image"), job["error"]
  assert "Traceback" not in job["error"] and job["error"].count(". ") == 0, job["error"]

  job, _ = _generate(server, dict(good, num_samples=99))
  assert job["error"] == "num_samples is 99; expected 1 to 4 (--max_samples).", job["error"]

  # The server still serves. The same text and batch size: a clip of fewer than 4 video windows
  # (the pipeline's windows_per_chunk) or another batch size compiles the samplers anew (~30 s).
  job, _ = _generate(server, dict(good, identity="synthetic:2", seed=4))
  assert job["state"] == "done", job["error"]
  assert len(job["videos"]) == 1
  second = _check_video(server, job["videos"][0], tmp_path, "b.mp4", 32)
  assert not np.array_equal(second[:10], first[:10])   # another identity, another video


def test_the_notebook_is_the_script():
  sys.path.insert(0, NOTEBOOKS)
  try:
    import build_notebook  # pylint: disable=g-import-not-at-top  (not a package: notebooks/)
  finally:
    sys.path.remove(NOTEBOOKS)
  with open(build_notebook.NOTEBOOK) as f:
    written = f.read()
  assert written == build_notebook.notebook(), (
      "notebooks/vlogger_jax_colab.ipynb differs from notebooks/colab_script.py; run "
      "python notebooks/build_notebook.py")
  kinds = [c["cell_type"] for c in json.loads(written)["cells"]]
  assert kinds[0] == "markdown" and kinds.count("code") >= 5, kinds


@pytest.mark.slow
def test_the_notebook_script_trains_and_generates(tmp_path):
  work = tmp_path / "work"
  proc = run_python(["notebooks/colab_script.py"], timeout=1800, env={
      "VLOGGER_NOTEBOOK_QUICK": "1", "VLOGGER_NOTEBOOK_WORKDIR": str(work)})
  assert "JAX " in proc.stdout and "x CPU" in proc.stdout, proc.stdout[-2000:]
  frames, fps = video_io.read_video(str(work / "colab.mp4"))
  assert fps == contracts.FPS and frames.shape[1:] == (32, 32, 3) and frames.shape[0] >= 10
