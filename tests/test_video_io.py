"""Tests for vlogger_jax/video_io.py: real mp4 files through the ffmpeg binary."""

import os

import numpy as np
import pytest

from vlogger_jax import audio as audio_lib
from vlogger_jax import video_io


def _frames(t=12, h=32, w=48):
  # Smooth content: H.264 reproduces it to within a few grey levels.
  yy, xx = np.mgrid[0:h, 0:w]
  out = np.zeros((t, h, w, 3), np.uint8)
  for i in range(t):
    out[i, ..., 0] = (40 + 4 * i + 2 * xx).clip(0, 255)
    out[i, ..., 1] = (60 + 3 * yy).clip(0, 255)
    out[i, ..., 2] = 120
  return out


def test_round_trip_with_audio(tmp_path):
  frames = _frames()
  n = audio_lib.num_samples_for_frames(len(frames))
  tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / audio_lib.SAMPLE_RATE)
  path = tmp_path / "clip.mp4"
  video_io.write_video(path, frames, fps=24, audio=tone.astype(np.float32))
  assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]  # no temporary files left behind
  got, fps = video_io.read_video(path)
  assert got.shape == frames.shape
  assert fps == pytest.approx(24.0)
  assert np.abs(got.astype(float) - frames.astype(float)).mean() < 3.0
  decoded = audio_lib.load_audio(str(path))
  # AAC adds priming/padding of at most a couple of 1024-sample packets.
  assert abs(len(decoded) - n) < 2100
  spectrum = np.abs(np.fft.rfft(decoded[:4096]))
  assert abs(np.argmax(spectrum) * audio_lib.SAMPLE_RATE / 4096 - 440) < 10


def test_int16_audio_and_no_audio(tmp_path):
  frames = _frames(t=6)
  pcm = (np.random.default_rng(0).normal(size=4000) * 3000).astype(np.int16)
  video_io.write_video(tmp_path / "a.mp4", frames, audio=pcm)
  assert len(audio_lib.load_audio(str(tmp_path / "a.mp4"))) > 3000
  video_io.write_video(tmp_path / "b.mp4", frames)
  got, _ = video_io.read_video(tmp_path / "b.mp4")
  assert got.shape == frames.shape
  with pytest.raises(audio_lib.AudioError):
    audio_lib.load_audio(str(tmp_path / "b.mp4"))


def test_bad_inputs(tmp_path):
  with pytest.raises(video_io.VideoError, match="expected \\[T, H, W, 3\\]"):
    video_io.write_video(tmp_path / "x.mp4", np.zeros((4, 8, 8), np.uint8))
  with pytest.raises(video_io.VideoError, match="uint8"):
    video_io.write_video(tmp_path / "x.mp4", np.zeros((4, 8, 8, 3), np.float32))
  with pytest.raises(video_io.VideoError, match="even"):
    video_io.write_video(tmp_path / "x.mp4", np.zeros((4, 9, 8, 3), np.uint8))
  with pytest.raises(video_io.VideoError, match="folder"):
    video_io.write_video(tmp_path / "nope" / "x.mp4", np.zeros((4, 8, 8, 3), np.uint8))
  with pytest.raises(video_io.VideoError, match="not an existing"):
    video_io.read_video(tmp_path / "missing.mp4")
  junk = tmp_path / "junk.mp4"
  junk.write_bytes(b"not a video at all" * 10)
  with pytest.raises(video_io.VideoError, match="could not be decoded"):
    video_io.read_video(junk)
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_files_are_world_readable_and_ffmpeg_falls_back_to_path(tmp_path, monkeypatch):
  import builtins
  import shutil
  import stat
  exe = video_io._ffmpeg()
  path = video_io.write_video(tmp_path / "a.mp4", _frames())
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
  # Without imageio-ffmpeg (the H200 image lacks it) an ffmpeg on PATH is used, else one sentence.
  real_import = builtins.__import__

  def no_imageio_ffmpeg(name, *args, **kwargs):
    if name == "imageio_ffmpeg":
      raise ImportError("No module named 'imageio_ffmpeg'")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", no_imageio_ffmpeg)
  monkeypatch.setattr(shutil, "which", lambda name: exe if name == "ffmpeg" else None)
  video_io.write_video(tmp_path / "b.mp4", _frames())
  with pytest.raises(video_io.VideoError, match="needs imageio-ffmpeg"):
    video_io.read_video(tmp_path / "b.mp4")
  monkeypatch.setattr(shutil, "which", lambda name: None)
  with pytest.raises(video_io.VideoError, match="no ffmpeg found"):
    video_io.write_video(tmp_path / "c.mp4", _frames())
  monkeypatch.undo()
  frames, _ = video_io.read_video(tmp_path / "b.mp4")
  assert frames.shape == _frames().shape


def test_frames_kept_without_encoder_are_encoded_by_the_cli(tmp_path, monkeypatch):
  import subprocess
  import sys
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  monkeypatch.syspath_prepend(os.path.join(repo, "launch"))
  import eval_video  # pylint: disable=g-import-not-at-top
  panels = [("truth", _frames(t=6, h=32, w=32)), ("generated", _frames(t=6, h=32, w=32)[:, ::-1])]
  want = eval_video.sample_video_frames(panels)

  def no_encoder():
    raise video_io.VideoError("no ffmpeg found")

  # No encoder anywhere (as on the H200 image): the composed frames are kept, then the error.
  monkeypatch.setattr(video_io, "_ffmpeg", no_encoder)
  with pytest.raises(video_io.VideoError, match="no ffmpeg found"):
    eval_video.write_sample_video(str(tmp_path / "clip0.mp4"), panels)
  monkeypatch.undo()
  kept = tmp_path / "clip0.frames.npz"
  assert not (tmp_path / "clip0.mp4").exists() and sorted(os.listdir(tmp_path)) == [kept.name]
  frames, fps = video_io.load_frames(kept)
  np.testing.assert_array_equal(frames, want)
  assert fps == eval_video.FPS
  # Elsewhere, `python -m vlogger_jax.video_io` encodes them (a folder as the target names it).
  out = tmp_path / "videos"
  out.mkdir()
  proc = subprocess.run([sys.executable, "-m", "vlogger_jax.video_io", str(kept), str(out)],
                        capture_output=True, text=True, check=False, cwd=repo)
  assert proc.returncode == 0, proc.stderr
  video, fps = video_io.read_video(out / "clip0.mp4")
  assert video.shape == want.shape and fps == 24.0
  assert np.abs(video.astype(int) - want.astype(int)).mean() < 6
  # Bad input: one sentence, exit 1.
  (tmp_path / "junk.npz").write_bytes(b"not an npz")
  proc = subprocess.run([sys.executable, "-m", "vlogger_jax.video_io", str(tmp_path / "junk.npz"),
                         str(tmp_path / "junk.mp4")], capture_output=True, text=True, check=False,
                        cwd=repo)
  assert proc.returncode == 1 and proc.stderr.startswith("error: load_frames:"), proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1
