"""MediaPipe Holistic on frames, in the detector's own environment (a child process of detector.py).

mediapipe==0.10.21 is the last release whose wheel carries its Holistic and Face Mesh models, and
it pins numpy<2 and protobuf<5, so it cannot live beside the main environment's JAX: it is
installed into its own virtual environment by `python launch/install_detector.py`, and this file
is run by that environment's Python as a script. It imports only the standard library, numpy and
mediapipe; the main package never imports it.

  python detector_worker.py FRAMES.npy OUT.npz [--video] [--count_every N]
  python detector_worker.py --check     # prints the mediapipe version, exit 0 if it loads

FRAMES.npy: uint8 [T, H, W, 3] RGB (memory-mapped, so a long clip is never copied). --video runs
Holistic in tracking mode (frames of one video, in order); otherwise every frame is detected on
its own (photos). Every N-th frame (and the first) also counts the faces with MediaPipe's
full-range face detector, so that a frame with several people can be refused.

OUT.npz (written to a temporary name, then renamed), coordinates normalised to the frame
(x right, y down, MediaPipe's own convention), NaN where nothing was found:
  face_mesh [T, 478, 3]   468 mesh points + 10 iris points (x, y, z)
  pose      [T, 33, 4]    x, y, z, visibility
  left_hand, right_hand [T, 21, 3]   the subject's own left and right hands
  num_faces [T] int32     faces counted (-1 where not counted)
  size [2] int32 (height, width), seconds [] float64 (detection wall time), version str
Exit status 2: bad arguments or input; 3: mediapipe failed to load; the reason is the last line on
stderr.
"""

import os
import sys
import time

import numpy as np

NUM_MESH, NUM_POSE, NUM_HAND = 478, 33, 21


def _fail(code, message):
  print(message, file=sys.stderr, flush=True)
  sys.exit(code)


def _points(landmarks, count, dims):
  out = np.full((count, dims), np.nan, np.float32)
  if landmarks is not None:
    for i, p in enumerate(landmarks.landmark[:count]):
      out[i, :3] = (p.x, p.y, p.z)
      if dims == 4:
        out[i, 3] = p.visibility
  return out


def detect(frames, video, count_every):
  """uint8 [T, H, W, 3] -> dict of the arrays of OUT.npz (module doc)."""
  import mediapipe as mp  # pylint: disable=import-outside-toplevel  (--check reports its failure)
  t_count = frames.shape[0]
  out = {"face_mesh": np.full((t_count, NUM_MESH, 3), np.nan, np.float32),
         "pose": np.full((t_count, NUM_POSE, 4), np.nan, np.float32),
         "left_hand": np.full((t_count, NUM_HAND, 3), np.nan, np.float32),
         "right_hand": np.full((t_count, NUM_HAND, 3), np.nan, np.float32),
         "num_faces": np.full((t_count,), -1, np.int32)}
  start = time.perf_counter()
  with mp.solutions.holistic.Holistic(static_image_mode=not video, model_complexity=1,
                                      refine_face_landmarks=True, smooth_landmarks=video,
                                      min_detection_confidence=0.5) as holistic, \
      mp.solutions.face_detection.FaceDetection(model_selection=1,
                                                min_detection_confidence=0.6) as faces:
    for t in range(t_count):
      frame = np.ascontiguousarray(frames[t])
      r = holistic.process(frame)
      out["face_mesh"][t] = _points(r.face_landmarks, NUM_MESH, 3)
      out["pose"][t] = _points(r.pose_landmarks, NUM_POSE, 4)
      out["left_hand"][t] = _points(r.left_hand_landmarks, NUM_HAND, 3)
      out["right_hand"][t] = _points(r.right_hand_landmarks, NUM_HAND, 3)
      if t % count_every == 0:
        out["num_faces"][t] = len(faces.process(frame).detections or [])
  out["seconds"] = np.float64(time.perf_counter() - start)
  out["size"] = np.array(frames.shape[1:3], np.int32)
  out["version"] = np.array(mp.__version__)
  return out


def main(argv):
  if argv == ["--check"]:
    try:
      import mediapipe as mp  # pylint: disable=import-outside-toplevel
      _ = mp.solutions.holistic.Holistic
    except Exception as e:  # pylint: disable=broad-except
      _fail(3, f"mediapipe does not load ({type(e).__name__}: {e})")
    print(mp.__version__)
    return 0
  args = [a for a in argv if not a.startswith("--")]
  video = "--video" in argv
  count_every = 1
  if "--count_every" in argv:
    i = argv.index("--count_every")
    count_every = max(1, int(argv[i + 1]))
    args.remove(argv[i + 1])
  if len(args) != 2:
    _fail(2, "expected FRAMES.npy OUT.npz [--video] [--count_every N]")
  src, dst = args
  try:
    frames = np.load(src, mmap_mode="r")
  except Exception as e:  # pylint: disable=broad-except
    _fail(2, f"{src} cannot be read as a .npy array ({type(e).__name__})")
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    _fail(2, f"{src} holds {frames.dtype} {frames.shape}; expected uint8 [T, H, W, 3]")
  try:
    out = detect(frames, video, count_every)
  except ImportError as e:
    _fail(3, f"mediapipe does not load ({e})")
  tmp = f"{dst}.tmp-{os.getpid()}.npz"
  np.savez(tmp, **out)
  os.replace(tmp, dst)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
