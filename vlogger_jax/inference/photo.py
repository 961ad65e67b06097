"""A photo -> the reference (image + fitted parameters) and an overlay picture of the fit.

Any photo: the person may stand anywhere in it, show the upper body, turn the head. The steps:
detect (MediaPipe Holistic in its own environment, detector.py) on the whole photo, refuse it
with one sentence if it shows no face or several, frame the person in a square (detector.framing:
the face a third of the side, not a face crop), resize that square to 512², fit the head
model to the face landmarks in it (fitting.py, the one-frame case) and take the body keypoints
from the detector in the square's normalised coordinates. The square's camera is taken to look
through its centre, as every camera of the project does.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image, ImageDraw

from vlogger_jax import body as body_lib
from vlogger_jax import detector
from vlogger_jax import fitting
from vlogger_jax import geometry
from vlogger_jax import head as head_lib
from vlogger_jax.inference.errors import InputError

MIN_SIDE = 64          # pixels: smaller photos are refused
MIN_FACE = 24          # pixels: a smaller face gives landmarks too coarse to fit
SIZE = 512             # the framed square's side: one size, so the fit compiles once


@dataclasses.dataclass
class PhotoFit:
  """The framed square image [S, S, 3] uint8, its parameters and the fit's diagnostics."""
  image: np.ndarray
  params: dict                 # shape, fov, expression, head_pose, body_keypoints, body_visibility
  detected: np.ndarray         # [L, 2] detected face landmarks, pixels of `image`
  fitted: np.ndarray           # [L, 2] the fitted model's landmarks, pixels of `image`
  error_px: float              # mean distance between the two
  box: tuple                   # (x0, y0, side) of the square in the photo


def fit_photo(image: np.ndarray, name: str = "the photo", head_model=None,
              venv: str | None = None, config: fitting.FitConfig | None = None) -> PhotoFit:
  """RGB uint8 [H, W, 3] -> PhotoFit; InputError (one sentence naming `name`) if unusable."""
  h, w = image.shape[:2]
  if min(h, w) < MIN_SIDE:
    raise InputError(f"{name} is {w}x{h} pixels; expected a photo at least {MIN_SIDE} pixels on "
                     "its shorter side, showing one person's face.")
  try:
    det = detector.detect(image[None], venv=venv)
  except detector.DetectorError as e:
    raise InputError(str(e)) from None
  if det.num_faces[0] > 1:
    raise InputError(f"{name} shows {int(det.num_faces[0])} faces; expected a photo of one "
                     "person.")
  if not det.face_found[0]:
    raise InputError(f"{name} shows no face that the landmark detector finds; expected a photo "
                     "of one person with the face visible.")
  box = detector.face_box(det)[0]
  face = float(max(box[2] - box[0], box[3] - box[1]))
  if face < MIN_FACE:
    raise InputError(f"{name} shows a face only {face:.0f} pixels tall; expected one at least "
                     f"{MIN_FACE} pixels tall.")
  x0, y0, side = detector.framing(det)
  size = SIZE
  crop = Image.fromarray(image[y0:y0 + side, x0:x0 + side])
  if size != side:
    crop = crop.resize((size, size), Image.Resampling.BOX if side > size
                       else Image.Resampling.BICUBIC)
  model = head_model if head_model is not None else head_lib.load_default()
  try:
    lms, conf = detector.face_landmarks(det, model.landmark_names)
  except ValueError as e:  # a head asset whose landmarks have no face-mesh table (FLAME's)
    raise InputError(str(e)) from None
  lms = (lms[0] - np.array([x0, y0], np.float32)) * (size / side)
  fit = fitting.fit(model, lms[None, None], conf[None], size, size, config)
  box_n = (x0 / w, y0 / h, (x0 + side) / w, (y0 + side) / h)
  kp, vis = detector.body_keypoints(det)
  kp, vis = detector.crop_keypoints(kp[0], vis[0], box_n)
  params = {"shape": fit["shape"][0], "fov": np.float32(fit["fov"][0]),
            "expression": fit["expression"][0, 0], "head_pose": fit["head_pose"][0, 0],
            "body_keypoints": kp, "body_visibility": vis}
  return PhotoFit(image=np.asarray(crop), params=params, detected=lms,
                  fitted=fit["landmarks"][0, 0], error_px=float(fit["error_px"][0]),
                  box=(x0, y0, side))


def overlay(result: PhotoFit, head_model=None, scale: int = 2) -> Image.Image:
  """The square image with the fitted mesh (front-facing edges), the detected (green) and fitted
  (red) face landmarks and the body skeleton drawn over it, `scale` times larger."""
  model = head_model if head_model is not None else head_lib.load_default()
  p = result.params
  size = result.image.shape[0]
  verts = head_lib.forward(model, p["shape"], p["expression"], p["head_pose"])
  pix, _ = geometry.project(verts, p["fov"], size, size)
  pix, verts = np.asarray(pix) * scale, np.asarray(verts)
  faces = np.asarray(model.faces)
  tri = verts[faces]
  normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
  front = np.einsum("td,td->t", normal, tri.mean(1)) < 0   # faces the camera (at the origin)
  im = Image.fromarray(result.image).resize((size * scale, size * scale),
                                            Image.Resampling.BICUBIC)
  layer = Image.new("RGBA", im.size, (0, 0, 0, 0))
  draw = ImageDraw.Draw(layer)
  for a, b, c in faces[front]:
    draw.line([tuple(pix[a]), tuple(pix[b]), tuple(pix[c]), tuple(pix[a])],
              fill=(90, 200, 255, 70), width=1)
  kp = p["body_keypoints"] * size * scale
  ok = p["body_visibility"] >= body_lib.VISIBILITY_THRESHOLD
  for (i, j), part in zip(body_lib.EDGES, body_lib.EDGE_PARTS):
    if ok[i] and ok[j]:
      colour = tuple(int(255 * c) for c in body_lib.PART_COLOURS[part]) + (230,)
      draw.line([tuple(kp[i]), tuple(kp[j])], fill=colour, width=2)
  for pts, colour in ((result.detected, (40, 255, 40, 255)), (result.fitted, (255, 40, 40, 255))):
    for x, y in pts * scale:
      draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
  return Image.alpha_composite(im.convert("RGBA"), layer).convert("RGB")
