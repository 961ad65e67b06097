"""Video files: H.264 mp4 (yuv420p) with AAC audio out, RGB frames in, through the ffmpeg binary
that imageio-ffmpeg ships (so a pip-only install can write and read videos); where that package
is missing, write_video uses an `ffmpeg` on PATH.

write_video(path, frames [T, H, W, 3] uint8, fps=24, audio=None) writes to a temporary name in the
same folder and renames, so an interrupted write never leaves a half-written file under `path`.
Audio is mono 16 kHz (audio.SAMPLE_RATE), float in [-1, 1] or int16 PCM. Where no encoder exists
(the H200 image), save_frames keeps frames as .npz and `python -m vlogger_jax.video_io` encodes
them later on a machine that has one.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import wave

import numpy as np

from vlogger_jax import audio as audio_lib
from vlogger_jax import fileio


class VideoError(ValueError):
  """A video input (array or file) cannot be written or read."""


def _ffmpeg() -> str:
  """imageio-ffmpeg's binary, else an `ffmpeg` on PATH; one sentence if there is neither."""
  try:
    import imageio_ffmpeg  # pylint: disable=g-import-not-at-top  (model code runs without it)
    return imageio_ffmpeg.get_ffmpeg_exe()
  except (ImportError, RuntimeError):
    found = shutil.which("ffmpeg")
    if found:
      return found
  raise VideoError("no ffmpeg found: imageio-ffmpeg is not installed and no `ffmpeg` is on PATH; "
                   "expected `pip install imageio-ffmpeg` (the project's dependency) or a system "
                   "ffmpeg to write and read videos.")


def _check_frames(frames) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
    raise VideoError(f"write_video: frames have shape {frames.shape}; expected [T, H, W, 3] "
                     "with T >= 1.")
  if frames.dtype != np.uint8:
    raise VideoError(f"write_video: frames have dtype {frames.dtype}; expected uint8 RGB.")
  if frames.shape[1] % 2 or frames.shape[2] % 2:
    raise VideoError(f"write_video: frames are {frames.shape[2]}x{frames.shape[1]}; H.264 in "
                     "yuv420p expects an even width and height.")
  return np.ascontiguousarray(frames)


def _audio_int16(audio) -> np.ndarray:
  audio = np.asarray(audio)
  if audio.ndim != 1 or audio.size == 0:
    raise VideoError(f"write_video: audio has shape {audio.shape}; expected mono samples [S] "
                     f"at {audio_lib.SAMPLE_RATE} Hz.")
  if audio.dtype == np.int16:
    return audio
  if not np.issubdtype(audio.dtype, np.floating) or not np.all(np.isfinite(audio)):
    raise VideoError(f"write_video: audio has dtype {audio.dtype} or non-finite values; expected "
                     "int16 PCM or finite floats in [-1, 1].")
  return np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)


def _write_wav(path: str, samples: np.ndarray) -> None:
  with wave.open(path, "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(audio_lib.SAMPLE_RATE)
    w.writeframes(samples.astype("<i2").tobytes())


class VideoWriter:
  """An H.264/AAC mp4 written frame chunk by frame chunk, in constant memory (a long video
  never has to be held whole): frames go down a pipe into ffmpeg, which writes to a temporary
  name beside `path`; `close()` renames it into place. `abort()` (or leaving the `with` block
  by an exception, Ctrl-C included) removes it, so no partial file is ever left under `path`.

    with VideoWriter("out.mp4", size=(128, 128), audio=wave) as w:
      for chunk in chunks:          # uint8 [t, H, W, 3]
        w.write(chunk)
  """

  def __init__(self, path, size: tuple[int, int], fps: float = 24, audio=None, crf: int = 18):
    self.path = os.fspath(path)
    h, w = (int(v) for v in size)
    if h <= 0 or w <= 0 or h % 2 or w % 2:
      raise VideoError(f"write_video: frames are {w}x{h}; H.264 in yuv420p expects an even "
                       "width and height.")
    if not fps or fps <= 0:
      raise VideoError(f"write_video: fps is {fps}; expected a positive frame rate.")
    directory = os.path.dirname(os.path.abspath(self.path))
    reason = fileio.unwritable_reason(self.path)
    if reason:
      raise VideoError(f"write_video: {self.path!r} cannot be written ({reason}); expected a "
                       "file name in an existing folder this user may write into.")
    samples = None if audio is None else _audio_int16(audio)
    self.size, self.frames_written = (h, w), 0
    fd, self._tmp = tempfile.mkstemp(prefix=".tmp_video_", suffix=".mp4", dir=directory)
    os.close(fd)
    self._wav, self._proc = None, None
    try:
      cmd = [_ffmpeg(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
             "-s", f"{w}x{h}", "-r", str(fps), "-i", "-"]
      if samples is not None:
        fd, self._wav = tempfile.mkstemp(prefix=".tmp_audio_", suffix=".wav", dir=directory)
        os.close(fd)
        _write_wav(self._wav, samples)
        cmd += ["-i", self._wav]
      cmd += ["-map", "0:v:0", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(int(crf)),
              "-preset", "medium", "-movflags", "+faststart"]
      if samples is not None:
        cmd += ["-map", "1:a:0", "-c:a", "aac", "-b:a", "96k"]
      cmd += ["-f", "mp4", self._tmp]
      self._stderr = tempfile.TemporaryFile()
      # Its own session: a terminal's Ctrl-C reaches this process, which aborts ffmpeg itself,
      # instead of killing ffmpeg under a write that would then fail as an encoding error.
      self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=self._stderr, start_new_session=True)
    except BaseException:
      self.abort()
      raise

  def write(self, frames) -> None:
    """Appends frames [t, H, W, 3] uint8."""
    frames = _check_frames(frames)
    if frames.shape[1:3] != self.size:
      raise VideoError(f"write_video: frames are {frames.shape[2]}x{frames.shape[1]}; this "
                       f"video is {self.size[1]}x{self.size[0]}.")
    try:
      self._proc.stdin.write(frames.tobytes())
    except (BrokenPipeError, OSError):
      raise VideoError(f"write_video: ffmpeg stopped while encoding {self.path!r} "
                       f"({self._reason()}).") from None
    self.frames_written += frames.shape[0]

  def _reason(self) -> str:
    self._stderr.seek(0)
    lines = self._stderr.read().decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else "no message"

  def close(self) -> str:
    """Finishes the file and renames it to `path`; -> path."""
    if self.frames_written == 0:
      self.abort()
      raise VideoError(f"write_video: no frames were written to {self.path!r}; expected at "
                       "least one.")
    try:
      self._proc.stdin.close()
      code = self._proc.wait()
      if code != 0:
        raise VideoError(f"write_video: ffmpeg could not encode {self.path!r} "
                         f"({self._reason()}).")
      os.chmod(self._tmp, 0o644)  # mkstemp's 0600 would survive the rename
      os.replace(self._tmp, self.path)
    finally:
      self._cleanup()
    return self.path

  def abort(self) -> None:
    """Stops ffmpeg and removes everything written so far."""
    if self._proc is not None and self._proc.poll() is None:
      self._proc.kill()
      self._proc.wait()
    self._cleanup()

  def _cleanup(self) -> None:
    for leftover in (self._tmp, self._wav):
      if leftover and os.path.exists(leftover):
        os.remove(leftover)
    if getattr(self, "_stderr", None) is not None:
      self._stderr.close()
      self._stderr = None

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is None:
      self.close()
    else:
      self.abort()
    return False


def write_video(path, frames, fps: float = 24, audio=None, crf: int = 18) -> str:
  """Writes frames [T, H, W, 3] uint8 (and optional mono 16 kHz audio [S]) to an H.264/AAC mp4
  (VideoWriter in one go)."""
  frames = _check_frames(frames)
  with VideoWriter(path, frames.shape[1:3], fps=fps, audio=audio, crf=crf) as w:
    w.write(frames)
  return os.fspath(path)


def read_video(path) -> tuple[np.ndarray, float]:
  """Decodes a video file into RGB frames [T, H, W, 3] uint8 and its frame rate."""
  path = os.fspath(path)
  if not os.path.isfile(path) or os.path.getsize(path) == 0:
    raise VideoError(f"read_video: {path!r} is not an existing non-empty file; expected a video "
                     "that ffmpeg can decode.")
  try:
    import imageio_ffmpeg  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise VideoError("read_video needs imageio-ffmpeg, which is not installed; expected "
                     "`pip install imageio-ffmpeg` (the project's dependency).") from None
  try:
    reader = imageio_ffmpeg.read_frames(path)
    meta = next(reader)
    w, h = meta["size"]
    frames = [np.frombuffer(buf, np.uint8).reshape(h, w, 3) for buf in reader]
  except (RuntimeError, OSError, StopIteration, KeyError) as e:
    raise VideoError(f"read_video: {path!r} could not be decoded ({str(e).splitlines()[0]}); "
                     "expected a video that ffmpeg can decode.") from None
  if not frames:
    raise VideoError(f"read_video: {path!r} holds no video frames; expected at least one.")
  return np.stack(frames), float(meta["fps"])


def iter_video(path, fps: float = 24, max_side: int = 1024, chunk: int = 240):
  """Decodes a video resampled to `fps` (ffmpeg's fps filter: frames repeated or dropped) and
  scaled down so its longer side is at most `max_side`, in chunks of `chunk` frames: yields RGB
  uint8 [<= chunk, H, W, 3], so a long video is never held whole. VideoError if undecodable."""
  path = os.fspath(path)
  if not os.path.isfile(path) or os.path.getsize(path) == 0:
    raise VideoError(f"video file {path!r} is not an existing non-empty file; expected a video "
                     "that ffmpeg can decode.")
  import imageio_ffmpeg  # pylint: disable=g-import-not-at-top  (as read_video)
  # It warns that the scaled size differs from the source's, which is what was asked for.
  logging.getLogger("imageio_ffmpeg").setLevel(logging.ERROR)
  scale = (f"scale='if(gte(iw,ih),min({max_side},iw),-2)':'if(gte(iw,ih),-2,min({max_side},ih))'"
           ":flags=area")
  try:
    reader = imageio_ffmpeg.read_frames(path, output_params=["-vf", f"fps={fps:g},{scale}"])
    meta = next(reader)
    w, h = meta["size"]
    frames = []
    for buf in reader:
      frames.append(np.frombuffer(buf, np.uint8).reshape(h, w, 3))
      if len(frames) == chunk:
        yield np.stack(frames)
        frames = []
  except (RuntimeError, OSError, StopIteration, KeyError) as e:
    raise VideoError(f"video file {path!r} could not be decoded ({str(e).splitlines()[0]}); "
                     "expected a video that ffmpeg can decode.") from None
  if frames:
    yield np.stack(frames)


def save_frames(path, frames, fps: float = 24) -> str:
  """Keeps frames [T, H, W, 3] uint8 as a compressed .npz ('frames', 'fps') to encode later, on a
  machine with ffmpeg (`python -m vlogger_jax.video_io FRAMES.npz OUT.mp4`); written to a
  temporary name in the same folder and renamed."""
  return fileio.save_npz(path, frames=_check_frames(frames), fps=np.float32(fps))


def load_frames(path) -> tuple[np.ndarray, float]:
  """The frames and frame rate that save_frames kept."""
  path = os.fspath(path)
  expected = "expected an .npz written by video_io.save_frames"
  try:
    z = fileio.read_npz(path)
  except fileio.NpzError as e:
    raise VideoError(f"load_frames: {path!r} {e}; {expected}.") from None
  if "frames" not in z or "fps" not in z:
    raise VideoError(f"load_frames: {path!r} lacks 'frames' or 'fps'; {expected}.")
  frames, fps = z["frames"], float(z["fps"])
  return _check_frames(frames), fps


def main(argv: list[str]) -> int:
  """`python -m vlogger_jax.video_io FRAMES.npz OUT.mp4`, or `FRAMES.npz... OUT_DIR` (each becomes
  OUT_DIR/<name>.mp4): encodes frames that save_frames kept. Exit 0, 1 on bad input, 2 on usage."""
  if len(argv) < 2:
    print("usage: python -m vlogger_jax.video_io FRAMES.npz OUT.mp4 | FRAMES.npz... OUT_DIR",
          file=sys.stderr)
    return 2
  *inputs, out = argv
  try:
    if len(inputs) > 1 and not os.path.isdir(out):
      raise VideoError(f"{out!r} is not a folder; expected a folder when encoding "
                       f"{len(inputs)} frame files.")
    for src in inputs:
      dst = out
      if os.path.isdir(out):
        name = os.path.basename(src)
        name = name[:-len(".frames.npz")] if name.endswith(".frames.npz") else (
            os.path.splitext(name)[0])
        dst = os.path.join(out, name + ".mp4")
      frames, fps = load_frames(src)
      print(write_video(dst, frames, fps=fps))
  except VideoError as err:
    print(f"error: {err}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  raise SystemExit(main(sys.argv[1:]))
