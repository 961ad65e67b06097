"""Phonemes to mouth shapes: espeak-ng's phoneme labels -> viseme targets, blended over time.

Each phoneme has a target for six articulatory parameters and a dominance (how strongly it holds
them against its neighbours), after Cohen and Massaro's coarticulation model: at time t each
parameter is the dominance-weighted mean of the targets of all segments,

    p(t) = sum_i D_i(t) T_i / sum_i D_i(t),   D_i(t) = a_i exp(-(d_i(t) / tau)^2),

where d_i(t) is the distance from t to segment i's interval (0 inside it) and tau is the
anticipation time constant before the interval and the (shorter) carry-over one after it, divided
by sqrt(1 + ln a_i) so that a strongly dominant segment holds its own interval without reaching far
out of it. A segment's influence therefore starts ~1.5 tau (50-150 ms) before its sound: the mouth
moves ahead of the audio; every gesture but the bilabial closure also runs `lead_s` (20-40 ms)
ahead of its sound, as the face leads the voice in real speech (the lips sealing is what silences
a /p b m/, so that closure stays on its sound). Bilabials dominate strongly and hold the closure
at least MIN_CLOSURE_S, so the lips close on every one of them even at 24 fps; weak consonants
(k g h t d n l) take the shape of their neighbouring vowels; pauses are the rest shape (mouth
closed), their dominance growing with their length up to FULL_PAUSE_S. Diphthongs glide between
two targets over their two halves. The table and the blend are documented in docs/synthetic.md.

Parameters (TARGET_NAMES): jaw opening in mm of inner-lip gap; lip closure (compression of closed
lips), rounding/protrusion, spreading, labiodental (lower lip to the upper teeth) and teeth
(lips drawn back from the teeth), each in [0, 1]. `expression_from_articulation` writes them onto
the head model's expression components.
"""

from __future__ import annotations

import numpy as np

from vlogger_jax import head as head_lib

E = head_lib.EXPRESSION
TARGET_NAMES = ("jaw_mm", "closure", "round", "spread", "labiodental", "teeth")
# Inner-lip gap (motion_eval.mouth_opening) per unit of jaw_open on the procedural head: its jaw
# turns 0.32 rad per unit and the gap grows linearly (measured: 1.73 mm at 0.05, 34.4 mm at 1).
JAW_MM_PER_UNIT = 34.4
MIN_CLOSURE_S = 0.08
# Dominance of a pause of at least this length is REST_DOMINANCE; shorter pauses hold less.
FULL_PAUSE_S = 0.15
REST_DOMINANCE = 1.0
PAUSES = ("_", "_:", "_!", "_|", "||", "_^_")
_VOWEL_CHARS = set("aeiouAEIOUV03@")

# label: (jaw_mm, closure, round, spread, labiodental, teeth), (jaw dominance, lip dominance).
# Vowel jaw openings are those of a stressed vowel (unstressed ones open less: STRESS_SCALE).
_V = {  # monophthongs: (jaw_mm, closure, round, spread)
    "a": (18.0, 0, 0.0, 0.35), "a#": (17.0, 0, 0.0, 0.3), "aa": (18.0, 0, 0.0, 0.25),
    "A:": (19.0, 0, 0.0, 0.1), "A@": (17.0, 0, 0.05, 0.1), "A": (18.0, 0, 0.0, 0.1),
    "0": (16.0, 0, 0.35, 0.0), "O:": (14.0, 0, 0.7, 0.0), "O": (14.0, 0, 0.65, 0.0),
    "O2": (14.0, 0, 0.6, 0.0), "O@": (13.0, 0, 0.6, 0.0), "o@": (13.0, 0, 0.6, 0.0),
    "o": (11.0, 0, 0.75, 0.0), "E": (12.0, 0, 0.0, 0.5), "e": (11.0, 0, 0.0, 0.55),
    "I": (8.0, 0, 0.0, 0.6), "I2": (8.0, 0, 0.0, 0.5), "I#": (8.0, 0, 0.0, 0.45),
    "i": (6.0, 0, 0.0, 0.9), "i:": (6.0, 0, 0.0, 1.0), "@": (8.0, 0, 0.0, 0.1),
    "@2": (7.0, 0, 0.0, 0.1), "@5": (7.0, 0, 0.1, 0.0), "@L": (7.0, 0, 0.0, 0.1),
    "3": (9.0, 0, 0.3, 0.0), "3:": (9.5, 0, 0.3, 0.0), "VR": (10.0, 0, 0.25, 0.0),
    "V": (14.0, 0, 0.0, 0.1), "U": (6.5, 0, 0.7, 0.0), "u:": (5.5, 0, 1.0, 0.0),
    "u": (5.5, 0, 0.95, 0.0), "y": (5.5, 0, 0.9, 0.3),
}
_DIPHTHONGS = {  # two halves
    "aI": ("a", "I"), "aI@": ("a", "@"), "aI2": ("a", "I"), "aI3": ("a", "@"),
    "aU": ("a", "U"), "aU@": ("a", "@"), "eI": ("E", "i"), "oU": ("O@", "U"),
    "@U": ("@", "U"), "OI": ("O:", "I"), "e@": ("E", "@"), "i@": ("i", "@"),
    "i@3": ("i", "@"), "U@": ("U", "@"), "eI@": ("E", "@"),
}
_C = {  # consonants: (jaw_mm, closure, round, spread, labiodental, teeth), (dom_jaw, dom_lips)
    "p": ((0.0, 1.0, 0.0, 0.0, 0.0, 0.0), (20.0, 20.0)),
    "b": ((0.0, 1.0, 0.0, 0.0, 0.0, 0.0), (20.0, 20.0)),
    "m": ((0.0, 0.8, 0.0, 0.0, 0.0, 0.0), (20.0, 20.0)),
    "f": ((2.0, 0.0, 0.0, 0.1, 1.0, 0.3), (4.0, 8.0)),
    "v": ((2.0, 0.0, 0.0, 0.1, 1.0, 0.3), (4.0, 8.0)),
    "w": ((3.0, 0.0, 1.0, 0.0, 0.0, 0.0), (2.0, 5.0)),
    "w#": ((3.0, 0.0, 1.0, 0.0, 0.0, 0.0), (2.0, 5.0)),
    "r": ((5.0, 0.0, 0.4, 0.0, 0.0, 0.0), (0.6, 1.0)),
    "r-": ((5.0, 0.0, 0.4, 0.0, 0.0, 0.0), (0.6, 1.0)),
    "T": ((4.0, 0.0, 0.0, 0.1, 0.0, 0.8), (1.5, 1.5)),
    "D": ((4.0, 0.0, 0.0, 0.1, 0.0, 0.8), (1.5, 1.5)),
    "s": ((2.5, 0.0, 0.0, 0.45, 0.0, 0.8), (2.0, 1.0)),
    "z": ((2.5, 0.0, 0.0, 0.45, 0.0, 0.8), (2.0, 1.0)),
    "S": ((3.0, 0.0, 0.55, 0.0, 0.0, 0.5), (2.0, 2.0)),
    "Z": ((3.0, 0.0, 0.55, 0.0, 0.0, 0.5), (2.0, 2.0)),
    "tS": ((3.0, 0.0, 0.55, 0.0, 0.0, 0.5), (2.0, 2.0)),
    "dZ": ((3.0, 0.0, 0.55, 0.0, 0.0, 0.5), (2.0, 2.0)),
    "t": ((4.0, 0.0, 0.0, 0.2, 0.0, 0.4), (0.8, 0.2)),
    "d": ((4.0, 0.0, 0.0, 0.2, 0.0, 0.4), (0.8, 0.2)),
    "n": ((4.0, 0.0, 0.0, 0.2, 0.0, 0.3), (0.8, 0.2)),
    "l": ((5.0, 0.0, 0.0, 0.1, 0.0, 0.3), (0.6, 0.2)),
    "j": ((3.0, 0.0, 0.0, 0.6, 0.0, 0.2), (1.0, 1.0)),
    "k": ((5.0, 0.0, 0.0, 0.0, 0.0, 0.0), (0.4, 0.1)),
    "g": ((5.0, 0.0, 0.0, 0.0, 0.0, 0.0), (0.4, 0.1)),
    "N": ((5.0, 0.0, 0.0, 0.0, 0.0, 0.0), (0.4, 0.1)),
    "x": ((5.0, 0.0, 0.0, 0.0, 0.0, 0.0), (0.4, 0.1)),
    "h": ((6.0, 0.0, 0.0, 0.0, 0.0, 0.0), (0.1, 0.05)),
    "?": ((4.0, 0.0, 0.0, 0.0, 0.0, 0.0), (0.2, 0.05)),
}
for _alias, _base in (("t#", "t"), ("t[", "t"), ("t2", "t"), ("d#", "d"), ("l#", "l"),
                      ("n-", "n"), ("m-", "m"), ("l/", "l"), ("z#", "z"), ("s#", "s")):
  _C[_alias] = _C[_base]
VOWEL_DOMINANCE = (1.0, 1.0)
STRESS_SCALE = {"'": 1.0, ",": 0.9, "": 0.8}  # jaw of primary, secondary, unstressed vowels
BILABIALS = ("p", "b", "m", "m-")
ZERO_DOMINANCE = (";",)  # espeak's palatalisation mark: no articulation of its own


def split_label(label: str) -> tuple[str, str]:
  """An espeak label ("'aI", ",oU", "p") -> (stress mark "'", "," or "", phoneme)."""
  stress = label[0] if label[:1] in ("'", ",") else ""
  return stress, label[len(stress):]


def is_pause(label: str) -> bool:
  """Whether an espeak label is a pause ('_', '_:', ...)."""
  return split_label(label)[1] in PAUSES or split_label(label)[1].startswith("_")


def is_vowel(label: str) -> bool:
  """Whether an espeak label is a vowel or diphthong of the table."""
  p = split_label(label)[1]
  return p in _V or p in _DIPHTHONGS


def is_bilabial(label: str) -> bool:
  """Whether an espeak label is /p/, /b/ or /m/."""
  return split_label(label)[1] in BILABIALS


def known(label: str) -> bool:
  """Whether the table maps the label (others fall back on a neutral, weak shape)."""
  p = split_label(label)[1]
  return p in _V or p in _DIPHTHONGS or p in _C or is_pause(label) or p in ZERO_DOMINANCE


def _vowel(name: str, stress: str):
  jaw, closure, rnd, spread = _V[name]
  return (jaw * STRESS_SCALE[stress], closure, rnd, spread, 0.0, 0.0), VOWEL_DOMINANCE


def segments(phonemes, duration: float):
  """Phonemes [(label, start_s, end_s)] -> (intervals [N, 2] s, targets [N, 6], dominance [N, 6]).

  Adds rest segments for the silence before the first and after the last phoneme (up to
  `duration`), splits diphthongs in two halves and extends each bilabial to MIN_CLOSURE_S.
  """
  rest = ((0.0,) * 6, (REST_DOMINANCE, REST_DOMINANCE))
  rows = []
  first = phonemes[0][1] if phonemes else duration
  last = phonemes[-1][2] if phonemes else 0.0
  rows.append((-1.0, first, *rest))
  for label, t0, t1 in phonemes:
    stress, name = split_label(label)
    if is_pause(label):
      a = REST_DOMINANCE * min(1.0, (t1 - t0) / FULL_PAUSE_S)
      rows.append((t0, t1, rest[0], (a, a)))
    elif name in _DIPHTHONGS:
      mid = 0.5 * (t0 + t1)
      for (s0, s1), part in zip(((t0, mid), (mid, t1)), _DIPHTHONGS[name]):
        rows.append((s0, s1, *_vowel(part, stress)))
    elif name in _V:
      rows.append((t0, t1, *_vowel(name, stress)))
    elif name in BILABIALS:
      extra = max(0.0, MIN_CLOSURE_S - (t1 - t0))
      rows.append((t0 - 0.6 * extra, t1 + 0.4 * extra, *_C[name]))
    elif name in _C:
      rows.append((t0, t1, *_C[name]))
    elif name in ZERO_DOMINANCE:
      continue
    else:  # Unknown to the table: a neutral, weak shape that its neighbours override.
      rows.append((t0, t1, (6.0 if name[:1] in _VOWEL_CHARS else 4.0,) + (0.0,) * 5, (0.3, 0.1)))
  rows.append((last, max(duration, last) + 1.0, *rest))
  intervals = np.array([(r[0], r[1]) for r in rows], np.float64)
  targets = np.array([r[2] for r in rows], np.float64)
  dom = np.array([r[3] for r in rows], np.float64)
  # Jaw dominance for the jaw column, lip dominance for the five lip parameters.
  dominance = np.concatenate([dom[:, :1], np.repeat(dom[:, 1:], 5, axis=1)], axis=1)
  return intervals, targets, dominance


def articulation(phonemes, times, duration: float, anticipation_s: float = 0.055,
                 carryover_s: float = 0.04, lead_s: float = 0.03,
                 jaw_scale: float = 1.0) -> np.ndarray:
  """The blended articulatory parameters [len(times), 6] (TARGET_NAMES) at `times` (s).

  anticipation_s / carryover_s: the dominance time constants before / after a segment's sound.
  lead_s: how far every gesture's interval runs ahead of its sound (the face leads the voice).
  jaw_scale: the speaker's jaw opening relative to the table's.
  """
  intervals, targets, dominance = segments(phonemes, duration)
  # Bilabial closures stay on their sound (the lips sealing is what silences it); the rest lead.
  led = ~np.all(targets[:, 1:2] > 0.5, axis=1)
  intervals = intervals - lead_s * led[:, None]
  # A dominant segment's reach in time shrinks with its dominance, so a strong closure holds its
  # own interval without swallowing the vowel before it (equal weight ~45 ms out at most).
  shrink = 1.0 / np.sqrt(1.0 + np.log(np.maximum(dominance, 1.0)))  # [N, 6]
  t = np.asarray(times, np.float64)[:, None, None]
  before = np.maximum(intervals[None, :, 0, None] - t, 0.0) / (anticipation_s * shrink[None])
  after = np.maximum(t - intervals[None, :, 1, None], 0.0) / (carryover_s * shrink[None])
  d = np.exp(-(before + after) ** 2) * dominance[None]  # [T, N, 6]; one of the two is 0
  out = np.einsum("tnk,nk->tk", d, targets) / np.maximum(d.sum(1), 1e-12)
  out[:, 0] *= jaw_scale
  return out


def expression_from_articulation(art: np.ndarray, expression: np.ndarray) -> np.ndarray:
  """Writes the mouth of art [T, 6] (TARGET_NAMES) onto expression [T, 64] (in place; returned)."""
  jaw, closure, rnd, spread, labio, teeth = art.T
  expression[:, E["jaw_open"]] = jaw / JAW_MM_PER_UNIT
  # Closed lips press together and the chin rises a little; open ones part with the jaw.
  expression[:, E["lips_part"]] = 0.3 * np.clip(jaw / 15.0, 0, 1) - 0.4 * closure
  expression[:, E["chin_raise"]] = 0.3 * closure + 0.2 * labio
  expression[:, E["pucker"]] = 0.9 * rnd
  expression[:, E["mouth_stretch"]] = 0.45 * spread
  for side in ("left", "right"):
    expression[:, E[f"smile_{side}"]] += 0.35 * spread
  # /f v/: the lower lip rises and tucks under the upper teeth; /s t T/: the lips uncover them.
  expression[:, E["lower_lip_depress"]] = 0.3 * teeth - 0.8 * labio
  expression[:, E["upper_lip_raise"]] = 0.5 * teeth + 0.3 * labio
  return expression
