"""launch/generate.py end to end: image + speech -> mp4, its side outputs, reenactment, the
one-line errors of bad inputs (leaving no output behind), converted images, and Ctrl-C.

The stages are the tiny motion and video models with random parameters (conftest.tiny_weights)
at 32², sampled with DDIM in 2-3 steps. Every process compiles its samplers, which on a 2-core
CPU costs more than the rest, so the processes share the session's persistent JAX compilation
cache (conftest.py: the first run fills it, the others load from it, and so do the in-process
generations of tests/test_inference.py, which use the same chunk shapes and batch sizes), share
one clip length and batch size where they can, and run two at a time. The bad-input cases run
in two processes that each call generate.main once per case, with the flags parsed afresh (what
a process per case would do, without ~3 s of imports each); a few of them also run as processes
of their own, for the exit status and the absence of a traceback through absl's app.run.
"""

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import time
import wave

import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from vlogger_jax import audio as audio_lib
from vlogger_jax import video_io

GENERATE = os.path.join(REPO, "launch", "generate.py")
FAST = ["--video_sampler=ddim", "--video_steps=2", "--motion_sampler=ddim", "--motion_steps=3"]
SPEECH_SECONDS = 1.2                      # 19200 samples: 28 frames (5+ video windows of 8)
FRAMES = int(SPEECH_SECONDS * 16000) * 24 // 16000


def _write_wav(path, seconds, silent=False):
  t = np.arange(int(seconds * 16000)) / 16000
  tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
  pcm = np.zeros(t.size, np.int16) if silent else (tone * 32767).astype(np.int16)
  with wave.open(str(path), "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(16000)
    w.writeframes(pcm.tobytes())
  return str(path)


def _env():
  """The session's environment: its persistent compilation cache (conftest.py) included, so
  that what these processes compile serves the later tests too (tests/test_inference.py)."""
  env = dict(os.environ)
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""))
  return env


class Inputs:
  """The files every case reads, in one folder."""

  def __init__(self, folder, weights, reference):
    self.folder, self.weights, self.reference = folder, weights, reference
    self.images = _images(folder, reference)
    self.speech = _write_wav(folder / "speech.wav", SPEECH_SECONDS)
    self.long = _write_wav(folder / "long.wav", 6.0)
    self.silent = _write_wav(folder / "silent.wav", 1.0, silent=True)
    rng = np.random.default_rng(0)
    self.empty = str(folder / "empty.wav")
    open(self.empty, "wb").close()
    self.not_audio = str(folder / "notes.wav")
    with open(self.not_audio, "w") as f:
      f.write("these are notes, not audio\n" * 20)
    self.noise_png = str(folder / "noise.png")
    with open(self.noise_png, "wb") as f:
      f.write(rng.bytes(3000))
    self.photo = str(folder / "photo.png")
    Image.new("RGB", (32, 32), (120, 90, 60)).save(self.photo)
    self.empty_dir = folder / "empty_run"
    self.empty_dir.mkdir()
    self.random_npz = str(folder / "random.npz")
    np.savez(self.random_npz, a=rng.normal(size=(4, 4)))
    self.other_format = str(folder / "other_format.npz")
    with np.load(weights["video"]) as f:
      data = {k: f[k] for k in f.files}
    meta = json.loads(str(data["__meta__"]))
    meta["format"] = "vlogger_jax.weights/999"
    data["__meta__"] = np.array(json.dumps(meta))
    np.savez(self.other_format, **data)

  def args(self, out, *extra, image=None, speech=True):
    image = image or self.reference
    base = [f"--image={image}", f"--out={out}", f"--motion={self.weights['motion']}",
            f"--video={self.weights['video']}", *FAST]
    return base + ([f"--audio={self.speech}"] if speech else []) + list(extra)


def _run(inputs, args, timeout=300):
  return subprocess.run([sys.executable, GENERATE, *args], cwd=REPO, env=_env(),
                        capture_output=True, text=True, timeout=timeout)


# The bad-input cases: one process calls generate.main for each, the flags parsed afresh, and
# reports (return value, stderr); an unexpected exception comes back as its traceback.
_DRIVER = r"""
import contextlib, io, json, os, sys, traceback
sys.path.insert(0, os.path.join(os.getcwd(), "launch"))
import generate
from absl import flags

results = []
for case in json.load(open(sys.argv[1])):
  flags.FLAGS.unparse_flags()
  err = io.StringIO()
  real_access = os.access
  if case.get("unwritable"):   # as a non-root user sees a read-only folder
    folder = case["unwritable"]
    os.access = lambda p, mode, **kw: (False if os.path.abspath(p) == folder and mode & os.W_OK
                                       else real_access(p, mode, **kw))
  try:
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
      rc = generate.main(flags.FLAGS(["generate.py", *case["args"]]))
  except BaseException:  # pylint: disable=broad-except
    rc = None
    err.write(traceback.format_exc())
  finally:
    os.access = real_access
  results.append({"rc": rc, "stderr": err.getvalue()})
json.dump(results, sys.stdout)
"""


def _run_cases(inputs, cases, name):
  spec = inputs.folder / f"{name}.json"
  spec.write_text(json.dumps(cases))
  proc = subprocess.run([sys.executable, "-c", _DRIVER, str(spec)], cwd=REPO,
                        env=_env(), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-4000:]
  return json.loads(proc.stdout)


def _error_cases(inputs, tmp):
  """name -> (args, key words of the message, folder that must stay free of videos)."""
  out = lambda name: str(tmp / name / "out.mp4")
  a = inputs.args
  missing_folder = str(tmp / "missing_folder" / "no" / "out.mp4")
  cases = {
      "missing_image": (a(out("missing_image"), image=str(tmp / "none.png")),
                        ["image file", "does not exist"]),
      "unreadable_image": (a(out("unreadable_image"), image=inputs.noise_png),
                           ["cannot be read as an image"]),
      "image_without_params": (a(out("image_without_params"), image=inputs.photo),
                               ["photo.png", "32x32 pixels", "at least 64 pixels"]),
      "missing_audio": (a(out("missing_audio"), f"--audio={tmp / 'none.wav'}", speech=False),
                        ["none.wav", "does not exist"]),
      "not_audio": (a(out("not_audio"), f"--audio={inputs.not_audio}", speech=False),
                    ["notes.wav"]),
      "empty_audio": (a(out("empty_audio"), f"--audio={inputs.empty}", speech=False),
                      ["empty.wav"]),
      "silent_audio": (a(out("silent_audio"), f"--audio={inputs.silent}", speech=False),
                       ["silent"]),
      "long_audio": (a(out("long_audio"), "--max_seconds=0.5"),
                     ["1.2 s", "longer than the limit of 0.5 s", "--max_seconds"]),
      "empty_text": (a(out("empty_text"), "--text= ", speech=False), ["--text"]),
      "bad_rate": (a(out("bad_rate"), "--text=Hello.", "--rate=1000", speech=False),
                   ["--text", "rate 1000"]),
      "audio_and_text": (a(out("audio_and_text"), "--text=Hello."),
                         ["both --audio and --text"]),
      "no_speech": (a(out("no_speech"), speech=False), ["no speech was given"]),
      "wrong_stage": (a(out("wrong_stage"), f"--video={inputs.weights['motion']}"),
                      ["--video", "'motion' model", "expected 'video'"]),
      "empty_run_dir": (a(out("empty_run_dir"), f"--video={inputs.empty_dir}"),
                        ["--video", "neither a run directory"]),
      "missing_run_dir": (a(out("missing_run_dir"), f"--video={tmp / 'no_run'}"),
                          ["--video", "no_run"]),
      "other_format": (a(out("other_format"), f"--video={inputs.other_format}"),
                       ["--video", "format", "vlogger_jax.weights/999"]),
      "random_npz": (a(out("random_npz"), f"--video={inputs.random_npz}"),
                     ["--video", "random.npz", "not another .npz"]),
      "resolution": (a(out("resolution"), "--resolution=256"),
                     ["resolution 256 cannot be reached", "32"]),
      "num_samples": (a(out("num_samples"), "--num_samples=0"), ["num_samples is 0"]),
      "missing_folder": (a(missing_folder), ["--out", "does not exist"]),
      "unwritable": (a(out("unwritable")), ["--out", "not writable"]),
      "not_mp4": (a(str(tmp / "not_mp4" / "out.mov")), ["--out", "does not end in .mp4"]),
  }
  for name in cases:
    (tmp / name).mkdir(parents=True)
  return cases


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_weights, tiny_reference):
  return Inputs(tmp_path_factory.mktemp("inputs"), tiny_weights, tiny_reference)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, inputs):
  """name -> CompletedProcess (or the driver's dict) of every case, run two at a time."""
  tmp = tmp_path_factory.mktemp("runs")
  first = tmp / "first"
  first.mkdir()
  errors = _error_cases(inputs, tmp / "errors")
  (tmp / "errors" / "unwritable").chmod(0o555)
  items = [(k, v[0], {"unwritable": str(tmp / "errors" / "unwritable")} if k == "unwritable"
            else {}) for k, v in errors.items()]
  results = {"_tmp": tmp, "_errors": errors, "_seconds": {}}

  def timed(name, fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    results["_seconds"][name] = time.perf_counter() - start
    return out

  images = inputs.images
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    # The first run fills the compilation cache for batch 1 (the later runs wait for it); the
    # samples run compiles batch 2 alongside; the error cases need no sampler.
    futures = {"first": pool.submit(timed, "first", _run, inputs, inputs.args(
        str(first / "talk.mp4"), f"--save_params={first / 'params.npz'}",
        f"--save_reference={first / 'ref.npz'}", f"--controls_video={first / 'controls.mp4'}",
        image="synthetic:0"))}
    futures["samples_rgba"] = pool.submit(timed, "samples_rgba", _run, inputs, inputs.args(
        str(tmp / "samples.mp4"), "--num_samples=2", f"--save_params={tmp / 'samples.npz'}",
        f"--params={inputs.reference}", image=images["rgba"]))
    halves = [items[0::2], items[1::2]]
    drivers = [pool.submit(timed, f"cases_{i}", _run_cases, inputs,
                           [dict(args=args, **kw) for _, args, kw in half], f"cases_{i}")
               for i, half in enumerate(halves)]
    futures["not_mp4_error"] = pool.submit(timed, "not_mp4_error", _run, inputs, inputs.args(
        str(tmp / "errors" / "not_mp4" / "out.mov")))
    futures["first"].result()
    ref, params = first / "ref.npz", first / "params.npz"
    # Each run checks two things at once where it can (a process costs ~8 s): a way of giving
    # speech or motion, and a way of giving the reference.
    later = {
        "text_grey": inputs.args(str(tmp / "text_grey.mp4"), f"--params={ref}",
                                 "--text=Hello there, nice to meet you.", image=images["grey"],
                                 speech=False),
        "reenact": inputs.args(str(tmp / "reenact.mp4"), f"--driving_params={params}",
                               image=str(ref), speech=False),
        "deep_huge": inputs.args(str(tmp / "deep_huge.mp4"), f"--params={ref}",
                                 image=images["deep_huge"]),
        "silent_error": inputs.args(str(tmp / "errors" / "silent_audio" / "out.mp4"),
                                    f"--audio={inputs.silent}", speech=False),
    }
    futures.update({k: pool.submit(timed, k, _run, inputs, v) for k, v in later.items()})
    futures["ctrl_c"] = pool.submit(timed, "ctrl_c", _interrupted, inputs, tmp / "ctrl_c")
    for (name, _, _), result in zip(halves[0] + halves[1],
                                    drivers[0].result() + drivers[1].result()):
      results[name] = result
    results.update({k: f.result() for k, f in futures.items()})
  (tmp / "errors" / "unwritable").chmod(0o755)
  print("seconds per process:", {k: round(v, 1) for k, v in results["_seconds"].items()})
  return results


def _interrupted(inputs, folder):
  """(return code, stderr) of a run sent SIGINT once its video stage has made progress."""
  folder.mkdir()
  args = inputs.args(str(folder / "long.mp4"), f"--audio={inputs.long}", speech=False)
  # Its own session, signalled as a group, as a terminal's Ctrl-C is (ffmpeg has its own).
  # SIGINT as a terminal gives it: a shell that starts a job in the background (as CI may run
  # this suite) sets SIGINT to be ignored, which Python then keeps; the wrapper restores
  # Python's own handler before running the command line.
  wrap = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
          "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
  proc = subprocess.Popen([sys.executable, "-c", wrap, GENERATE, *args], cwd=REPO,
                          env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          start_new_session=True)
  lines = []
  try:
    deadline = time.monotonic() + 240
    for line in proc.stderr:
      lines.append(line)
      # Not a tty: the bar prints a line per quarter. One after 0/N: chunks were written.
      if re.search(r"video 32² \[#+-+\] [1-9]\d*/", line) or time.monotonic() > deadline:
        break
    os.killpg(proc.pid, signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
  return proc.returncode, "".join(lines) + (rest or "")


def _images(tmp, ref_path):
  """Converted, not refused: a reference's image as grey, RGBA, and 16-bit grey 2000² PNGs."""
  with np.load(ref_path) as f:
    image = Image.fromarray(f["image"])
  grey = image.convert("L")
  rgba = image.convert("RGBA")
  rgba.putalpha(200)
  huge = np.asarray(grey.resize((2000, 2000), Image.Resampling.NEAREST), np.uint16) * 257
  deep_huge = Image.fromarray(huge)      # 16-bit, 4 megapixels: large, below the 64 MP limit
  out = {}
  for name, im in (("grey", grey), ("rgba", rgba), ("deep_huge", deep_huge)):
    out[name] = str(tmp / f"{name}.png")
    im.save(out[name])
  return out


def _media(path):
  """(duration in seconds, whether there is an AAC audio stream) from `ffmpeg -i`."""
  import imageio_ffmpeg  # pylint: disable=g-import-not-at-top
  proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                        capture_output=True, text=True, timeout=60)
  h, m, s = re.search(r"Duration: (\d+):(\d+):([\d.]+)", proc.stderr).groups()
  return int(h) * 3600 + int(m) * 60 + float(s), bool(re.search(r"Audio: aac", proc.stderr))


def _check_video(path, frames=FRAMES, size=(32, 32)):
  got, fps = video_io.read_video(path)
  assert got.shape == (frames, *size, 3), got.shape
  assert fps == pytest.approx(24.0)
  duration, has_audio = _media(path)
  assert has_audio
  assert duration == pytest.approx(frames / 24, abs=0.1)
  decoded = audio_lib.load_audio(str(path), allow_silent=True)
  assert decoded.size / 16000 == pytest.approx(frames / 24, abs=0.1)
  return got


_BAR = re.compile(r"^ *[\w ²]+ \[[#-]+\] \d+/\d+ ")


def _leftovers(folder):
  return [f for f in os.listdir(folder) if f.endswith(".mp4") or f.startswith(".tmp_")]


# --- videos ---

def _ok(result):
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  return result


def test_speech_from_a_file_gives_an_mp4_with_its_audio(runs):
  first = runs["_tmp"] / "first"
  frames = _check_video(first / "talk.mp4")
  assert frames.std() > 5        # not a blank picture
  assert f"{FRAMES} frames (1.2 s) at 32x32" in _ok(runs["first"]).stdout
  assert not [f for f in os.listdir(first) if f.startswith(".tmp_")]


def test_speech_from_text_and_a_grey_image(runs):
  result = _ok(runs["text_grey"])
  frames = int(re.search(r"(\d+) frames", result.stdout).group(1))
  assert frames > 12
  _check_video(runs["_tmp"] / "text_grey.mp4", frames)


def test_several_samples_give_one_file_each(runs):
  _ok(runs["samples_rgba"])      # from an RGBA image
  tmp = runs["_tmp"]
  assert not (tmp / "samples.mp4").exists()
  a, b = (_check_video(tmp / f"samples_{i}.mp4") for i in range(2))
  assert np.abs(a.astype(float) - b).mean() > 1.0          # two samples, not one twice
  for i in range(2):
    with np.load(tmp / f"samples_{i}.npz") as f:
      assert f["expression"].shape == (FRAMES, 64)


def test_controls_video_is_twice_as_wide(runs):
  first = runs["_tmp"] / "first"
  both = _check_video(first / "controls.mp4", size=(32, 64))
  video, _ = video_io.read_video(first / "talk.mp4")
  left, right = both[..., :32, :].astype(float), both[..., 32:, :].astype(float)
  # The result on the left (random weights draw noise, which H.264 keeps to a few grey levels),
  # the rendered controls on the right.
  assert np.abs(left - video).mean() < 8.0
  assert np.abs(right - video).mean() > 30.0


def test_saved_params_hold_per_frame_parameters(runs):
  with np.load(runs["_tmp"] / "first" / "params.npz") as f:
    params = {k: f[k] for k in f.files}
  assert params["expression"].shape == (FRAMES, 64)
  assert params["head_pose"].shape == (FRAMES, 9)
  assert params["body_keypoints"].shape == (FRAMES, 75, 2)
  assert params["body_visibility"].shape == (FRAMES, 75)
  assert params["shape"].shape == (64,) and params["fov"].shape == ()


def test_a_saved_reference_reenacted_by_saved_params(runs):
  result = _ok(runs["reenact"])
  assert "synthetic identity 0" in result.stdout             # the saved reference's name
  _check_video(runs["_tmp"] / "reenact.mp4", FRAMES)        # the driving clip's length


def test_a_large_16_bit_image_is_converted_not_refused(runs):
  _ok(runs["deep_huge"])       # grey and RGBA: test_speech_from_text..., test_several_samples...
  _check_video(runs["_tmp"] / "deep_huge.mp4")


# --- bad inputs ---

@pytest.mark.parametrize("name", ["missing_image", "unreadable_image", "image_without_params",
                                  "missing_audio", "not_audio", "empty_audio", "silent_audio",
                                  "long_audio", "empty_text", "bad_rate", "audio_and_text",
                                  "no_speech", "wrong_stage", "empty_run_dir", "missing_run_dir",
                                  "other_format", "random_npz", "resolution", "num_samples",
                                  "missing_folder", "unwritable", "not_mp4"])
def test_bad_input_gives_one_line_and_no_file(runs, name):
  result = runs[name]
  words = runs["_errors"][name][1]
  assert result["rc"] == 1, result["stderr"][-3000:]
  lines = result["stderr"].strip().splitlines()
  # The last line is the error, one sentence; before it at most the bars of stages that ran.
  assert lines and lines[-1].startswith("error: "), result["stderr"][-3000:]
  assert all(_BAR.match(l) for l in lines[:-1]), result["stderr"][-3000:]
  assert "Traceback" not in result["stderr"]
  for w in words:
    assert w in lines[-1], (w, lines[-1])
  assert lines[-1].endswith("."), lines[-1]
  folder = runs["_tmp"] / "errors" / name
  assert _leftovers(folder) == [], _leftovers(folder)


@pytest.mark.parametrize("name,words", [("silent_error", "silent"),
                                        ("not_mp4_error", "does not end in .mp4")])
def test_bad_input_in_a_process_of_its_own(runs, name, words):
  result = runs[name]
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith("error: ") and words in lines[-1], result.stderr[-3000:]
  assert all(_BAR.match(l) for l in lines[:-1]), result.stderr[-3000:]
  assert result.stdout == ""


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_refused(inputs, tmp_path):
  folder = tmp_path / "read_only"
  folder.mkdir()
  folder.chmod(0o555)
  try:
    result = _run(inputs, inputs.args(str(folder / "out.mp4")))
  finally:
    folder.chmod(0o755)
  assert result.returncode == 1 and "Traceback" not in result.stderr
  assert "not writable" in result.stderr
  assert _leftovers(folder) == []


# --- Ctrl-C ---

def test_ctrl_c_leaves_no_file(runs):
  code, stderr = runs["ctrl_c"]
  assert re.search(r"video 32² \[#+-+\] [1-9]", stderr), stderr[-3000:]   # interrupted midway
  assert code == 130, stderr[-3000:]
  assert "interrupted: no video was written." in stderr and "Traceback" not in stderr
  folder = runs["_tmp"] / "ctrl_c"
  assert _leftovers(folder) == [], _leftovers(folder)
