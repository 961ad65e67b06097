"""Video metrics (PSNR, SSIM, L1, pixel jitter, seam jump) and launch/eval_video.py end to end."""

import json
import math
import os
import re

import numpy as np
from PIL import Image
import pytest

from conftest import REPO, run_python
from vlogger_jax import video_eval
from vlogger_jax import video_io
from vlogger_jax import windowed_sampler
from vlogger_jax.models import loading
from vlogger_jax.train import config_lib, loop
from vlogger_jax.train.tasks import make_task

T, S = 16, 24


def _video(seed: int = 0, t: int = T, s: int = S) -> np.ndarray:
  """A smooth random video [t, s, s, 3] in [-1, 1]: blurred noise moving slowly."""
  rng = np.random.default_rng(seed)
  base = rng.uniform(-1, 1, (s + t, s + t, 3))
  base = (base + np.roll(base, 1, 0) + np.roll(base, 1, 1) + np.roll(base, 1, (0, 1))) / 4
  return np.stack([base[i:i + s, i // 2:i // 2 + s] for i in range(t)])


def test_identical_videos_are_perfect_and_distances_are_symmetric():
  a, b = _video(0), _video(1)
  assert video_eval.psnr(a, a) == video_eval.PSNR_CAP_DB
  assert video_eval.ssim(a, a) == pytest.approx(1.0, abs=1e-9)
  assert video_eval.l1(a, a) == 0.0
  for f in (video_eval.psnr, video_eval.ssim, video_eval.l1):
    assert f(a, b) == pytest.approx(f(b, a), rel=1e-9)
  # L1 and PSNR in [0, 1] intensity units: a shift of 0.2 in [-1, 1] is 0.1 of the range.
  assert video_eval.l1(a, a + 0.2) == pytest.approx(0.1)
  assert video_eval.psnr(a, a + 0.2) == pytest.approx(20.0)
  with pytest.raises(ValueError, match="expected equal shapes"):
    video_eval.psnr(a, a[:-1])


def test_ssim_of_flat_frames_is_the_luminance_term():
  # With no variance SSIM reduces to (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1) on [0, 1].
  a = np.full((2, S, S, 3), -0.2)   # 0.4 in [0, 1]
  b = np.full((2, S, S, 3), 0.4)    # 0.7
  c1 = video_eval.SSIM_K1 ** 2
  want = (2 * 0.4 * 0.7 + c1) / (0.4 ** 2 + 0.7 ** 2 + c1)
  assert video_eval.ssim(a, b) == pytest.approx(want, rel=1e-9)
  # A contrast change alone: equal means, std 0.5 against 0.25 -> (2 s1 s2 + C2)/(s1^2+s2^2+C2).
  checker = np.indices((S, S)).sum(0) % 2 * 2.0 - 1.0           # +-1: [0, 1] values 0 and 1
  a = np.broadcast_to(checker[None, ..., None], (1, S, S, 1))
  got = video_eval.ssim_per_frame(a, 0.5 * a)
  c2 = video_eval.SSIM_K2 ** 2
  assert got.shape == (1,)
  assert got[0] == pytest.approx((2 * 0.5 * 0.25 + c2) / (0.5 ** 2 + 0.25 ** 2 + c2), abs=0.01)


def test_ssim_falls_as_noise_grows():
  a = _video(0)
  rng = np.random.default_rng(1)
  noise = rng.normal(size=a.shape)
  scores = [video_eval.ssim(a, np.clip(a + sigma * noise, -1, 1)) for sigma in (0.02, 0.1, 0.4)]
  assert 1.0 > scores[0] > scores[1] > scores[2] > 0.0, scores
  with pytest.raises(ValueError, match="at least 11x11"):
    video_eval.ssim(a[:, :8, :8], a[:, :8, :8])


def test_pixel_jitter_is_the_third_difference():
  t = np.arange(T, dtype=np.float64)[:, None, None, None]
  ones = np.ones((T, 4, 4, 3))
  assert video_eval.pixel_jitter(0.3 * ones) == 0.0
  assert video_eval.pixel_jitter(-1 + 0.1 * t * ones) == pytest.approx(0.0, abs=1e-12)
  # v = -1 + a t^3: intensity (v + 1) / 2 = a t^3 / 2, whose third difference is 3 a.
  a = 1e-4
  assert video_eval.pixel_jitter(-1 + a * t ** 3 * ones) == pytest.approx(3 * a, rel=1e-6)
  # Flicker (alternating frames) is what it is for: +-d gives third differences of 8 d.
  flicker = 0.05 * (-1.0) ** t * ones
  assert video_eval.pixel_jitter(flicker) == pytest.approx(8 * 0.05 / 2)
  with pytest.raises(ValueError, match="at least 4"):
    video_eval.pixel_jitter(ones[:3])


def test_boundary_jump_finds_the_seams_of_the_sampler():
  window, overlap = 8, 4
  starts = windowed_sampler.window_starts(T, window, overlap)        # 0, 4, 8
  np.testing.assert_array_equal(video_eval.boundary_frames(T, starts, window), [8, 12])
  # The seams of outpainting with 25 % overlap: the last window runs past T (the sampler pads
  # the sequence at the end), and its first new frame is still a seam.
  starts25 = windowed_sampler.window_starts(T, window, 2)             # 0, 6, 12
  np.testing.assert_array_equal(starts25, [0, 6, 12])
  np.testing.assert_array_equal(video_eval.boundary_frames(T, starts25, window), [8, 14])
  t = np.arange(T, dtype=np.float64)[:, None, None, None]
  smooth = -0.8 + 0.05 * t * np.ones((T, 4, 4, 3))
  assert video_eval.boundary_jump(smooth, starts, window) == pytest.approx(1.0)
  jumpy = smooth.copy()
  jumpy[8:] += 0.3                                                   # a seam at frame 8
  assert video_eval.boundary_jump(jumpy, starts, window) == pytest.approx(
      (0.35 + 0.05) / 2 / 0.05)
  jumpy_elsewhere = smooth.copy()
  jumpy_elsewhere[5:] += 0.3                                         # not at a boundary
  assert video_eval.boundary_jump(jumpy_elsewhere, starts, window) < 1.0
  assert math.isnan(video_eval.boundary_jump(smooth[:8], [0], window))   # one window: no seam


SPEC = os.path.join(REPO, "configs/base128.py:tiny")
SCRIPT = os.path.join(REPO, "launch/eval_video.py")


@pytest.fixture(scope="module")
def run(synthetic_tiny, tmp_path_factory):
  """(data_dir, workdir) of a control-stage run of the tiny model trained for one step by the
  training loop (pretrained 'none': no pre-training; the evaluation loads the frozen image model
  from the run's checkpoint, never from config.pretrained)."""
  data_dir, _ = synthetic_tiny
  config = config_lib.overridden(config_lib.load_config_file(SPEC), pretrained="none",
                                 num_train_steps=1, eval_every=0,
                                 **{"data.data_dir": data_dir, "checkpoint.async_save": False})
  workdir = str(tmp_path_factory.mktemp("run"))
  loop.train(config, workdir, make_task(config))
  return data_dir, workdir


def _eval_video_module(monkeypatch):
  # A script, not a package module: importable only with launch/ on the path.
  monkeypatch.syspath_prepend(os.path.join(REPO, "launch"))
  import eval_video  # pylint: disable=g-import-not-at-top
  return eval_video


def test_restore_takes_the_saved_config_and_checks_a_given_one(run, monkeypatch):
  eval_video = _eval_video_module(monkeypatch)
  data_dir, workdir = run
  loaded, config = eval_video.restore(workdir)
  assert loaded.step == 1 and config is loaded.config and config.data.data_dir == data_dir
  assert loaded.model.num_frames == 8 and "network" in config.model
  given = config_lib.overridden(config_lib.load_config_file(SPEC),
                                **{"data.data_dir": "/moved"})
  _, used = eval_video.restore(workdir, given)
  assert used.data.data_dir == "/moved"        # the data's new place; the weights as saved
  assert eval_video.sampler_settings(used, num_steps=2) == {
      "sampler": "ddim", "num_steps": 2, "eta": 1.0, "guidance": 1.0}
  saved = loaded.config.to_dict()
  assert loading.config_differences(saved, given.to_dict(), eval_video.CHECKED_KEYS) == []
  changed = config_lib.overridden(given, **{"model.temporal": "both", "diffusion.num_steps": 10})
  assert sorted(loading.config_differences(saved, changed.to_dict(), eval_video.CHECKED_KEYS)) == [
      "diffusion.num_steps", "model.temporal"]


def test_eval_video_end_to_end(run, tmp_path):
  data_dir, workdir = run
  out = tmp_path / "eval"
  # The tiny config as the user would pass it: pretrained '' (the script must not pre-train).
  args = [SCRIPT, f"--config={SPEC}", f"--config.data.data_dir={data_dir}",
          f"--workdir={workdir}", f"--out_dir={out}", "--num_clips=1", "--num_frames=16",
          "--num_steps=2", "--videos=1"]
  proc = run_python(args)
  assert "outpainting 50%" in proc.stdout and "repeat reference" in proc.stdout, proc.stdout
  assert not os.path.exists(os.path.join(workdir, "pretrain"))
  with open(out / "metrics.json") as f:
    m = json.load(f)
  assert m["step"] == 1 and m["num_frames"] == 16 and m["window"] == 8
  assert m["sampler"] == {"sampler": "ddim", "num_steps": 2, "eta": 1.0, "guidance": 1.0}
  assert "--num_steps=2" in m["command"]
  assert [m["modes"][k]["overlap"] for k in ("outpaint_50", "outpaint_25", "no_outpainting")] == [
      4, 2, 0]
  for mode in m["modes"].values():
    for key in ("psnr", "ssim", "l1", "pixel_jitter", "boundary_jump", "boundary_jump_truth"):
      assert math.isfinite(mode[key]) and len(mode["per_clip"][key]) == 1, (key, mode)
    assert 0 < mode["l1"] < 1 and -1 < mode["ssim"] < 1
  assert set(m["repeat_ref"]) == {"psnr", "ssim", "l1", "per_clip"}
  assert m["repeat_ref"]["psnr"] > 5 and 0 < m["repeat_ref"]["ssim"] <= 1
  assert m["truth"]["pixel_jitter"] > 0 and m["sample_videos"] == 1
  frames, fps = video_io.read_video(out / "clip0.mp4")
  assert frames.shape[0] == 16 and fps == 24 and frames.shape[1] >= 256
  with Image.open(out / "contact_sheet.png") as sheet:
    assert sheet.size[0] > 8 * 128 and sheet.size[1] > 5 * 128


def test_eval_video_refuses_what_it_cannot_evaluate(run, tmp_path):
  data_dir, workdir = run
  cases = [
      ([f"--config={SPEC}_pretrain", f"--workdir={workdir}"], "expected the control stage"),
      ([f"--config={SPEC}", f"--workdir={tmp_path}"], "neither a run directory holding "
       "checkpoints/"),
      ([f"--config={SPEC}", f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
        "--config.model.temporal=both", "--num_frames=16"], "differs from the config of "
       "checkpoint 1 in .* at model.temporal;"),
  ]
  for args, message in cases:
    proc = run_python([SCRIPT, *args], check=False)
    assert proc.returncode == 1 and re.search(message, proc.stderr), (args, proc.stderr[-2000:])
  assert not os.path.exists(tmp_path / "checkpoints")
