"""Landmark detection: MediaPipe Holistic in its own environment, and its points in our layouts.

MediaPipe runs in a separate virtual environment (it pins numpy<2 and protobuf<5; DESIGN.md §5),
made by one command, `python launch/install_detector.py [--venv DIR]`, by default at
`$XDG_CACHE_HOME/vlogger_jax/detector-venv` (or ~/.cache/...; $VLOGGER_DETECTOR_VENV overrides).
`detect(frames)` writes the frames to a temporary .npy, runs `detector_worker.py` with that
environment's Python as a subprocess and reads its landmark file back; nothing here imports
mediapipe.

The detector's points are mapped onto the layouts the rest of the project uses:

- `face_landmarks`: the 478 face-mesh points -> the head asset's landmark embedding (the 68 iBUG
  points and two iris centres, by the asset's landmark names: `MESH_FOR_LANDMARK`), in pixels of
  the frame, with a confidence per point (0 where no face was found).
- `body_keypoints`: 33 pose + the subject's left and right hands -> the 75 body keypoints
  (body.py: the same MediaPipe Holistic order), normalised, y down, with visibility (MediaPipe's
  pose visibility; 1 for a found hand; 0 for anything missing or outside the frame).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np

from vlogger_jax import body as body_lib
from vlogger_jax import fileio

MEDIAPIPE_VERSION = "0.10.21"
VENV_ENV = "VLOGGER_DETECTOR_VENV"
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "detector_worker.py")
INSTALL_COMMAND = "python launch/install_detector.py"

# Head-asset landmark name -> face-mesh indices whose mean is that landmark. MediaPipe's mesh
# numbering is fixed by its canonical face model; "right" is the subject's right (image left in a
# frontal photo). The procedural asset's right eye runs inner corner -> outer corner (its left
# eye the other way round), so eyes are mapped by position, not by iBUG number.
MESH_FOR_LANDMARK = {
    **{f"contour_{i:02d}": (m,) for i, m in enumerate(
        (234, 93, 132, 58, 172, 136, 150, 176, 152, 400, 379, 365, 397, 288, 361, 323, 454))},
    **{f"right_brow_{i}": (m,) for i, m in enumerate((70, 63, 105, 66, 107))},
    **{f"left_brow_{i}": (m,) for i, m in enumerate((336, 296, 334, 293, 300))},
    **{f"nose_bridge_{i}": (m,) for i, m in enumerate((168, 197, 5, 4))},
    **{f"nose_base_{i}": (m,) for i, m in enumerate((98, 97, 2, 326, 327))},
    # inner corner, upper (inner, outer), outer corner, lower (outer, inner)
    **{f"right_eye_{i}": m for i, m in enumerate(
        ((133,), (158, 157), (160, 161), (33,), (144, 163), (153, 154)))},
    **{f"left_eye_{i}": m for i, m in enumerate(
        ((362,), (385, 384), (387, 388), (263,), (373, 390), (380, 381)))},
    **{f"outer_lip_{i}": (m,) for i, m in enumerate(
        (61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91))},
    **{f"inner_lip_{i}": (m,) for i, m in enumerate((78, 81, 13, 311, 308, 402, 14, 178))},
    "left_iris_centre": (473,), "right_iris_centre": (468,),
}


class DetectorError(RuntimeError):
  """The detector could not run (environment missing or broken, bad frames); one sentence."""


@dataclasses.dataclass
class Detections:
  """The worker's output for T frames (detector_worker.py's module doc), coordinates normalised."""
  face_mesh: np.ndarray   # [T, 478, 3], NaN where no face
  pose: np.ndarray        # [T, 33, 4] x, y, z, visibility
  left_hand: np.ndarray   # [T, 21, 3]
  right_hand: np.ndarray  # [T, 21, 3]
  num_faces: np.ndarray   # [T] int32, -1 where not counted
  size: tuple             # (height, width) of the frames
  seconds: float          # detection wall time

  @property
  def face_found(self) -> np.ndarray:
    """[T] bool."""
    return np.all(np.isfinite(self.face_mesh[..., :2]), axis=(-1, -2))

  @property
  def frames_per_second(self) -> float:
    return self.face_mesh.shape[0] / max(self.seconds, 1e-9)


def default_venv() -> str:
  """The detector environment: $VLOGGER_DETECTOR_VENV, else <cache>/vlogger_jax/detector-venv."""
  if os.environ.get(VENV_ENV):
    return os.environ[VENV_ENV]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "vlogger_jax", "detector-venv")


def venv_python(venv: str | None = None) -> str:
  """The Python executable of the detector environment (which may not exist yet)."""
  venv = venv or default_venv()
  sub = ("Scripts", "python.exe") if sys.platform == "win32" else ("bin", "python")
  return os.path.join(venv, *sub)


def check(venv: str | None = None) -> str:
  """The mediapipe version of the detector environment; DetectorError if it is missing or broken."""
  python = venv_python(venv)
  if not os.path.exists(python):
    raise DetectorError(f"the landmark detector's environment {venv or default_venv()} does not "
                        f"exist; expected it to be made once by `{INSTALL_COMMAND}`.")
  proc = subprocess.run([python, "-I", WORKER, "--check"], capture_output=True, text=True,
                        check=False, stdin=subprocess.DEVNULL)
  if proc.returncode != 0:
    reason = (proc.stderr.strip().splitlines() or ["no message"])[-1]
    raise DetectorError(f"the landmark detector's environment {venv or default_venv()} does not "
                        f"run mediapipe ({reason}); expected one made by `{INSTALL_COMMAND}`.")
  return proc.stdout.strip()


def detect(frames, video: bool = False, count_every: int = 1,
           venv: str | None = None) -> Detections:
  """uint8 frames [T, H, W, 3] (one photo is T = 1) -> Detections, through the worker process.

  video=True tracks over consecutive frames of one video (faster, smoother); count_every: count
  the faces (to refuse several people) on every N-th frame.
  """
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise DetectorError(f"frames of dtype {frames.dtype} and shape {frames.shape} were given to "
                        "the landmark detector; expected uint8 RGB [T, H, W, 3].")
  python = venv_python(venv)
  if not os.path.exists(python):
    check(venv)  # raises the one-sentence error
  with tempfile.TemporaryDirectory(prefix="vlogger-detect-") as tmp:
    src, dst = os.path.join(tmp, "frames.npy"), os.path.join(tmp, "landmarks.npz")
    np.save(src, frames)
    # -I: the main environment's PYTHONPATH (numpy 2, ...) must not leak into the detector's.
    command = [python, "-I", WORKER, src, dst, "--count_every", str(int(count_every))]
    if video:
      command.append("--video")
    with warnings.catch_warnings():
      # JAX warns about any fork in its process; this one execs the worker at once.
      warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
      proc = subprocess.run(command, capture_output=True, text=True, check=False,
                            stdin=subprocess.DEVNULL)
    if proc.returncode != 0 or not os.path.exists(dst):
      reason = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
      raise DetectorError(f"the landmark detector failed on {frames.shape[0]} frame(s) "
                          f"({reason}); expected the environment made by `{INSTALL_COMMAND}`.")
    return read(dst)


def read(path: str) -> Detections:
  """A landmark file written by detector_worker.py -> Detections."""
  try:
    d = fileio.read_npz(path)
  except fileio.NpzError as e:
    raise DetectorError(f"landmark file '{path}' {e}; expected one written by "
                        "detector_worker.py.") from None
  return Detections(face_mesh=d["face_mesh"], pose=d["pose"], left_hand=d["left_hand"],
                    right_hand=d["right_hand"], num_faces=d["num_faces"],
                    size=tuple(int(s) for s in d["size"]), seconds=float(d["seconds"]))


def landmark_table(names) -> list[tuple[int, ...]]:
  """The face-mesh indices of each head landmark name (MESH_FOR_LANDMARK); ValueError if unknown."""
  missing = [n for n in names if n not in MESH_FOR_LANDMARK]
  if missing or not names:
    which = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "") if missing else "none"
    raise ValueError(f"the head asset's landmarks ({which}) have no face-mesh counterpart; "
                     "expected the procedural asset's 68 iBUG points and irises "
                     "(detector.MESH_FOR_LANDMARK).")
  return [MESH_FOR_LANDMARK[n] for n in names]


def face_landmarks(det: Detections, names) -> tuple[np.ndarray, np.ndarray]:
  """-> (landmarks [T, L, 2] in pixels of the frame, confidence [T, L]) in the order of `names`."""
  h, w = det.size
  mesh = det.face_mesh[..., :2].astype(np.float64)
  table = landmark_table(list(names))
  pts = np.stack([mesh[:, list(ids)].mean(axis=1) for ids in table], axis=1)
  pts = pts * np.array([w, h])
  conf = np.all(np.isfinite(pts), axis=-1).astype(np.float32)
  return np.nan_to_num(pts).astype(np.float32), conf


def body_keypoints(det: Detections) -> tuple[np.ndarray, np.ndarray]:
  """-> (keypoints [T, 75, 2] normalised to the frame, visibility [T, 75]), body.py's layout."""
  t_count = det.pose.shape[0]
  kp = np.zeros((t_count, body_lib.NUM_KEYPOINTS, 2), np.float32)
  vis = np.zeros((t_count, body_lib.NUM_KEYPOINTS), np.float32)
  kp[:, :body_lib.NUM_POSE] = det.pose[..., :2]
  vis[:, :body_lib.NUM_POSE] = det.pose[..., 3]
  for offset, hand in ((body_lib.LEFT_HAND_OFFSET, det.left_hand),
                       (body_lib.RIGHT_HAND_OFFSET, det.right_hand)):
    kp[:, offset:offset + body_lib.NUM_HAND] = hand[..., :2]
    vis[:, offset:offset + body_lib.NUM_HAND] = 1.0
  return crop_keypoints(kp, vis, (0.0, 0.0, 1.0, 1.0))


def crop_keypoints(keypoints, visibility, box) -> tuple[np.ndarray, np.ndarray]:
  """Normalised [..., 75, 2] of a frame -> normalised to `box` (x0, y0, x1, y1, normalised);
  points that are missing or fall outside the box become invisible zeros."""
  x0, y0, x1, y1 = box
  kp = (np.asarray(keypoints, np.float32) - np.array([x0, y0], np.float32)) / np.array(
      [x1 - x0, y1 - y0], np.float32)
  vis = np.nan_to_num(np.asarray(visibility, np.float32))
  ok = np.all(np.isfinite(kp), axis=-1) & np.all((kp >= 0) & (kp <= 1), axis=-1)
  return np.where(ok[..., None], kp, 0.0).astype(np.float32), np.where(ok, vis, 0.0)


# Framing: the person's upper body in a square, the face about a third of its side, the eyes a
# little above the middle (the synthetic clips' framing range, docs/synthetic.md).
FACE_FRACTION = 1.0 / 3.0
FACE_CENTRE_Y = 0.38


def face_box(det: Detections) -> np.ndarray:
  """[T, 4] pixel boxes (x0, y0, x1, y1) of the face mesh, NaN where no face was found."""
  h, w = det.size
  pts = det.face_mesh[..., :2] * np.array([w, h], np.float32)
  with np.errstate(invalid="ignore"):
    return np.concatenate([pts.min(1), pts.max(1)], -1)


def framing(det: Detections) -> tuple[int, int, int]:
  """The square crop (x0, y0, side) in pixels that frames the person for all frames with a face:
  face size and centre are medians over the frames, the square stays inside the frame (the face
  takes a larger share when the frame is too small)."""
  h, w = det.size
  boxes = face_box(det)[det.face_found]
  if boxes.size == 0:
    raise ValueError("no frame shows a face, so there is nothing to frame.")
  size = np.median(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
  cx = np.median((boxes[:, 0] + boxes[:, 2]) / 2)
  cy = np.median((boxes[:, 1] + boxes[:, 3]) / 2)
  side = int(min(round(size / FACE_FRACTION), h, w))
  x0 = int(np.clip(round(cx - side / 2), 0, w - side))
  y0 = int(np.clip(round(cy - FACE_CENTRE_Y * side), 0, h - side))
  return x0, y0, side
