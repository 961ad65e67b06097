"""Video quality against the true frames (PSNR, SSIM, L1) and temporal smoothness (jitter, seams).

Every function takes videos channels-last [T, H, W, C] with pixels in [-1, 1] (the project's
convention) and returns a Python float. Intensities are reported in [0, 1] units: L1 and jitter
halve the [-1, 1] differences, PSNR uses the peak 2 of [-1, 1] (the same as 1 in [0, 1]).

Jitter: the paper measures jitter as the jerk of a head model fitted to the generated frames; we
have no landmark detector to fit one to generated pixels, so `pixel_jitter` measures the jerk of
the pixels themselves (mean |third temporal difference|). It is only meaningful beside the same
number of the true frames of the same clip, which carry the real motion; flicker and seams raise it
above that. `boundary_jump` isolates the seams of temporal outpainting: the frame-to-frame change
across the first new frame of each window, relative to the change between all other neighbours.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

PSNR_CAP_DB = 120.0            # PSNR of identical videos (the MSE is floored at 1e-12)
SSIM_SIGMA, SSIM_WINDOW = 1.5, 11
SSIM_K1, SSIM_K2 = 0.01, 0.03  # Wang et al. 2004, for a dynamic range of 1


def _video(x, name: str) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 4:
    raise ValueError(f"{name} has shape {x.shape}; expected a video [T, H, W, C].")
  return x


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
  a, b = _video(a, "the first video"), _video(b, "the second video")
  if a.shape != b.shape:
    raise ValueError(f"videos of shapes {a.shape} and {b.shape} are compared; expected equal "
                     "shapes [T, H, W, C].")
  return a, b


def psnr(a, b) -> float:
  """PSNR in dB of two videos [T, H, W, C] in [-1, 1] (peak 2); PSNR_CAP_DB when identical."""
  a, b = _pair(a, b)
  mse = float(np.mean(np.square((a - b) / 2.0)))
  return 10.0 * math.log10(1.0 / max(mse, 10.0 ** (-PSNR_CAP_DB / 10.0)))


def l1(a, b) -> float:
  """Mean absolute difference of two videos [T, H, W, C] in [-1, 1], in [0, 1] intensity units."""
  a, b = _pair(a, b)
  return float(np.mean(np.abs(a - b)) / 2.0)


def _gaussian_taps() -> np.ndarray:
  r = SSIM_WINDOW // 2
  g = np.exp(-0.5 * (np.arange(-r, r + 1) / SSIM_SIGMA) ** 2)
  return g / g.sum()


def _blur_valid(x: np.ndarray) -> np.ndarray:
  """Separable Gaussian filter of [T, H, W, C] over H and W at the 'valid' positions only
  [T, H - 10, W - 10, C]: the centre outputs of a padded filter never read the padding."""
  g, r = _gaussian_taps(), SSIM_WINDOW // 2
  x = ndimage.correlate1d(ndimage.correlate1d(x, g, axis=1), g, axis=2)
  return x[:, r:-r, r:-r]


def ssim_per_frame(a, b) -> np.ndarray:
  """SSIM per frame [T] of two videos [T, H, W, C] in [-1, 1] (definition in `ssim`)."""
  a, b = _pair(a, b)
  if min(a.shape[1:3]) < SSIM_WINDOW:
    raise ValueError(f"frames are {a.shape[2]}x{a.shape[1]}; SSIM expects at least "
                     f"{SSIM_WINDOW}x{SSIM_WINDOW} pixels (its Gaussian window).")
  a, b = (a + 1.0) / 2.0, (b + 1.0) / 2.0
  c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
  mu_a, mu_b = _blur_valid(a), _blur_valid(b)
  var_a = _blur_valid(a * a) - mu_a ** 2
  var_b = _blur_valid(b * b) - mu_b ** 2
  cov = _blur_valid(a * b) - mu_a * mu_b
  s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) *
                                                   (var_a + var_b + c2))
  return s.mean(axis=(1, 2, 3))


def ssim(a, b) -> float:
  """Mean SSIM of two videos [T, H, W, C] in [-1, 1]: Wang et al. (2004) on [0, 1] intensities,
  Gaussian window (sigma 1.5, 11 taps) over valid positions only, K1 = 0.01, K2 = 0.03, each
  channel separately; the map is averaged over positions and channels per frame, then over
  frames. 1 for identical videos."""
  return float(ssim_per_frame(a, b).mean())


def pixel_jitter(video) -> float:
  """Jerk of the pixels: mean |third temporal difference| of a video [T >= 4, H, W, C] in [-1, 1],
  in [0, 1] intensity units per frame^3 (0 for a video constant or linear in time)."""
  v = _video(video, "video")
  if v.shape[0] < 4:
    raise ValueError(f"video has {v.shape[0]} frames; jitter expects at least 4 (a third "
                     "temporal difference).")
  return float(np.mean(np.abs(np.diff(v, n=3, axis=0))) / 2.0)


def boundary_frames(length: int, starts, window: int) -> np.ndarray:
  """First newly generated frame of each window after the first [num_windows - 1]: the end of the
  previous window (the windowed sampler keeps the frames before it as context)."""
  starts = np.asarray(starts, np.int64)
  ends = starts[:-1] + window
  return ends[(ends > 0) & (ends < length)]


def boundary_jump(video, starts, window: int) -> float:
  """Seam strength of outpainting in a video [T, H, W, C]: the mean |x[t+1] - x[t]| over the pairs
  whose t + 1 is the first new frame of a window (`starts` from windowed_sampler.window_starts,
  `window` frames each) divided by the same mean over all other neighbouring pairs. 1 is
  seamless; nan when there is no boundary, no other pair, or the other pairs do not change."""
  v = _video(video, "video")
  steps = np.mean(np.abs(np.diff(v, axis=0)), axis=(1, 2, 3))  # [T - 1]: pair (t, t + 1)
  seam = np.zeros(steps.shape, bool)
  seam[boundary_frames(v.shape[0], starts, window) - 1] = True
  if not seam.any() or seam.all() or not np.any(steps[~seam] > 0):
    return float("nan")
  return float(steps[seam].mean() / steps[~seam].mean())
