"""Recording conditions for synthetic speech: room, noise, level and band, drawn per clip.

`augment(rng, wave)` passes clean 16 kHz speech through a random chain, every draw from `rng`:

1. reverberation (60 %): convolution with an exponentially decaying noise impulse response
   (RT60 0.15-0.7 s, 3-20 ms pre-delay, direct-to-reverberant ratio 3-15 dB);
2. band-limiting (55 %): a telephone band (300-3400 Hz), a low-pass at 3.5-7 kHz or a high-pass
   at 80-250 Hz (4th-order Butterworth);
3. level changes: a slow gain drift of up to +-6 dB (the talker moving, an automatic gain);
4. background noise (85 %): white, pink, brown, 50/60 Hz hum with harmonics or babble-like
   modulated pink noise, at an SNR of 10-40 dB against the speech;
5. the final level: peak at -20 to -1 dBFS.

The mouth never depends on these: they only make the audio a model hears more varied. The ranges
are those of ordinary recordings (a room, a phone, a street), not of speech buried in noise: the
model must still hear a 60 ms /b/ through them, through a 250 ms mel window.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy import signal

SR = 16000
NOISES = ("white", "pink", "brown", "hum", "babble")


def _coloured_noise(rng, n: int, exponent: float) -> np.ndarray:
  """Unit-variance noise [n] with power spectrum ~ 1/f^exponent."""
  spec = np.fft.rfft(rng.normal(size=n))
  f = np.fft.rfftfreq(n, 1.0 / SR)
  spec *= 1.0 / np.maximum(f, 20.0) ** (exponent / 2)
  x = np.fft.irfft(spec, n)
  return x / (x.std() + 1e-12)


def _noise(rng, n: int, kind: str) -> np.ndarray:
  """Background noise [n] of one kind, unit variance."""
  if kind == "white":
    x = rng.normal(size=n)
    return x / (x.std() + 1e-12)
  if kind == "pink":
    return _coloured_noise(rng, n, 1.0)
  if kind == "brown":
    return _coloured_noise(rng, n, 2.0)
  if kind == "hum":
    f0 = rng.choice([50.0, 60.0])
    t = np.arange(n) / SR
    x = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.3))
            for k in range(1, 6))
    x = x + 0.1 * rng.normal(size=n)
    return x / (x.std() + 1e-12)
  # Babble: pink noise band-passed to speech and modulated at syllable rates.
  x = signal.sosfilt(signal.butter(2, (200.0, 3000.0), "bandpass", fs=SR, output="sos"),
                     _coloured_noise(rng, n, 1.0))
  env = ndimage.gaussian_filter1d(rng.normal(size=n // 160 + 2), 2.0)
  env = np.interp(np.arange(n) / 160.0, np.arange(env.size), 1.0 + 0.8 * env / (env.std() + 1e-9))
  x = x * np.clip(env, 0.1, None)
  return x / (x.std() + 1e-12)


def _reverb(rng, wave: np.ndarray) -> np.ndarray:
  rt60 = rng.uniform(0.15, 0.7)
  length = int(min(rt60, 0.6) * SR)
  t = np.arange(length) / SR
  ir = rng.normal(size=length) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
  ir = signal.sosfilt(signal.butter(1, rng.uniform(3000, 7000), fs=SR, output="sos"), ir)
  ir /= np.sqrt(np.sum(ir ** 2)) + 1e-12
  drr = 10 ** (rng.uniform(3.0, 15.0) / 20)
  delay = int(rng.uniform(0.003, 0.02) * SR)
  wet = signal.oaconvolve(wave, ir)[: wave.size]
  wet = np.concatenate([np.zeros(delay), wet])[: wave.size]
  return drr * wave + wet * np.sqrt(np.mean(wave ** 2) / (np.mean(wet ** 2) + 1e-12))


def _band(rng, wave: np.ndarray) -> np.ndarray:
  kind = rng.choice(["telephone", "lowpass", "highpass"])
  if kind == "telephone":
    sos = signal.butter(4, (300.0, 3400.0), "bandpass", fs=SR, output="sos")
  elif kind == "lowpass":
    sos = signal.butter(4, rng.uniform(3500.0, 7000.0), "lowpass", fs=SR, output="sos")
  else:
    sos = signal.butter(4, rng.uniform(80.0, 250.0), "highpass", fs=SR, output="sos")
  return signal.sosfilt(sos, wave)


def augment(rng: np.random.Generator, wave: np.ndarray) -> tuple[np.ndarray, dict]:
  """Clean speech [S] float in [-1, 1] -> (the same speech under random conditions [S] float32,
  what was drawn: a dict for logs and docs)."""
  x = np.asarray(wave, np.float64)
  n = x.size
  info = {}
  if rng.uniform() < 0.6:
    x = _reverb(rng, x)
    info["reverb"] = True
  if rng.uniform() < 0.55:
    x = _band(rng, x)
    info["band"] = True
  drift_db = rng.uniform(0.0, 6.0)
  g = ndimage.gaussian_filter1d(rng.normal(size=n // 800 + 2), 3.0)
  g = np.interp(np.arange(n) / 800.0, np.arange(g.size), g / (np.abs(g).max() + 1e-9))
  x = x * 10 ** (drift_db * g / 20)
  info["drift_db"] = float(drift_db)
  speech_rms = np.sqrt(np.mean(x[np.abs(x) > 1e-4] ** 2)) if np.any(np.abs(x) > 1e-4) else 0.0
  if rng.uniform() < 0.85:
    kind = NOISES[rng.integers(len(NOISES))]
    snr = rng.uniform(10.0, 40.0)
    x = x + _noise(rng, n, kind) * speech_rms * 10 ** (-snr / 20)
    info.update(noise=kind, snr_db=float(snr))
  x = x + 1e-4 * rng.normal(size=n)  # a faint floor: no digital silence
  peak = 10 ** (rng.uniform(-20.0, -1.0) / 20)
  x = x * (peak / max(np.abs(x).max(), 1e-9))
  info["peak_dbfs"] = float(20 * np.log10(peak))
  return np.clip(x, -1, 1).astype(np.float32), info
