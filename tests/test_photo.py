"""A real photograph through the real detector (its own environment) and the fit; bad photos.

The detector environment is made by the README's command, `python launch/install_detector.py`;
without it these tests skip, unless VLOGGER_REQUIRE_DETECTOR=1 (CI sets it) makes that a failure.
The photograph is scikit-image's astronaut (Eileen Collins, NASA, public domain), which ships
inside the scikit-image wheel.
"""

import os

import numpy as np
from PIL import Image
import pytest

from conftest import detector_or_skip

from vlogger_jax import detector
from vlogger_jax import fileio
from vlogger_jax import head as head_lib
from vlogger_jax.inference import photo as photo_lib
from vlogger_jax.inference import reference
from vlogger_jax.inference.errors import InputError

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module", autouse=True)
def detector_env():
  return detector_or_skip()


@pytest.fixture(scope="module")
def astronaut():
  return skimage_data.astronaut()


def _save(folder, name, image, mode=None):
  path = str(folder / name)
  im = Image.fromarray(image) if isinstance(image, np.ndarray) else image
  (im.convert(mode) if mode else im).save(path)
  return path


def test_the_detector_maps_a_real_face_and_body_onto_our_layouts(astronaut):
  det = detector.detect(astronaut[None])
  print(f"detection: {det.frames_per_second:.1f} frames/s (one photo, static mode)")
  assert det.face_found[0] and det.num_faces[0] == 1
  model = head_lib.load_default()
  lms, conf = detector.face_landmarks(det, model.landmark_names)
  assert lms.shape == (1, 70, 2) and conf.min() == 1
  names = list(model.landmark_names)
  pt = lambda n: lms[0, names.index(n)]
  # The subject's right eye is on the image's left; the mouth below the nose, the chin lowest.
  assert pt("right_iris_centre")[0] < pt("nose_bridge_3")[0] < pt("left_iris_centre")[0]
  assert pt("nose_bridge_3")[1] < pt("inner_lip_2")[1] < pt("contour_08")[1]
  kp, vis = detector.body_keypoints(det)
  assert kp.shape == (1, 75, 2) and vis.shape == (1, 75)
  assert vis[0, 11] > 0.5 and vis[0, 12] > 0.5          # both shoulders
  assert kp[0, 11, 0] > kp[0, 12, 0]                     # the left shoulder on the image's right
  assert np.all(vis[0, 33:] == 0)                        # no hands in this photo


def test_a_photo_fits_within_a_few_pixels_and_gives_a_reference(astronaut, tmp_path):
  # Not centred, upper body, in a wider frame than the person.
  canvas = np.full((700, 1100, 3), 200, np.uint8)
  canvas[700 - 512:, 40:552] = astronaut
  result = photo_lib.fit_photo(canvas)
  print(f"photo fit: {result.error_px:.2f} px mean landmark error on the 512² square, fov "
        f"{float(result.params['fov']):.1f} deg, square {result.box}")
  # MediaPipe's mesh points and the procedural head's landmarks are defined a little apart (the
  # jaw contour most), so the fit reprojects within ~4 px on 512², not at the detector's noise.
  assert result.error_px < 5.0
  assert result.image.shape == (512, 512, 3)
  x0, y0, side = result.box
  assert 0 <= x0 and x0 + side <= 1100 and y0 + side <= 700 and side > 250  # not a face crop
  for k, shape in reference.PARAM_SHAPES.items():
    assert np.shape(result.params[k]) == shape, k
  assert result.params["body_visibility"][11:13].min() > 0.5
  overlay = photo_lib.overlay(result)
  fileio.save_png(str(tmp_path / "overlay.png"), overlay)
  assert overlay.size == (1024, 1024)

  # The same photo as 16-bit grayscale and as RGBA: converted, then fitted like any other.
  grey16 = Image.fromarray((canvas.mean(-1) * 257).astype(np.uint16))
  ref = reference.load(_save(tmp_path, "grey16.png", grey16))
  assert ref.image.shape == (512, 512, 3) and ref.params()["head_pose"][8] > 0
  ref = reference.load(_save(tmp_path, "rgba.png", canvas, "RGBA"))
  assert ref.image.shape == (512, 512, 3)


def test_photos_that_cannot_be_fitted_are_refused_in_one_sentence(astronaut, tmp_path):
  cases = {
      "no face": (skimage_data.coffee(), ["shows no face"]),
      "two faces": (np.concatenate([astronaut, astronaut], 1), ["shows 2 faces", "one person"]),
      "tiny": (astronaut[::16, ::16], ["32x32 pixels", "at least 64 pixels"]),
  }
  for name, (image, words) in cases.items():
    path = _save(tmp_path, name.replace(" ", "_") + ".png", image)
    with pytest.raises(InputError) as e:
      reference.load(path)
    message = str(e.value)
    assert all(w in message for w in words), (name, message)
    assert message.count(". ") == 0 and message.endswith("."), message
  assert sorted(os.listdir(tmp_path)) == ["no_face.png", "tiny.png", "two_faces.png"]


def test_fit_image_refuses_a_photo_without_a_face_in_one_sentence_and_writes_nothing(
    tmp_path, python_runner):
  photo = _save(tmp_path, "coffee.png", skimage_data.coffee())
  out = tmp_path / "out"
  out.mkdir()
  proc = python_runner(["launch/fit_image.py", photo, f"--out={out / 'ref.npz'}"], check=False)
  assert proc.returncode == 1, proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert lines == [f"error: image file '{photo}' shows no face that the landmark detector "
                   "finds; expected a photo of one person with the face visible."], proc.stderr
  assert not os.listdir(out)
