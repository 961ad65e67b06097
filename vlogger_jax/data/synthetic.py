"""Synthetic talking humans: clips in the dataset format, generated deterministically from a seed.

With no data at hand every command still runs end to end on these clips. A clip is
a random identity (head shape, skin, hair, eyes, clothes, background, camera, framing from a tight
face to the torso with hands) saying English sentences (data/sentences.py) in an espeak-ng voice,
recorded under random conditions (data/acoustics.py). The speech drives the motion through fixed,
documented rules (docs/synthetic.md), so the audio-to-motion relation is real and a model can
learn it:

- mouth: espeak-ng's own phoneme times drive viseme targets (jaw, lip closure, rounding,
  spreading, lower lip to teeth), blended with anticipation and carry-over (data/visemes.py):
  /p b m/ close the lips, open vowels open the jaw, silences close the mouth.
- head: slow drift plus a nod on every stressed vowel (louder ones nod more); brows rise on them.
- body: the forearms rise into the gesture space while a phrase is spoken and beat on stressed
  vowels; they relax in pauses.
- eyes: blinks every 2-6 s (about 150 ms), gaze saccades between fixations; independent of audio.

Split of the work: `plan_clip` draws every random number with np.random.default_rng(seed) on the
host and computes the audio and the per-frame parameters (cheap, no rendering: enough for the
motion model); `render_frames` draws all frames of one or more clips in one jitted call (the head
with render.render_controls, the neck, torso, arms and hands as shaded 2-D signed-distance shapes
placed by the body keypoints, over the background); `generate_clip` does both.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage
from scipy import signal

from vlogger_jax import body as body_lib
from vlogger_jax import contracts
from vlogger_jax import geometry
from vlogger_jax import head as head_lib
from vlogger_jax import render
from vlogger_jax import speech as speech_lib
from vlogger_jax.data import acoustics
from vlogger_jax.data import schema
from vlogger_jax.data import sentences
from vlogger_jax.data import visemes

FPS = contracts.FPS
SR = contracts.SAMPLE_RATE
E = head_lib.EXPRESSION

# Test seeds (builders.TEST_SEED_OFFSET and up) speak held-out sentences with held-out voices.
HELD_OUT_SEEDS = 1_000_000
# The speech has its own random stream, so evaluation can recompute a clip's phonemes
# (`clip_speech`) without planning the whole clip.
_SPEECH_STREAM = 7
# Neutral head height crown to chin (m); framing picks how much of the image it fills.
HEAD_HEIGHT_M = 0.23


def _rot(axis, angle):
  """Rotation matrices [..., 3, 3] about a coordinate axis (0 x, 1 y, 2 z) by angles [...]."""
  c, s = np.cos(angle), np.sin(angle)
  o, z = np.ones_like(angle), np.zeros_like(angle)
  if axis == 0:
    rows = [[o, z, z], [z, c, -s], [z, s, c]]
  elif axis == 1:
    rows = [[c, z, s], [z, o, z], [-s, z, c]]
  else:
    rows = [[c, -s, z], [s, c, z], [z, z, o]]
  return np.stack([np.stack(r, -1) for r in rows], -2)


def _gaussian_filter1d(x, sigma, axis=-1, mode="reflect"):
  """ndimage.gaussian_filter1d (truncate 4), by FFT convolution when the kernel is long.

  The speech curves are smoothed at the audio rate with kernels of thousands of taps; direct
  convolution made planning a clip take seconds.
  """
  if sigma < 32:
    return ndimage.gaussian_filter1d(x, sigma, axis=axis, mode=mode)
  radius = int(4.0 * sigma + 0.5)
  k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  k /= k.sum()
  x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
  pad = [(0, 0)] * (x.ndim - 1) + [(radius, radius)]
  xp = np.pad(x, pad, mode={"nearest": "edge", "reflect": "symmetric", "wrap": "wrap"}[mode])
  out = signal.oaconvolve(xp, k.reshape((1,) * (x.ndim - 1) + (-1,)), mode="valid", axes=-1)
  return np.moveaxis(out, -1, axis)


def _smooth_noise(rng, n, sigma, scale=1.0):
  """Low-pass Gaussian noise [n] with standard deviation `scale` (sigma in samples)."""
  x = _gaussian_filter1d(rng.normal(size=n + int(8 * sigma)), sigma, mode="wrap")[:n]
  # The filter's gain on white noise is known, so short clips are not renormalised (which would
  # blow a nearly flat segment up to full scale).
  return scale * x * np.sqrt(2 * np.sqrt(np.pi) * sigma)


def _hsv(h, s, v):
  return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32)


# ----------------------------------------------------------------------------------------------
# Identity, camera and framing.


def _identity(rng):
  t = rng.uniform()
  skin = (1 - t) * np.array([0.93, 0.76, 0.64]) + t * np.array([0.36, 0.23, 0.15])
  skin = np.clip(skin * rng.uniform(0.95, 1.05, 3), 0, 1)
  hair = [np.array([0.06, 0.05, 0.05]), np.array([0.22, 0.13, 0.07]), np.array([0.45, 0.3, 0.15]),
          np.array([0.78, 0.63, 0.38]), np.array([0.55, 0.22, 0.10]), np.array([0.6, 0.6, 0.6])]
  hair = np.clip(hair[rng.choice(len(hair), p=[0.3, 0.3, 0.12, 0.1, 0.08, 0.1])]
                 * rng.uniform(0.85, 1.15, 3), 0, 1)
  iris = [np.array([0.28, 0.16, 0.08]), np.array([0.25, 0.42, 0.6]), np.array([0.3, 0.45, 0.25]),
          np.array([0.4, 0.42, 0.45])]
  iris = iris[rng.choice(4, p=[0.55, 0.2, 0.15, 0.1])]
  shirt = _hsv(rng.uniform(), rng.uniform(0.15, 0.75), rng.uniform(0.2, 0.9))
  light = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.8, -0.2), -rng.uniform(0.5, 0.9)])
  return {
      "skin": skin.astype(np.float32), "hair": hair.astype(np.float32),
      "iris": iris.astype(np.float32), "shirt": shirt,
      "long_sleeves": bool(rng.uniform() < 0.5),
      "light": (light / np.linalg.norm(light)).astype(np.float32),
      "ambient": float(rng.uniform(0.32, 0.45)), "diffuse": float(rng.uniform(0.6, 0.78)),
      "shoulder_half_width": float(rng.uniform(0.16, 0.2)),
  }


def _background(rng):
  h = rng.uniform()
  a = _hsv(h, rng.uniform(0.0, 0.45), rng.uniform(0.25, 0.9))
  b = _hsv(h + rng.normal(0, 0.08), rng.uniform(0.0, 0.45), rng.uniform(0.2, 0.9))
  ang = rng.uniform(0, 2 * np.pi)
  blobs = np.concatenate([rng.uniform(0, 1, (4, 2)), rng.uniform(0.08, 0.3, (4, 1)),
                          rng.normal(0, 0.08, (4, 1))], 1)
  return {
      "colour_a": a, "colour_b": b,
      "direction": np.array([np.cos(ang), np.sin(ang)], np.float32),
      "stripe": np.array([rng.uniform(4, 14), rng.uniform(0, 2 * np.pi),
                          rng.choice([0.0, rng.uniform(0.02, 0.06)])], np.float32),
      "blobs": blobs.astype(np.float32) * (rng.uniform() < 0.6),
  }


# ----------------------------------------------------------------------------------------------
# Speech: sentences spoken by an espeak-ng voice, with the synthesizer's phoneme times.


@dataclasses.dataclass
class Talk:
  """The speech of one clip: clean and recorded audio, what was said, by whom, and when.

  clean: [S] float32 speech as synthesized; audio: [S] float32, the same under the clip's
  recording conditions (acoustics.augment), what the clip holds. phonemes: (espeak label,
  start_s, end_s) in time order, within the clip; words: (word, start_s, end_s).
  """
  clean: np.ndarray
  audio: np.ndarray
  phonemes: list
  words: list
  text: str
  voice: sentences.Voice
  conditions: dict


def _synthesize(text: str, voice: sentences.Voice) -> speech_lib.Speech:
  """One sentence from espeak-ng's library, with phoneme times; one-sentence error without it."""
  out = speech_lib.synthesize(text, engine="espeak", voice=voice.name, rate=voice.rate,
                              pitch=voice.pitch)
  if out.engine != "espeak-library" or not out.phonemes:
    raise speech_lib.SpeechError(
        "the synthetic talkers need espeak-ng's library with phoneme timing, which comes with "
        "the espeakng-loader wheel; install it with `pip install espeakng-loader`.")
  return out


def clip_speech(seed: int, num_frames: int = schema.CLIP_FRAMES) -> Talk:
  """The speech of the clip of `seed`, `num_frames` long: sentences, voice, phoneme times, audio.

  Deterministic from the seed through its own random stream; seeds >= HELD_OUT_SEEDS use the
  held-out side of data/sentences.py (sentences and voices never heard in training).
  """
  rng = np.random.default_rng([int(seed), _SPEECH_STREAM])
  held_out = int(seed) >= HELD_OUT_SEEDS
  num_samples = schema.num_samples(num_frames)
  duration = num_samples / SR
  voice = sentences.voice(rng, held_out)
  pieces, phonemes, words, texts = [], [], [], []
  # Short clips (the super-resolution sets' 1 s) start sooner, so that they too show speech.
  t = min(rng.uniform(0.1, 0.6), 0.3 * duration)
  pieces.append(np.zeros(int(round(t * SR)), np.float32))
  while t < duration - min(0.4, 0.3 * duration):
    text = sentences.sentence(rng, held_out)
    out = _synthesize(text, voice)
    offset = sum(p.size for p in pieces) / SR
    phonemes += [(lab, a + offset, b + offset) for lab, a, b in out.phonemes]
    words += [(w, a + offset, b + offset) for w, a, b in out.words]
    texts.append(text)
    pieces.append(out.audio)
    gap = rng.uniform(0.0, 0.6)  # beyond espeak's own pause after a sentence
    pieces.append(np.zeros(int(round(gap * SR)), np.float32))
    phonemes.append(("_", offset + out.duration, offset + out.duration + gap))
    t = sum(p.size for p in pieces) / SR
  clean = np.concatenate(pieces)[:num_samples]
  clean = np.pad(clean, (0, num_samples - clean.size))
  phonemes = [(lab, a, min(b, duration)) for lab, a, b in phonemes if a < duration and b > a]
  words = [(w, a, min(b, duration)) for w, a, b in words if a < duration]
  audio, conditions = acoustics.augment(rng, clean)
  return Talk(clean=clean.astype(np.float32), audio=audio, phonemes=phonemes, words=words,
              text=" ".join(texts), voice=voice, conditions=conditions)


def bilabial_intervals(clip_id: str, num_frames: int,
                       audio: np.ndarray) -> list[tuple[float, float]] | None:
  """(start_s, end_s) of every /p b m/ in a synthetic clip of `num_frames`, recomputed from its
  id's seed; None for a clip that is not synthetic. audio [S] int16 is the clip's own: a clip the
  current generator would not make (a dataset built by an older one) is a ValueError.
  """
  clip_id = clip_id.decode() if isinstance(clip_id, bytes) else str(clip_id)
  if not clip_id.startswith("synthetic-") or not clip_id[len("synthetic-"):].isdigit():
    return None
  talk = clip_speech(int(clip_id[len("synthetic-"):]), num_frames)
  mine = np.round(talk.audio * 32767).astype(np.int32)
  theirs = np.asarray(audio).astype(np.int32)
  # A few units of slack: another machine's FFTs may round differently; another generator's
  # speech differs everywhere.
  if mine.shape != theirs.shape or np.abs(mine - theirs).max() > 16:
    raise ValueError(f"clip {clip_id} does not hold the speech that the synthetic generator makes "
                     "for its seed; expected a dataset built by this version (rebuild it with "
                     "launch/build_dataset.py).")
  return [(a, b) for lab, a, b in talk.phonemes if visemes.is_bilabial(lab)]


def _stress_times(phonemes) -> np.ndarray:
  """Onsets (s) of the vowels espeak marks with primary stress."""
  return np.array([a for lab, a, _ in phonemes if lab.startswith("'") and visemes.is_vowel(lab)])


def _phrases(phonemes, min_pause: float = 0.2) -> list[tuple[float, float]]:
  """(start, end) of the stretches of speech between pauses of at least `min_pause` s."""
  out, start, end = [], None, None
  for lab, a, b in phonemes:
    if visemes.is_pause(lab):
      if b - a >= min_pause and start is not None:
        out.append((start, end))
        start = None
      continue
    start = a if start is None else start
    end = b
  if start is not None:
    out.append((start, end))
  return out


def _stress_energy(clean, stress_t) -> np.ndarray:
  """Loudness of each stressed vowel (RMS of its first 80 ms) relative to the loudest: [N]."""
  if not len(stress_t):
    return np.zeros(0)
  rms = np.array([np.sqrt(np.mean(clean[int(t * SR):int(t * SR) + 1280] ** 2) + 1e-12)
                  for t in stress_t])
  return rms / rms.max()


# ----------------------------------------------------------------------------------------------
# The plan: every parameter of a clip, without the frames.


@dataclasses.dataclass
class Plan:
  """Everything about one clip except its frames (numpy arrays, float32)."""
  clip_id: str
  audio: np.ndarray  # [S] int16
  shape: np.ndarray  # [64]
  fov: float
  expression: np.ndarray  # [T, 64]
  head_pose: np.ndarray  # [T, 9]
  body_keypoints: np.ndarray  # [T, 75, 2]
  body_visibility: np.ndarray  # [T, 75]
  style: dict  # colours, radii (m), pixels per metre [T], background


def _frame_pulses(times, amps, num_frames, rise, fall, delay=0.0):
  """Sum of smooth pulses (rise then exponential-ish fall, seconds) at `times` -> [T]."""
  tf = (np.arange(num_frames) + 0.5) / FPS
  out = np.zeros(num_frames)
  for t0, a in zip(times, amps):
    x = tf - t0 - delay
    up = np.clip(x / rise, 0, 1)
    up = up * up * (3 - 2 * up)
    out += a * np.where(x < rise, up, np.exp(-((x - rise) / fall)**2))
  return out


def _face_keypoint_ids(model):
  """Landmark indices for pose keypoints 0..10 and the ear vertex of each side."""
  names = model.landmark_names
  lm = {n: names.index(n) for n in names}
  ids = [lm["nose_bridge_3"], lm["left_eye_0"], lm["left_iris_centre"], lm["left_eye_3"],
         lm["right_eye_0"], lm["right_iris_centre"], lm["right_eye_3"], -1, -2,
         lm["outer_lip_6"], lm["outer_lip_0"]]
  labels = np.asarray(model.tri_labels)
  faces = np.asarray(model.faces)
  tmpl = np.asarray(model.template)
  ear_v = np.unique(faces[labels == head_lib.CLASS["ears"]])
  ears = []
  for side in (1.0, -1.0):  # subject's left ear has x > 0
    vs = ear_v[tmpl[ear_v, 0] * side > 0]
    c = tmpl[vs].mean(0)
    ears.append(int(vs[np.argmin(np.linalg.norm(tmpl[vs] - c, axis=1))]))
  return np.array(ids), np.array(ears)


@functools.partial(jax.jit, static_argnames=("size",))
def _project_face(model, shape, expression, head_pose, fov, lm_ids, ear_ids, size):
  verts, joints = head_lib.forward(model, shape, expression, head_pose, return_joints=True)
  lms = head_lib.landmarks(model, verts)
  pts = jnp.concatenate([lms[:, lm_ids[:7]], verts[:, ear_ids], lms[:, lm_ids[9:]]], axis=1)
  pix, _ = geometry.project(pts, fov, size, size)
  return pix / size, joints[:, 0]


_HAND = np.array([  # wrist, thumb cmc..tip, index, middle, ring, pinky (mcp, pip, dip, tip); (u, v) m
    (0, 0), (0.025, 0.02), (0.045, 0.036), (0.063, 0.046), (0.08, 0.053),
    (0.085, 0.022), (0.118, 0.026), (0.14, 0.027), (0.158, 0.028),
    (0.088, 0.004), (0.125, 0.004), (0.149, 0.004), (0.168, 0.004),
    (0.084, -0.014), (0.117, -0.017), (0.139, -0.019), (0.156, -0.02),
    (0.076, -0.03), (0.099, -0.035), (0.114, -0.038), (0.127, -0.04)], np.float64)


@dataclasses.dataclass
class _Camera:
  """Where the camera looks: fov (degrees), focal length per unit of image size, distance to the
  head (m) and the head's normalised image position (cx, cy)."""
  fov: float
  focal: float
  dist: float
  cx: float
  cy: float


def _camera(rng) -> _Camera:
  """Camera and framing: u = 0 is a tight face, u = 1 the torso with hands."""
  u = rng.uniform() ** 0.8
  fov = float(rng.uniform(22, 48))
  focal = float(geometry.focal_from_fov(fov, 1, 1))  # per unit of image size
  head_frac = float(np.exp((1 - u) * np.log(0.6) + u * np.log(0.2)))
  dist = focal * HEAD_HEIGHT_M / head_frac
  cy = (1 - u) * 0.44 + u * 0.27 + rng.normal(0, 0.02)
  cx = 0.5 + rng.normal(0, 0.04)
  return _Camera(fov=fov, focal=focal, dist=dist, cx=cx, cy=cy)


def _mouth(rng, phonemes, num_frames, duration):
  """The mouth's articulation [T, 6] (visemes.TARGET_NAMES) at each frame's centre, with the
  speaker's anticipation (40-70 ms), carry-over (30-50 ms), lead (20-40 ms) and jaw scale
  (0.85-1.15) drawn here."""
  times = (np.arange(num_frames) + 0.5) / FPS
  return visemes.articulation(phonemes, times, duration, anticipation_s=rng.uniform(0.04, 0.07),
                              carryover_s=rng.uniform(0.03, 0.05), lead_s=rng.uniform(0.02, 0.04),
                              jaw_scale=rng.uniform(0.85, 1.15))


def _blinks(rng, num_frames):
  """Eyelid closure [T] in [0, 1]: a renewal process with 2-6 s gaps; each blink is centred on a
  frame and closes fully."""
  blink = np.zeros(num_frames)
  tb = rng.uniform(0.3, 3.0)
  while tb < num_frames / FPS:
    centre = int(tb * FPS)
    half = rng.uniform(0.06, 0.09) * FPS  # half-duration in frames (~150 ms blinks)
    idx = np.arange(num_frames)
    blink = np.maximum(blink, np.clip(1.3 * (1 - np.abs(idx - centre) / half), 0, 1))
    tb += rng.uniform(2.0, 6.0)
  return blink


def _gaze(rng, num_frames):
  """Gaze [T, 2] (horizontal, vertical): fixations (mostly at the camera) joined by 2-frame
  saccades."""
  gaze = np.zeros((num_frames, 2))
  t0, prev = 0, np.zeros(2)
  while t0 < num_frames:
    hold = int(rng.uniform(0.4, 2.5) * FPS)
    nxt = (rng.normal(0, [0.07, 0.05]) if rng.uniform() < 0.6
           else rng.normal(0, [0.35, 0.2]))
    ramp = np.clip((np.arange(hold) + 1) / 2.0, 0, 1)[:, None]
    seg = prev + (nxt - prev) * ramp
    gaze[t0:t0 + hold] = seg[: max(0, min(hold, num_frames - t0))]
    prev, t0 = nxt, t0 + hold
  return gaze


def _expression(rng, num_frames, mouth, stress_t, stress_amp):
  """Expression [T, 64] float32: the mouth from its articulation [T, 6], smiles, brows raised on
  stressed syllables (times stress_t, seconds; loudness stress_amp [N] in [0, 1]), blinks, gaze."""
  expr = np.zeros((num_frames, contracts.NUM_EXPRESSION))
  expr[:, E["jaw_sideways"]] = _smooth_noise(rng, num_frames, 12, 0.04)
  base_smile = np.clip(rng.uniform(-0.1, 0.35) + _smooth_noise(rng, num_frames, 30, 0.12), -0.1,
                       0.7)
  for side in ("left", "right"):
    expr[:, E[f"smile_{side}"]] = base_smile
    expr[:, E[f"cheek_raise_{side}"]] = 0.6 * np.clip(base_smile, 0, None)
  visemes.expression_from_articulation(mouth, expr)
  brows = _frame_pulses(stress_t, rng.uniform(0.3, 0.8) * (0.4 + 0.6 * stress_amp), num_frames,
                        0.08, 0.25)
  brow_base = rng.uniform(-0.1, 0.3)
  expr[:, E["brow_raise_left"]] = brow_base + brows
  expr[:, E["brow_raise_right"]] = brow_base + brows * rng.uniform(0.8, 1.0)
  blink = _blinks(rng, num_frames)
  lid = np.clip(rng.normal(0.05, 0.08), -0.15, 0.25)
  expr[:, E["blink_left"]] = lid + (1 - lid) * blink
  expr[:, E["blink_right"]] = lid + (1 - lid) * blink
  gaze = _gaze(rng, num_frames)
  expr[:, E["gaze_horizontal"]] = gaze[:, 0]
  expr[:, E["gaze_vertical"]] = gaze[:, 1]
  return expr.astype(np.float32)


def _head_pose(rng, num_frames, stress_t, stress_amp, camera: _Camera):
  """(head_pose [T, 9] float32, roll [T]): baseline + slow drift + nods on stressed syllables
  (+x rotation lowers the nose; louder ones nod more), the head centred where the camera frames
  it."""
  nods = _frame_pulses(stress_t, rng.uniform(0.04, 0.09, len(stress_t)) * (0.5 + 0.5 * stress_amp),
                       num_frames, 0.12, 0.22, delay=0.02)
  pitch = rng.normal(0, 0.05) + _smooth_noise(rng, num_frames, 20, 0.04) + nods
  yaw = rng.normal(0, 0.15) + _smooth_noise(rng, num_frames, 24, 0.09)
  roll = rng.normal(0, 0.04) + _smooth_noise(rng, num_frames, 24, 0.035)
  rot = _rot(2, roll) @ _rot(1, yaw) @ _rot(0, pitch)
  sway = np.stack([_smooth_noise(rng, num_frames, 30, 0.012),
                   _smooth_noise(rng, num_frames, 30, 0.006),
                   _smooth_noise(rng, num_frames, 30, 0.015)], -1)
  c = camera
  centre = np.array([(c.cx - 0.5) * c.dist / c.focal, (c.cy - 0.5) * c.dist / c.focal, c.dist])
  trans = centre + sway  # the head centre (model origin) in the camera frame, before rotation
  head_pose = np.concatenate([rot[..., :, 0], rot[..., :, 1], trans], -1).astype(np.float32)
  return head_pose, roll


def _face(model, shape, expression, head_pose, fov, resolution):
  """(face keypoints 0..10 [T, 11, 2] normalised, root joint [T, 3] in the camera frame, where
  the neck meets the torso), both float64, from the projected head."""
  lm_ids, ear_ids = _face_keypoint_ids(model)
  face_kp, root_cam = _project_face(model, jnp.asarray(shape), jnp.asarray(expression),
                                    jnp.asarray(head_pose), jnp.float32(fov), jnp.asarray(lm_ids),
                                    jnp.asarray(ear_ids), size=resolution)
  return np.asarray(face_kp, np.float64), np.asarray(root_cam, np.float64)


def _arms(rng, num_frames, phrases, stress_t, roll, half_width):
  """{side: (shoulder, elbow, wrist [T, 2], hand [T, 21, 2], hip [T, 2])} in metres relative to
  the root joint (x right, y down): a 2-D kinematic chain whose forearms rise while a phrase is
  spoken and beat on stressed syllables."""
  gesture_rate = rng.uniform(0.3, 1.0)
  phrase_on = np.zeros(num_frames)
  tf = (np.arange(num_frames) + 0.5) / FPS
  for (p0, p1) in phrases:
    phrase_on = np.maximum(phrase_on, ((tf > p0 - 0.2) & (tf < p1 + 0.1)).astype(float))
  phrase_on = _gaussian_filter1d(phrase_on, 0.2 * FPS, mode="nearest")
  beats = {}
  for side in ("left", "right"):
    pick = rng.uniform(size=len(stress_t)) < gesture_rate * (0.8 if side == "right" else 0.6)
    amps = rng.uniform(0.5, 1.0, len(stress_t)) * pick
    beats[side] = _frame_pulses(stress_t, amps, num_frames, 0.13, 0.28, delay=-0.05)
  tilt = 0.3 * roll + _smooth_noise(rng, num_frames, 30, 0.02)
  shoulder_c = np.stack([np.zeros(num_frames), np.full(num_frames, 0.115)], -1)
  across = np.stack([np.cos(tilt), np.sin(tilt)], -1)
  idle = {s: _smooth_noise(rng, num_frames, 25, 0.08) for s in ("left", "right")}
  joints_m = {}
  for side, sgn in (("left", 1.0), ("right", -1.0)):
    g = gesture_rate * 0.45 * phrase_on + beats[side]
    sh = shoulder_c + sgn * half_width * across
    alpha = rng.uniform(0.08, 0.18) + 0.25 * g + 0.3 * idle[side]
    elbow = sh + 0.27 * np.stack([sgn * np.sin(alpha), np.cos(alpha)], -1)
    phi = rng.uniform(0.55, 0.85) + 1.25 * g + idle[side]
    length = 0.16 + 0.05 * np.clip(g, 0, 1)
    fdir = np.stack([-sgn * np.sin(phi), np.cos(phi)], -1)
    wrist = elbow + length[:, None] * fdir
    # The hand continues the forearm, the fingers drooping a little; thumb towards the top.
    droop = -sgn * (0.35 - 0.25 * np.clip(g, 0, 1))
    ud = np.stack([np.cos(droop) * fdir[:, 0] - np.sin(droop) * fdir[:, 1],
                   np.sin(droop) * fdir[:, 0] + np.cos(droop) * fdir[:, 1]], -1)
    vd = sgn * np.stack([-ud[:, 1], ud[:, 0]], -1)
    hand = _HAND * np.array([0.8, 1.0])
    hand_pts = wrist[:, None] + hand[None, :, :1] * ud[:, None] + hand[None, :, 1:] * vd[:, None]
    hip = shoulder_c + np.array([sgn * 0.14, 0.5])
    joints_m[side] = (sh, elbow, wrist, hand_pts, hip)
  return joints_m


def _body_keypoints(face_kp, joints_m, anchor, scale):
  """(keypoints [T, 75, 2] float64, visibility [T, 75] float32): face keypoints 0..10 as given,
  then the shoulders, arms, hands and hips of `joints_m` (metres, _arms) mapped into the image by
  anchor [T, 2] (the root joint's normalised image position) and scale [T] (normalised image
  units per metre); the legs are placed below the hips and marked invisible."""
  num_frames = face_kp.shape[0]
  kp = np.zeros((num_frames, contracts.NUM_KEYPOINTS, 2))
  kp[:, :11] = face_kp

  def img(p):  # metres relative to the root joint -> normalised image coordinates
    return anchor[:, None] + np.asarray(p).reshape(num_frames, -1, 2) * scale[:, None, None]

  for side, off, ids in (("left", body_lib.LEFT_HAND_OFFSET, (11, 13, 15, 17, 19, 21, 23)),
                         ("right", body_lib.RIGHT_HAND_OFFSET, (12, 14, 16, 18, 20, 22, 24))):
    sh, elbow, wrist, hand_pts, hip = joints_m[side]
    hp = img(hand_pts)
    kp[:, off:off + body_lib.NUM_HAND] = hp
    for i, p in zip(ids, (sh, elbow, wrist)):
      kp[:, i] = img(p)[:, 0]
    kp[:, ids[3]] = hp[:, 17]  # pinky knuckle
    kp[:, ids[4]] = hp[:, 5]  # index knuckle
    kp[:, ids[5]] = hp[:, 3]  # thumb
    kp[:, ids[6]] = img(hip)[:, 0]
    for j in (25, 27, 29, 31) if side == "left" else (26, 28, 30, 32):
      kp[:, j] = img(hip + np.array([0.0, 0.5 + 0.1 * (j >= 27) + 0.05 * (j >= 29)]))[:, 0]
  inside = np.all((kp >= 0) & (kp <= 1), -1)
  vis = inside.astype(np.float32)
  vis[:, 25:33] = 0.0  # legs are below the frame or hidden: the torso continues off-screen
  return kp, vis


def plan_clip(seed: int, num_frames: int = schema.CLIP_FRAMES, resolution: int = 128,
              head_model=None) -> Plan:
  """All parameters and the audio of the clip of `seed` (no frames): see generate_clip.

  Every random number comes from np.random.default_rng(seed), in this order: identity,
  background, head shape, camera, mouth dynamics, expression, head pose, arms (each helper draws
  its own in turn, so the order of the calls below is part of the output); the speech draws from
  its own stream (clip_speech).
  """
  if num_frames < 1 or resolution < 16 or resolution > schema.MAX_RESOLUTION or resolution % 2:
    raise ValueError(f"plan_clip: num_frames={num_frames}, resolution={resolution}; expected "
                     f"num_frames >= 1 and an even resolution in [16, {schema.MAX_RESOLUTION}].")
  model = head_model if head_model is not None else head_lib.load_default()
  rng = np.random.default_rng(seed)
  t_count = int(num_frames)
  ident = _identity(rng)
  bg = _background(rng)
  # Identity shape: sigma 0.7 keeps heads plausible; clipping stops rare extreme chins.
  shape = np.clip(rng.normal(0, 0.7, contracts.NUM_SHAPE), -1.6, 1.6).astype(np.float32)
  camera = _camera(rng)

  talk = clip_speech(seed, t_count)
  stress_t = _stress_times(talk.phonemes)
  stress_amp = _stress_energy(talk.clean, stress_t)
  mouth = _mouth(rng, talk.phonemes, t_count, talk.audio.size / SR)
  expression = _expression(rng, t_count, mouth, stress_t, stress_amp)
  head_pose, roll = _head_pose(rng, t_count, stress_t, stress_amp, camera)
  phrases = _phrases(talk.phonemes)

  face_kp, root_cam = _face(model, shape, expression, head_pose, camera.fov, resolution)
  # The body lies in the plane of the root joint.
  z = root_cam[:, 2]
  scale = camera.focal / z  # normalised image units per metre
  anchor = np.stack([root_cam[:, 0] / z * camera.focal + 0.5,
                     root_cam[:, 1] / z * camera.focal + 0.5], -1)  # the root joint in the image
  joints_m = _arms(rng, t_count, phrases, stress_t, roll, ident["shoulder_half_width"])
  kp, vis = _body_keypoints(face_kp, joints_m, anchor, scale)

  style = dict(ident)
  style.update({"background": bg, "scale_px_per_m": (scale * resolution).astype(np.float32),
                "root_px": (anchor * resolution).astype(np.float32),
                "resolution": resolution})
  audio16 = np.round(talk.audio * 32767).astype(np.int16)
  return Plan(clip_id=f"synthetic-{seed:08d}", audio=audio16, shape=shape,
              fov=np.float32(camera.fov), expression=expression, head_pose=head_pose,
              body_keypoints=kp.astype(np.float32), body_visibility=vis, style=style)


# ----------------------------------------------------------------------------------------------
# Rendering: all frames of one or more clips in one jitted call.


def _capsule(px, py, a, b, r):
  """Signed distance [F, H, W] (pixels) to capsules from a [F, 2] to b [F, 2] of radius r [F]."""
  ax, ay = a[:, 0, None, None], a[:, 1, None, None]
  bx, by = b[:, 0, None, None] - ax, b[:, 1, None, None] - ay
  qx, qy = px - ax, py - ay
  h = jnp.clip((qx * bx + qy * by) / jnp.maximum(bx * bx + by * by, 1e-6), 0.0, 1.0)
  return jnp.hypot(qx - h * bx, qy - h * by) - r[:, None, None]


def _smooth_min(a, b, k):
  """Union of two signed distances [F, H, W] with a round fillet of k [F] pixels (no shading seam)."""
  k = k[:, None, None]
  h = jnp.maximum(k - jnp.abs(a - b), 0.0) / k
  return jnp.minimum(a, b) - h * h * k * 0.25


def _convex_polygon(px, py, verts):
  """Signed distance [F, H, W] to convex polygons verts [F, N, 2] (either winding)."""
  n = verts.shape[1]
  dist = jnp.inf
  sides = []
  for i in range(n):
    a, b = verts[:, i], verts[:, (i + 1) % n]
    dist = jnp.minimum(dist, _capsule(px, py, a, b, jnp.zeros(a.shape[0])))
    ex, ey = (b - a)[:, 0, None, None], (b - a)[:, 1, None, None]
    sides.append(ex * (py - a[:, 1, None, None]) - ey * (px - a[:, 0, None, None]))
  sides = jnp.stack(sides)
  inside = jnp.all(sides >= 0, 0) | jnp.all(sides <= 0, 0)
  return jnp.where(inside, -dist, dist)


def _shade(sdf, bevel, albedo, light, ambient, diffuse):
  """A shaded 2-D layer: sdf [F, H, W] px, bevel [F] px -> (rgb [F, H, W, 3], alpha [F, H, W]).

  Inside a band of width `bevel` from the edge the surface turns away like a cylinder, so arms
  and the torso read as round under the clip's light.
  """
  alpha = jnp.clip(0.5 - sdf, 0.0, 1.0)
  gy, gx = jnp.gradient(sdf, axis=(1, 2))
  norm = jnp.maximum(jnp.hypot(gx, gy), 1e-6)
  k = jnp.clip(1.0 + sdf / bevel[:, None, None], 0.0, 0.97)
  n = jnp.stack([gx / norm * k, gy / norm * k, -jnp.sqrt(1.0 - k * k)], -1)
  lambert = jnp.clip(jnp.sum(n * light[:, None, None, :], -1), 0.0, 1.0)
  shade = ambient[:, None, None] + diffuse[:, None, None] * lambert
  return albedo[:, None, None, :] * shade[..., None], alpha


def _over(dst, rgb, alpha):
  return dst * (1.0 - alpha[..., None]) + rgb * alpha[..., None]


def _background_image(p, size):
  """Per-frame background [F, H, W, 3] from gradient colours, soft stripes and blobs."""
  f = p["bg_a"].shape[0]
  ys, xs = jnp.meshgrid((jnp.arange(size) + 0.5) / size, (jnp.arange(size) + 0.5) / size,
                        indexing="ij")
  d = p["bg_dir"]
  t = jnp.clip((xs - 0.5) * d[:, 0, None, None] + (ys - 0.5) * d[:, 1, None, None] + 0.5, 0, 1)
  img = p["bg_a"][:, None, None] * (1 - t[..., None]) + p["bg_b"][:, None, None] * t[..., None]
  st = p["bg_stripe"]
  stripes = st[:, 2, None, None] * jnp.sin(st[:, 0, None, None] * 2 * jnp.pi
                                           * (xs * d[:, 1, None, None] - ys * d[:, 0, None, None])
                                           + st[:, 1, None, None])
  bl = p["bg_blobs"]  # [F, 4, (x, y, radius, amplitude)]
  r2 = (xs[None, None] - bl[:, :, 0, None, None])**2 + (ys[None, None] - bl[:, :, 1, None, None])**2
  blobs = jnp.sum(bl[:, :, 3, None, None] * jnp.exp(-r2 / (bl[:, :, 2, None, None]**2 + 1e-6)), 1)
  vignette = 1.0 - 0.3 * ((xs - 0.5)**2 + (ys - 0.5)**2)
  del f
  return jnp.clip((img + (stripes + blobs)[..., None]) * vignette[..., None], 0.0, 1.0)


@functools.partial(jax.jit, static_argnames=("size",))
def _render(model, p, size):
  """Frames [F, size, size, 3] uint8 from per-frame parameters p (see _frame_arrays)."""
  app = render.Appearance(skin=p["skin"], hair=p["hair"], iris=p["iris"], light_dir=p["light"],
                          ambient=p["ambient"], diffuse=p["diffuse"])
  ctrl = render.render_controls(model, p["shape"], p["expression"], p["head_pose"], p["kp"],
                                p["vis"], p["fov"], size, appearance=app)
  light = p["light"] / jnp.linalg.norm(p["light"], axis=-1, keepdims=True)
  amb, dif = p["ambient"], p["diffuse"]
  s = p["scale"]  # pixels per metre at the body's depth
  kp = p["kp"] * size
  ys, xs = jnp.meshgrid(jnp.arange(size) + 0.5, jnp.arange(size) + 0.5, indexing="ij")
  px, py = xs[None], ys[None]
  img = _background_image(p, size)
  skin, shirt, sleeve = p["skin"], p["shirt"], p["sleeve"]

  sh_l, sh_r = kp[:, 11], kp[:, 12]
  sh_c = 0.5 * (sh_l + sh_r)
  root = p["root_px"]
  neck = _capsule(px, py, root, sh_c, 0.05 * s)
  img = _over(img, *_shade(neck, 0.05 * s, skin * 0.8, light, amb, dif))
  # Torso: shoulders to hips, continued below the frame, rounded at the shoulders.
  # Torso: a hexagon from the base of the neck over sloping shoulders to the hips, continued
  # below the frame; round caps over the shoulders.
  down = jnp.array([0.0, 2.0])[None] * s[:, None]
  across = (sh_l - sh_r) / jnp.maximum(jnp.linalg.norm(sh_l - sh_r, axis=-1, keepdims=True), 1e-6)
  up = jnp.stack([across[:, 1], -across[:, 0]], -1)
  neck_l = sh_c + (0.06 * across + 0.045 * up) * s[:, None]
  neck_r = sh_c + (-0.06 * across + 0.045 * up) * s[:, None]
  out_l = sh_l + (0.04 * across - 0.02 * up) * s[:, None]
  out_r = sh_r + (-0.04 * across - 0.02 * up) * s[:, None]
  hip_l, hip_r = kp[:, 23], kp[:, 24]
  hexagon = jnp.stack([neck_r, neck_l, out_l, hip_l + down, hip_r + down, out_r], 1)
  caps = jnp.minimum(_capsule(px, py, neck_l, sh_l, 0.045 * s),
                     _capsule(px, py, neck_r, sh_r, 0.045 * s))
  torso = _smooth_min(_convex_polygon(px, py, hexagon), caps, 0.05 * s)
  torso_rgb, torso_a = _shade(torso, 0.07 * s, shirt, light, amb, dif)
  img = _over(img, torso_rgb, torso_a)
  for sh, el in ((sh_l, kp[:, 13]), (sh_r, kp[:, 14])):
    img = _over(img, *_shade(_capsule(px, py, sh, el, 0.05 * s), 0.05 * s, shirt * 0.93, light,
                             amb, dif))
  # The head, behind the shirt's neckline: a U under the chin.
  rel_x = (px - sh_c[:, 0, None, None]) / (0.055 * s[:, None, None])
  collar = sh_c[:, 1, None, None] - 0.04 * s[:, None, None] + 0.03 * s[:, None, None] * jnp.exp(
      -rel_x**2)
  below = jnp.clip(py - collar, 0.0, 1.0)
  head_a = ctrl["mask"][..., 0] * (1.0 - torso_a * below)
  img = _over(img, ctrl["rgb"], head_a)
  for off, el, wr in ((body_lib.LEFT_HAND_OFFSET, kp[:, 13], kp[:, 15]),
                      (body_lib.RIGHT_HAND_OFFSET, kp[:, 14], kp[:, 16])):
    img = _over(img, *_shade(_capsule(px, py, el, wr, 0.04 * s), 0.04 * s, sleeve, light, amb,
                             dif))
    h = kp[:, off:off + body_lib.NUM_HAND]
    hand = _capsule(px, py, h[:, 0], h[:, 9], 0.033 * s)
    hand = jnp.minimum(hand, _capsule(px, py, h[:, 1], h[:, 4], 0.011 * s))
    for mcp in (5, 9, 13, 17):
      hand = jnp.minimum(hand, _capsule(px, py, h[:, mcp], h[:, mcp + 3], 0.0085 * s))
    img = _over(img, *_shade(hand, 0.02 * s, skin, light, amb, dif))
  return jnp.round(jnp.clip(img, 0.0, 1.0) * 255.0).astype(jnp.uint8)


def _frame_arrays(plan: Plan):
  """Per-frame numpy inputs of _render for one clip."""
  t = plan.expression.shape[0]
  st = plan.style
  rep = lambda x: np.broadcast_to(np.asarray(x, np.float32), (t,) + np.shape(x))
  bg = st["background"]
  return {
      "shape": rep(plan.shape), "expression": plan.expression, "head_pose": plan.head_pose,
      "kp": plan.body_keypoints, "vis": plan.body_visibility, "fov": rep(plan.fov),
      "skin": rep(st["skin"]), "hair": rep(st["hair"]), "iris": rep(st["iris"]),
      "light": rep(st["light"]), "ambient": rep(st["ambient"]), "diffuse": rep(st["diffuse"]),
      "shirt": rep(st["shirt"]),
      "sleeve": rep(st["shirt"] * 0.93 if st["long_sleeves"] else st["skin"]),
      "scale": st["scale_px_per_m"], "root_px": st["root_px"],
      "bg_a": rep(bg["colour_a"]), "bg_b": rep(bg["colour_b"]), "bg_dir": rep(bg["direction"]),
      "bg_stripe": rep(bg["stripe"]), "bg_blobs": rep(bg["blobs"]),
  }


def render_frames(plans, head_model=None) -> list[np.ndarray]:
  """Frames [T, R, R, 3] uint8 of each plan (same resolution), all drawn in one jitted call."""
  plans = list(plans)
  sizes = {p.style["resolution"] for p in plans}
  if len(sizes) != 1:
    raise ValueError(f"render_frames: plans have resolutions {sorted(sizes)}; expected one.")
  model = head_model if head_model is not None else head_lib.load_default()
  arrays = [_frame_arrays(p) for p in plans]
  batch = {k: jnp.asarray(np.concatenate([a[k] for a in arrays], 0)) for k in arrays[0]}
  frames = np.asarray(_render(model, batch, size=sizes.pop()))
  splits = np.cumsum([p.expression.shape[0] for p in plans])[:-1]
  return np.split(frames, splits)


def _clip_dict(plan: Plan, frames: np.ndarray) -> dict:
  return {"id": plan.clip_id, "frames": frames, "audio": plan.audio, "shape": plan.shape,
          "fov": np.float32(plan.fov), "expression": plan.expression,
          "head_pose": plan.head_pose, "body_keypoints": plan.body_keypoints,
          "body_visibility": plan.body_visibility}


def generate_clip(seed: int, num_frames: int = schema.CLIP_FRAMES, resolution: int = 128,
                  head_model=None) -> dict:
  """The synthetic clip of `seed` in the schema.FIELDS format: frames [T, R, R, 3] uint8, ..."""
  return generate_clips([seed], num_frames, resolution, head_model)[0]


def generate_clips(seeds, num_frames: int = schema.CLIP_FRAMES, resolution: int = 128,
                   head_model=None, clips_per_call: int = 1) -> list[dict]:
  """Clips of several seeds; `clips_per_call` clips share one render call (more is faster on an
  accelerator, one keeps CPU memory small)."""
  model = head_model if head_model is not None else head_lib.load_default()
  seeds = [int(s) for s in seeds]
  out = []
  for i in range(0, len(seeds), max(1, int(clips_per_call))):
    plans = [plan_clip(s, num_frames, resolution, model) for s in seeds[i:i + clips_per_call]]
    out += [_clip_dict(p, f) for p, f in zip(plans, render_frames(plans, model))]
  return out
