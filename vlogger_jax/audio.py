"""Audio front-end: loading and resampling, log-mel features per video frame.

Conventions (docs/audio.md has the longer version):

* Waveforms are mono float32 in [-1, 1] at SAMPLE_RATE = 16 kHz, shaped [..., samples].
* Video runs at FPS = 24, so one frame lasts 16000 / 24 = 666.67 samples. Frame i is centred on
  sample round((i + 0.5) * 16000 / 24), computed from i exactly (never by accumulating a hop), so
  frame centres do not drift over long clips. A clip of S samples covers num_frames(S) =
  floor(S * 24 / 16000) whole frames, and every one of those centres lies inside the clip.
* Features are natural-log mel power, log(mel + LOG_FLOOR), with N_MELS = 256 triangular filters on
  the HTK mel scale from 0 Hz to 8 kHz, over a WINDOW_SAMPLES = 4000 (250 ms) periodic Hann window
  zero-padded to an FFT of FFT_SIZE = 4096. Power is in amplitude units (the window is normalised to
  sum to one), so a sine of amplitude A puts about A**2 / 4 into the band around its frequency.

Text to speech is vlogger_jax/speech.py, which builds on this module.
"""

import functools
import math
import os
import struct
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
from scipy import signal

from vlogger_jax import contracts

SAMPLE_RATE = contracts.SAMPLE_RATE
FPS = contracts.FPS
N_MELS = contracts.MEL_BINS
WINDOW_SAMPLES = SAMPLE_RATE // 4  # 250 ms (paper, Supp. C.1).
FFT_SIZE = 4096  # The window zero-padded to a power of two, which every backend's FFT handles best.
N_FREQS = FFT_SIZE // 2 + 1
MEL_FMIN_HZ = 0.0
MEL_FMAX_HZ = SAMPLE_RATE / 2
# 1e-10 is -100 dB of power: just above the 16-bit quantisation noise in a band, and far enough
# above float32 FFT round-off (about -130 dB of a full-scale frame) that float32 on any backend
# matches a float64 computation to within 1e-3 in log space.
LOG_FLOOR = 1e-10
# A peak amplitude below -80 dBFS (a few 16-bit steps) is treated as silence.
SILENCE_PEAK = 1e-4

# Frame timing in lowest terms: one frame lasts _FRAME_NUM / _FRAME_DEN = 2000 / 3 samples.
_FRAME_NUM = SAMPLE_RATE // math.gcd(SAMPLE_RATE, FPS)
_FRAME_DEN = FPS // math.gcd(SAMPLE_RATE, FPS)
_HALF_WINDOW = WINDOW_SAMPLES // 2


# How far past a length limit a file is decoded: audio that ends within it gets its exact length
# in the error; longer audio is known to last at least limit + this much.
LIMIT_SLACK_S = 1.0


class AudioError(ValueError):
  """An audio input (file, array or text) cannot be used: missing, empty, corrupt or silent."""


class AudioTooLong(AudioError):
  """Audio longer than a length limit. `seconds` is its length, exact when `complete`, else the
  point where decoding stopped (limit + LIMIT_SLACK_S): the file lasts at least that long."""

  def __init__(self, message: str, seconds: float, limit: float, complete: bool):
    super().__init__(message)
    self.seconds, self.limit, self.complete = seconds, limit, complete

  @property
  def length(self) -> str:
    """'1.2 s', or 'at least 3.0 s' where decoding stopped before the end."""
    return f"{self.seconds:.1f} s" if self.complete else f"at least {self.seconds:.1f} s"


# ---------------------------------------------------------------------------------------------
# Frame alignment.


def num_frames(num_samples: int) -> int:
  """Number of whole video frames covered by num_samples samples: floor(S * FPS / SAMPLE_RATE)."""
  return (int(num_samples) * _FRAME_DEN) // _FRAME_NUM


def num_samples_for_frames(count: int) -> int:
  """Fewest samples that cover `count` frames: ceil(count * SAMPLE_RATE / FPS)."""
  return -(-int(count) * _FRAME_NUM // _FRAME_DEN)


def frame_centers(count: int) -> np.ndarray:
  """Centre sample of frames 0..count-1, round((i + 0.5) * SAMPLE_RATE / FPS): [count] int64."""
  # (2i + 1) * 1000 / 3 is never exactly half-way between integers, so rounding has no ties.
  twice = (2 * np.arange(count, dtype=np.int64) + 1) * _FRAME_NUM
  return (twice + _FRAME_DEN) // (2 * _FRAME_DEN)


def audio_for_frames(audio, start_frame, num_frames: int):  # pylint: disable=redefined-outer-name
  """Samples of video frames [start_frame, start_frame + num_frames): [..., S] -> [..., L(n)].

  The slice starts at sample floor(start_frame * SAMPLE_RATE / FPS) and always has
  L(n) = num_samples_for_frames(num_frames) samples, so crops of n frames batch with one static
  shape, num_frames(L(n)) == n, and the slice never runs past the end of the clip. The frame
  centres of the slice are within one sample of the clip's own (equal when start_frame % 3 == 0).
  NumPy arrays with an int start are sliced in NumPy; otherwise (a traced start inside jit) this
  is a lax.dynamic_slice, which clamps out-of-range starts instead of raising.
  """
  count = int(num_frames)
  length = num_samples_for_frames(count)
  if isinstance(start_frame, (int, np.integer)):
    available = (audio.shape[-1] * _FRAME_DEN) // _FRAME_NUM
    if count < 0 or start_frame < 0 or start_frame + count > available:
      raise ValueError(f"audio_for_frames: frames [{start_frame}, {start_frame + count}) are not "
                       f"inside the {available} frames covered by {audio.shape[-1]} samples.")
    start = (int(start_frame) * _FRAME_NUM) // _FRAME_DEN
    return audio[..., start:start + length]
  start = (jnp.asarray(start_frame, jnp.int32) * _FRAME_NUM) // _FRAME_DEN
  return jax.lax.dynamic_slice_in_dim(jnp.asarray(audio), start, length, axis=-1)


# ---------------------------------------------------------------------------------------------
# Log-mel features.


def hz_to_mel(hz):
  """HTK mel scale, 2595 * log10(1 + f / 700): any shape -> same shape."""
  return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_to_hz(mel):
  """Inverse of hz_to_mel: any shape -> same shape."""
  return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


@functools.cache
def mel_filterbank() -> np.ndarray:
  """Triangular mel filters, peak 1, edges evenly spaced in mel: [N_FREQS, N_MELS] float32."""
  edges_hz = mel_to_hz(np.linspace(hz_to_mel(MEL_FMIN_HZ), hz_to_mel(MEL_FMAX_HZ), N_MELS + 2))
  freqs = np.arange(N_FREQS) * (SAMPLE_RATE / FFT_SIZE)
  lower, center, upper = edges_hz[:-2], edges_hz[1:-1], edges_hz[2:]
  rising = (freqs[:, None] - lower) / (center - lower)
  falling = (upper - freqs[:, None]) / (upper - center)
  bank = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
  bank.setflags(write=False)
  return bank


@functools.cache
def _window() -> np.ndarray:
  """Periodic Hann window divided by its sum (2000), so power is in amplitude units: [4000]."""
  n = np.arange(WINDOW_SAMPLES)
  hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / WINDOW_SAMPLES)
  window = (hann / hann.sum()).astype(np.float32)
  window.setflags(write=False)
  return window


def mel_features(audio) -> jax.Array:
  """Log-mel power per video frame: audio [..., S] at 16 kHz -> [..., num_frames(S), 256] float32.

  Pure JAX and shape-static (the frame count comes from the static S), so it runs inside jit and
  jax.export; leading dimensions are batch dimensions. Frame i is the 250 ms Hann window centred on
  frame_centers()[i], with zeros beyond either end of the clip.
  """
  audio = jnp.asarray(audio, jnp.float32)
  if audio.ndim < 1:
    raise ValueError("mel_features expects audio shaped [..., samples]; got a scalar.")
  lead, samples = audio.shape[:-1], audio.shape[-1]
  count = num_frames(samples)
  if count == 0:
    return jnp.zeros((*lead, 0, N_MELS), jnp.float32)
  # Frame centres repeat with period 3 frames = 2000 samples = half a window. So frames of one
  # phase (i % 3) start every half window and each is two consecutive half-window blocks: the
  # framing is reshapes and slices, with no gather (slow on TPU) and no drift.
  per_phase = -(-count // _FRAME_DEN)
  offsets = [int(c) for c in frame_centers(_FRAME_DEN)]  # Frame starts after padding by a half.
  span = _HALF_WINDOW * (per_phase + 1)
  pad_right = max(0, offsets[-1] + span - (samples + _HALF_WINDOW))
  padded = jnp.pad(audio, [(0, 0)] * len(lead) + [(_HALF_WINDOW, pad_right)])
  phases = []
  for offset in offsets:
    blocks = padded[..., offset:offset + span].reshape(*lead, per_phase + 1, _HALF_WINDOW)
    phases.append(jnp.concatenate([blocks[..., :-1, :], blocks[..., 1:, :]], axis=-1))
  frames = jnp.stack(phases, axis=-2).reshape(*lead, per_phase * _FRAME_DEN, WINDOW_SAMPLES)
  frames = frames[..., :count, :] * _window()
  spectrum = jnp.fft.rfft(frames, n=FFT_SIZE, axis=-1)
  power = jnp.square(spectrum.real) + jnp.square(spectrum.imag)
  # HIGHEST: TPUs otherwise multiply in bfloat16, which would cost about 1e-2 in log space.
  mel = jnp.matmul(power, mel_filterbank(), precision=jax.lax.Precision.HIGHEST)
  return jnp.log(mel + LOG_FLOOR)


# ---------------------------------------------------------------------------------------------
# Loading and resampling.


def resample(audio: np.ndarray, from_rate: int, to_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Polyphase windowed-sinc resampling along the last axis: [..., S] -> [..., ceil(S*to/from)]."""
  from_rate, to_rate = int(from_rate), int(to_rate)
  if from_rate <= 0 or to_rate <= 0:
    raise ValueError(f"resample: sample rates must be positive; got {from_rate} -> {to_rate}.")
  if from_rate == to_rate:
    return audio
  g = math.gcd(from_rate, to_rate)
  # The default Kaiser-windowed FIR cuts off at the lower Nyquist: it is the anti-aliasing filter.
  return signal.resample_poly(audio, to_rate // g, from_rate // g, axis=-1)


def load_audio(source, sample_rate: int | None = None, *, allow_silent: bool = False,
               max_seconds: float | None = None) -> np.ndarray:
  """Mono 16 kHz float32 waveform in [-1, 1] from a file or an array: -> [S].

  source: a path to anything ffmpeg decodes (wav, flac, ogg, mp3, m4a, the audio of a video, ...),
    or an array shaped [samples] or [samples, channels] with its `sample_rate`; float arrays hold
    values in [-1, 1], integer arrays are PCM (int16, int32 or uint8) and are scaled.
  allow_silent: return silent audio instead of raising AudioError.
  max_seconds: refuse longer audio (AudioTooLong). A file is decoded only up to max_seconds +
    LIMIT_SLACK_S (ffmpeg's -t), so memory stays bounded however long it is; None decodes it whole
    (about 1 GB per hour of 44.1 kHz stereo for the decoded samples alone).
  Raises AudioError (a ValueError) naming the input when it is missing, empty, not decodable audio,
  silent, or too long.
  """
  if max_seconds is not None and not max_seconds > 0:
    raise ValueError(f"load_audio: max_seconds is {max_seconds}; expected a positive limit.")
  if isinstance(source, (str, os.PathLike)):
    if sample_rate is not None:
      raise ValueError(f"load_audio: sample_rate is only for arrays; {os.fspath(source)!r} is a "
                       "file and its own rate is used.")
    name = f"Audio file {os.fspath(source)!r}"
    stop = None if max_seconds is None else max_seconds + LIMIT_SLACK_S
    channels, rate = _decode_file(os.fspath(source), stop)
    # Decoding that reached the stop point did not reach the end of the file.
    complete = stop is None or channels.shape[0] < (stop - 0.05) * rate
  else:
    if sample_rate is None:
      raise ValueError("load_audio: an array needs its sample_rate, e.g. "
                       "load_audio(samples, sample_rate=44100).")
    name = f"Audio array of shape {np.shape(source)}"
    channels, rate, complete = _array_channels(source, name), int(sample_rate), True
  seconds = channels.shape[0] / rate
  if max_seconds is not None and seconds > max_seconds:
    length = f"{seconds:.1f} s" if complete else f"at least {seconds:.1f} s"
    raise AudioTooLong(f"{name} lasts {length}, longer than the limit of {max_seconds:g} s; "
                       "expected shorter audio, or a higher max_seconds.", seconds, max_seconds,
                       complete)
  mono = channels.mean(axis=-1, dtype=np.float64)  # Mix down before resampling: one channel.
  # Decoders and the resampler's ringing can overshoot full scale by a little; clip it away.
  audio = np.clip(resample(mono, rate), -1.0, 1.0).astype(np.float32)
  if audio.size == 0:
    raise AudioError(f"{name} contains no samples; expected at least one audio sample.")
  peak = float(np.abs(audio).max())
  if peak < SILENCE_PEAK and not allow_silent:
    raise AudioError(f"{name} is silent (peak amplitude {peak:.2g}, below {SILENCE_PEAK:g}); "
                     "expected audible speech, or pass allow_silent=True.")
  return audio


def _array_channels(array, name: str) -> np.ndarray:
  """Validates an in-memory waveform and scales it to float: [S] or [S, C] -> [S, C] float."""
  array = np.asarray(array)
  if array.ndim == 1:
    array = array[:, None]
  if array.ndim != 2 or array.shape[1] == 0:
    raise AudioError(f"{name} has the wrong shape; expected [samples] or [samples, channels].")
  if array.dtype == np.uint8:
    return (array.astype(np.float64) - 128.0) / 128.0
  if np.issubdtype(array.dtype, np.signedinteger):
    return array.astype(np.float64) / float(-np.iinfo(array.dtype).min)
  if not np.issubdtype(array.dtype, np.floating):
    raise AudioError(f"{name} has dtype {array.dtype}; expected float samples in [-1, 1] or "
                     "integer PCM.")
  if not np.all(np.isfinite(array)):
    raise AudioError(f"{name} contains NaN or infinite samples; expected finite samples in "
                     "[-1, 1].")
  peak = float(np.abs(array).max()) if array.size else 0.0
  if peak > 1.0 + 1e-3:
    raise AudioError(f"{name} has peak amplitude {peak:.4g}; expected float samples in [-1, 1] "
                     "(pass integer PCM with its integer dtype, e.g. int16).")
  return array


def _decode_file(path: str, stop_seconds: float | None = None) -> tuple[np.ndarray, int]:
  """Decodes the first audio stream at its own rate with ffmpeg, its first `stop_seconds` only
  when given (ffmpeg reads no further): -> ([S, C] float32, rate)."""
  expected = "expected an audio file that ffmpeg can decode (wav, flac, ogg, mp3, m4a, ...)"
  name = f"Audio file {path!r}"
  if not os.path.exists(path):
    raise AudioError(f"{name} does not exist; {expected}.")
  if not os.path.isfile(path):
    raise AudioError(f"{name} is not a regular file; {expected}.")
  if os.path.getsize(path) == 0:
    raise AudioError(f"{name} is empty (0 bytes); {expected}.")
  # WAV with float samples carries the native rate and channel count in its header, so one ffmpeg
  # run (no ffprobe, which imageio-ffmpeg does not ship) gives both the samples and their layout.
  # The "file:" protocol keeps names with ':' or a leading '-' from being read as URLs or options.
  import imageio_ffmpeg  # pylint: disable=g-import-not-at-top  (only decoding needs ffmpeg)
  # -t before -i limits what ffmpeg reads of the input, not only what it writes.
  limit = [] if stop_seconds is None else ["-t", f"{stop_seconds:.6f}"]
  command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
             *limit, "-i", "file:" + os.path.abspath(path), "-map", "0:a:0", "-f", "wav",
             "-c:a", "pcm_f32le", "-bitexact", "-"]
  proc = subprocess.run(command, capture_output=True, check=False)
  if proc.returncode != 0:
    raise AudioError(f"{name} could not be decoded ({_ffmpeg_reason(proc.stderr)}); "
                     f"{expected}.")
  try:
    return _parse_float_wav(proc.stdout)
  except ValueError as e:
    raise AudioError(f"{name} could not be decoded ({e}); {expected}.") from None


def _ffmpeg_reason(stderr: bytes) -> str:
  """One short phrase for why ffmpeg failed, instead of its whole log."""
  text = stderr.decode("utf-8", "replace")
  if "matches no streams" in text:
    return "it has no audio stream"
  for line in text.splitlines():
    if "Error opening input:" in line:
      return line.split("Error opening input:", 1)[1].strip()
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  return (lines[-1][:160] if lines else "ffmpeg failed without a message")


def _parse_float_wav(data: bytes) -> tuple[np.ndarray, int]:
  """Reads ffmpeg's streamed float32 WAV (chunk sizes unknown): bytes -> ([S, C] float32, rate)."""
  if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
    raise ValueError("ffmpeg produced no audio")
  pos, channels, rate = 12, None, None
  while pos + 8 <= len(data):
    chunk, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
    body = pos + 8
    if chunk == b"fmt ":
      _, channels, rate = struct.unpack_from("<HHI", data, body)
      bits = struct.unpack_from("<H", data, body + 14)[0]
      if bits != 32 or channels == 0:
        raise ValueError(f"unexpected decoded layout: {channels} channels of {bits} bits")
    elif chunk == b"data":
      if channels is None:
        raise ValueError("decoded audio has no format header")
      # Streamed output cannot seek back to fill in the size, so the data runs to the end.
      frame_bytes = 4 * channels
      payload = data[body:body + (len(data) - body) // frame_bytes * frame_bytes]
      return np.frombuffer(payload, "<f4").reshape(-1, channels), rate
    pos = body + size + (size & 1)
  raise ValueError("decoded audio has no data")
