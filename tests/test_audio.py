"""Tests for vlogger_jax.audio: real files, a float64 reference, real ffmpeg."""

import fractions
import subprocess

import imageio_ffmpeg
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.io import wavfile

from vlogger_jax import audio


def _speechlike(rate, seconds, pitch=140.0):
  """Voiced-speech stand-in, a function of time only (every rate samples one signal): [S]."""
  t = np.arange(int(round(rate * seconds))) / rate
  envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 2.5 * t)
  harmonics = sum(np.sin(2 * np.pi * pitch * h * t + h) / h for h in range(1, 25))
  tones = 0.3 * np.sin(2 * np.pi * 1234 * t) + 0.1 * np.sin(2 * np.pi * 3500 * t)
  glide = 0.05 * np.sin(2 * np.pi * (300 * t + 900 * t * t))
  return 0.25 * envelope * (harmonics + tones + glide)


def _ffmpeg(*args):
  subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *args],
                 check=True)


# ---------------------------------------------------------------------------------------------
# An independent float64 reference: frame by frame, np.interp triangles, scipy-free window.


def _ref_hz_to_mel(f):
  return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def _ref_mel_to_hz(m):
  return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


def _ref_log_mel(x):
  """Float64 log-mel of a 1-D 16 kHz waveform, one frame at a time: [S] -> [frames, 256]."""
  x = np.asarray(x, np.float64)
  frames = len(x) * 24 // 16000
  edges = _ref_mel_to_hz(np.linspace(0.0, _ref_hz_to_mel(8000.0), 258))
  freqs = np.fft.rfftfreq(4096, d=1.0 / 16000)
  bank = np.stack([np.interp(freqs, edges[m:m + 3], [0.0, 1.0, 0.0], left=0.0, right=0.0)
                   for m in range(256)], axis=1)
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(4000) / 4000)
  window /= window.sum()
  out = np.empty((frames, 256))
  for i in range(frames):
    centre = round(fractions.Fraction(2 * i + 1, 2) * fractions.Fraction(16000, 24))
    segment = np.zeros(4000)
    lo, hi = centre - 2000, centre + 2000
    segment[max(lo, 0) - lo:min(hi, len(x)) - lo] = x[max(lo, 0):min(hi, len(x))]
    power = np.abs(np.fft.rfft(segment * window, n=4096)) ** 2
    out[i] = np.log(power @ bank + 1e-10)
  return out


def test_mel_matches_float64_reference():
  noise = 0.003 * np.random.default_rng(0).normal(size=21920)  # Broadband, down to the floor.
  x = np.stack([_speechlike(16000, 1.37) + noise,
                np.sin(2 * np.pi * 440 * np.arange(21920) / 16000)])  # Loud and full-scale.
  got = np.asarray(audio.mel_features(x.astype(np.float32)))
  assert got.shape == (2, 32, 256) and got.dtype == np.float32
  for b in range(2):
    ref = _ref_log_mel(x[b].astype(np.float32))
    assert np.abs(got[b] - ref).max() < 1e-3
  # Every filter sees at least one FFT bin, so no band is stuck at the floor.
  assert (audio.mel_filterbank().sum(axis=0) > 1.0).all()


def test_mel_batched_jitted_and_exported():
  x = np.stack([_speechlike(16000, 0.5, pitch=100 + 20 * s) for s in range(6)]).astype(np.float32)
  x = x.reshape(2, 3, -1)
  batched = np.asarray(jax.jit(audio.mel_features)(x))
  single = np.asarray(audio.mel_features(x[1, 2]))
  np.testing.assert_allclose(batched[1, 2], single, atol=1e-4)
  # The front-end can sit inside exported samplers, with a symbolic batch dimension.
  spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b") + (x.shape[-1],), jnp.float32)
  exported = jax.export.export(jax.jit(audio.mel_features))(spec)
  try:
    import flatbuffers  # pylint: disable=g-import-not-at-top,unused-import
    exported = jax.export.deserialize(exported.serialize())
  except ImportError:
    pass  # Serialization needs flatbuffers; the export itself does not.
  np.testing.assert_allclose(np.asarray(exported.call(x[0])), batched[0], atol=1e-4)


@pytest.mark.parametrize("seconds, frames", [(1, 24), (10, 240), (600, 14400)])
def test_one_feature_per_frame_without_drift(seconds, frames):
  samples = seconds * 16000
  assert audio.num_frames(samples) == frames
  # Clicks on the exact centres of the first, a middle and the last frame: each must light up its
  # own frame; a hop rounded to 666 or 667 samples would be 4800 samples (7 frames) off by 600 s.
  clicked = [0, frames // 2 + 1, frames - 1]
  x = np.zeros(samples, np.float32)
  x[audio.frame_centers(frames)[clicked]] = 1.0
  features = jax.jit(audio.mel_features)(x)  # One compilation per length.
  assert features.shape == (frames, 256)
  energy = np.exp(np.asarray(features, np.float64)).sum(axis=1)
  for k in clicked:
    lo, hi = max(k - 5, 0), min(k + 6, frames)
    assert lo + int(np.argmax(energy[lo:hi])) == k


def test_frame_arithmetic():
  assert [audio.num_frames(s) for s in (0, 666, 667, 15999, 16000, 16001)] == [0, 0, 1, 23, 24, 24]
  np.testing.assert_array_equal(audio.frame_centers(4), [333, 1000, 1667, 2333])
  centres = audio.frame_centers(14400)
  exact = (np.arange(14400) + 0.5) * 16000 / 24
  assert np.abs(centres - exact).max() <= 0.5  # Never more than rounding away, even at 600 s.
  assert centres[-1] < 600 * 16000
  for s in (0, 1, 666, 667, 1333, 1334, 2000, 12345):
    assert jax.eval_shape(audio.mel_features, jax.ShapeDtypeStruct((2, s), jnp.float32)).shape == (
        2, audio.num_frames(s), 256)


@pytest.mark.parametrize("hz", [440.0, 1000.0, 3000.0])
def test_tone_peaks_in_its_mel_bin(hz):
  spacing = _ref_hz_to_mel(8000.0) / 257
  centres_hz = _ref_mel_to_hz(spacing * np.arange(1, 257))
  expected = int(np.argmin(np.abs(centres_hz - hz)))
  x = 0.5 * np.sin(2 * np.pi * hz * np.arange(16000) / 16000)
  features = np.asarray(audio.mel_features(x))
  assert (features[3:-3].argmax(axis=1) == expected).all()
  # Amplitude units: a sine of amplitude 0.5 puts about 0.5**2 / 4 into its band.
  assert abs(features[12, expected] - np.log(0.0625)) < 0.5


# ---------------------------------------------------------------------------------------------
# Loading and resampling.


def test_stereo_44k_file_matches_mono_16k_file(tmp_path):
  mono16 = _speechlike(16000, 2.0)
  mono44 = _speechlike(44100, 2.0)
  side44 = 0.2 * np.sin(2 * np.pi * 777 * np.arange(mono44.size) / 44100)  # Cancels in the mix.
  wavfile.write(tmp_path / "mono16.wav", 16000, mono16.astype(np.float32))
  wavfile.write(tmp_path / "stereo44.wav", 44100,
                np.stack([mono44 + side44, mono44 - side44], axis=1).astype(np.float32))
  a = audio.load_audio(tmp_path / "mono16.wav")
  b = audio.load_audio(tmp_path / "stereo44.wav")
  assert a.dtype == b.dtype == np.float32 and a.shape == b.shape == (32000,)
  assert np.abs(a - b)[2000:-2000].max() < 1e-3  # Away from the resampler's edge transients.
  fa, fb = np.asarray(audio.mel_features(a)), np.asarray(audio.mel_features(b))
  audible = fa[3:-3] > np.log(1e-7)  # Bands within 60 dB of the signal.
  assert audible.mean() > 0.2
  assert np.abs(fa[3:-3] - fb[3:-3])[audible].max() < 0.01


def test_compressed_formats_load(tmp_path):
  pcm = np.round(_speechlike(16000, 2.0) * 32767).astype(np.int16)
  wavfile.write(tmp_path / "speech.wav", 16000, pcm)
  reference = audio.load_audio(tmp_path / "speech.wav")
  np.testing.assert_allclose(reference, pcm / 32768.0, atol=1e-7)
  ref_features = np.asarray(audio.mel_features(reference))
  audible = ref_features > np.log(1e-4)
  for name, codec in [("speech.flac", []), ("speech.ogg", ["-c:a", "libvorbis"]),
                      
                      # A 44.1 kHz stereo mp3; pan copies the channel (-ac 2 would be 3 dB down).
                      ("speech.mp3", ["-af", "pan=stereo|c0=c0|c1=c0", "-ar", "44100"])]:
    _ffmpeg("-i", str(tmp_path / "speech.wav"), *codec, str(tmp_path / name))
    x = audio.load_audio(tmp_path / name)
    assert x.dtype == np.float32 and np.abs(x).max() <= 1.0
    if name.endswith("flac"):
      np.testing.assert_array_equal(x, reference)  # Lossless.
      continue
    assert abs(x.size - reference.size) < 16000 // 24, name  # Codec padding under one frame.
    n = min(x.size, reference.size)
    assert np.corrcoef(x[:n], reference[:n])[0, 1] > 0.99, name
    features = np.asarray(audio.mel_features(x[:n]))
    f = min(len(features), len(ref_features))
    assert np.abs(features[:f] - ref_features[:f])[audible[:f]].mean() < 0.25, name


def test_arrays_are_accepted_and_scaled():
  pcm = np.round(_speechlike(16000, 0.5) * 32767).astype(np.int16)
  np.testing.assert_allclose(audio.load_audio(pcm, 16000), pcm / 32768.0, atol=1e-7)
  stereo48 = np.stack([_speechlike(48000, 0.5)] * 2, axis=1)
  x = audio.load_audio(stereo48, sample_rate=48000)
  assert x.shape == (8000,) and x.dtype == np.float32
  np.testing.assert_allclose(x[500:-500], _speechlike(16000, 0.5)[500:-500], atol=1e-3)
  for bad in (pcm.astype(np.float32), np.full(100, np.nan), np.zeros((2, 3, 4))):
    with pytest.raises(audio.AudioError, match="Audio array of shape"):
      audio.load_audio(bad, sample_rate=16000)
  with pytest.raises(ValueError, match="sample_rate"):
    audio.load_audio(pcm)


# ---------------------------------------------------------------------------------------------
# Bad input: one clear sentence naming the file.


def _write_bad(tmp_path, kind):
  """Writes one kind of unusable file; returns its path."""
  good = tmp_path / "good.wav"
  wavfile.write(good, 16000, np.round(_speechlike(16000, 0.5) * 20000).astype(np.int16))
  raw = good.read_bytes()
  path = tmp_path / {"png": "picture.png", "text": "notes.mp3"}.get(kind, f"{kind}.wav")
  if kind == "missing":
    pass
  elif kind == "empty":
    path.write_bytes(b"")
  elif kind == "silent":
    wavfile.write(path, 16000, np.zeros(16000, np.int16))
  elif kind == "nearly_silent":
    wavfile.write(path, 16000, np.tile(np.array([0, 1, 0, -1], np.int16), 4000))
  elif kind == "truncated_header":
    path.write_bytes(raw[:30])
  elif kind == "header_only":
    path.write_bytes(raw[:44])
  elif kind == "garbage":
    path.write_bytes(raw[:20] + np.random.default_rng(0).bytes(5000))
  elif kind == "text":
    path.write_text("this is not audio\n" * 20)
  elif kind == "png":
    _ffmpeg("-f", "lavfi", "-i", "color=red:s=8x8", "-frames:v", "1", str(path))
  return path


@pytest.mark.parametrize("kind, reason", [
    ("missing", "does not exist"), ("empty", "is empty"), ("silent", "is silent"),
    ("nearly_silent", "is silent"), ("truncated_header", "could not be decoded"),
    ("header_only", "contains no samples"), ("garbage", "could not be decoded"),
    ("text", "could not be decoded"), ("png", "no audio stream")])
def test_bad_file_gives_one_clear_error(tmp_path, kind, reason):
  path = _write_bad(tmp_path, kind)
  with pytest.raises(audio.AudioError) as info:
    audio.load_audio(path)
  message = str(info.value)
  assert isinstance(info.value, ValueError)
  assert str(path) in message and reason in message and "expected" in message
  assert "\n" not in message and len(message) < 300  # No ffmpeg log, no traceback wall.
  assert info.value.__cause__ is None
  assert info.value.__context__ is None or info.value.__suppress_context__


def test_silent_file_allowed_on_request(tmp_path):
  path = _write_bad(tmp_path, "silent")
  x = audio.load_audio(path, allow_silent=True)
  assert x.shape == (16000,) and not x.any()


# ---------------------------------------------------------------------------------------------
# Frame alignment.


def test_audio_for_frames_covers_exactly_its_frames():
  x = _speechlike(16000, 10.0).astype(np.float32)
  total = audio.num_frames(x.size)
  full = np.asarray(jax.jit(audio.mel_features)(x))
  for start, count in [(0, 1), (1, 1), (2, 1), (22, 2), (37, 48), (100, 48), (239, 1), (0, 240)]:
    clip = audio.audio_for_frames(x, start, count)
    assert clip.shape == (audio.num_samples_for_frames(count),)  # Static: depends on count only.
    assert audio.num_frames(clip.size) == count
    offset = start * 16000 // 24
    np.testing.assert_array_equal(clip, x[offset:offset + clip.size])
    # The clip's own frame centres are the clip's frames' centres, to within one sample.
    shift = offset + audio.frame_centers(count) - audio.frame_centers(start + count)[start:]
    assert set(np.unique(shift)) <= {-1, 0, 1}
  # Away from the clip edges (where its windows lose context) its features are the clip's frames'.
  crop = np.asarray(audio.mel_features(audio.audio_for_frames(x, 99, 48)))
  audible = full[99 + 3:99 + 45] > np.log(1e-6)
  assert np.abs(crop[3:45] - full[99 + 3:99 + 45])[audible].max() < 0.02
  with pytest.raises(ValueError, match="not inside"):
    audio.audio_for_frames(x, total - 1, 2)
  # Inside jit with a traced start it is a dynamic slice with the same samples.
  sliced = jax.jit(audio.audio_for_frames, static_argnums=2)(x[None], jnp.int32(37), 48)
  np.testing.assert_array_equal(np.asarray(sliced)[0], audio.audio_for_frames(x, 37, 48))
