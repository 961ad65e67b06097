"""The 75 body keypoints: MediaPipe Holistic order, skeleton edges, part groups and visibility.

Contract: body keypoints are image-plane normalised coordinates in [0, 1], (0, 0) the top-left
corner of the image, x right, y down (MediaPipe's convention), shape [..., 75, 2], with a visibility
array [..., 75] in [0, 1]. Pixel coordinates follow geometry.py: x_px = x * W, y_px = y * H, so
pixel i's centre is at normalised (i + 0.5) / W. Index layout: 0..32 pose (33), 33..53 left hand
(21), 54..74 right hand (21). "Left" is the subject's own left, as in MediaPipe.

A keypoint counts as visible when its visibility is >= VISIBILITY_THRESHOLD and its coordinates
are finite; an edge is drawn only when both of its ends are visible. Missing hands (MediaPipe
returns none) are encoded as visibility 0; `sanitize` turns NaN coordinates into invisible zeros.
"""

import jax.numpy as jnp
import numpy as np

from vlogger_jax import contracts

NUM_POSE = 33
NUM_HAND = 21
NUM_KEYPOINTS = NUM_POSE + 2 * NUM_HAND
assert NUM_KEYPOINTS == contracts.NUM_KEYPOINTS  # the topology spells out the contract's 75
LEFT_HAND_OFFSET = NUM_POSE
RIGHT_HAND_OFFSET = NUM_POSE + NUM_HAND
VISIBILITY_THRESHOLD = 0.5

POSE_NAMES = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
    "right_heel", "left_foot_index", "right_foot_index")
HAND_NAMES = (
    "wrist", "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip", "index_mcp", "index_pip",
    "index_dip", "index_tip", "middle_mcp", "middle_pip", "middle_dip", "middle_tip", "ring_mcp",
    "ring_pip", "ring_dip", "ring_tip", "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip")
KEYPOINT_NAMES = (POSE_NAMES + tuple(f"left_hand_{n}" for n in HAND_NAMES)
                  + tuple(f"right_hand_{n}" for n in HAND_NAMES))
KEYPOINT = {name: i for i, name in enumerate(KEYPOINT_NAMES)}

POSE_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12), (11, 13),
    (13, 15), (15, 17), (15, 19), (15, 21), (17, 19), (12, 14), (14, 16), (16, 18), (16, 20),
    (16, 22), (18, 20), (11, 23), (12, 24), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28),
    (27, 29), (28, 30), (29, 31), (30, 32), (27, 31), (28, 32))
HAND_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11),
    (11, 12), (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18), (18, 19),
    (19, 20))

PART_NAMES = ("face", "torso", "left_arm", "right_arm", "left_leg", "right_leg", "left_hand",
              "right_hand")
# Colours (RGB in [0, 1]) per part; left parts warm, right parts cool, so a mirror is visible.
PART_COLOURS = np.array([
    (1.00, 1.00, 1.00), (0.95, 0.80, 0.10), (1.00, 0.35, 0.10), (0.10, 0.55, 1.00),
    (0.90, 0.10, 0.45), (0.10, 0.85, 0.55), (1.00, 0.60, 0.30), (0.35, 0.85, 1.00)], np.float32)
# Line half-width per part, as a fraction of the image's shorter side (hands are drawn thinner).
PART_WIDTH = np.array([0.004, 0.008, 0.008, 0.008, 0.008, 0.008, 0.0035, 0.0035], np.float32)


def _pose_part(a, b):
  pair = {a, b}
  if max(pair) <= 10:
    return "face"
  if pair <= {11, 12, 23, 24}:
    return "torso"
  side = "left" if min(pair) % 2 == 1 else "right"
  return f"{side}_arm" if max(pair) <= 22 else f"{side}_leg"


def _build_edges():
  edges, parts = [], []
  for a, b in POSE_EDGES:
    edges.append((a, b))
    parts.append(PART_NAMES.index(_pose_part(a, b)))
  for offset, name in ((LEFT_HAND_OFFSET, "left_hand"), (RIGHT_HAND_OFFSET, "right_hand")):
    for a, b in HAND_EDGES:
      edges.append((a + offset, b + offset))
      parts.append(PART_NAMES.index(name))
  return np.array(edges, np.int32), np.array(parts, np.int32)


# All 77 skeleton edges as indices into the 75 keypoints, and the part of each edge.
EDGES, EDGE_PARTS = _build_edges()


def _keypoint_parts():
  parts = np.zeros(NUM_KEYPOINTS, np.int32)
  for i in range(NUM_POSE):
    if i <= 10:
      parts[i] = PART_NAMES.index("face")
    elif i in (11, 12, 23, 24):
      parts[i] = PART_NAMES.index("torso")
    else:
      side = "left" if i % 2 == 1 else "right"
      parts[i] = PART_NAMES.index(f"{side}_arm" if i <= 22 else f"{side}_leg")
  parts[LEFT_HAND_OFFSET:RIGHT_HAND_OFFSET] = PART_NAMES.index("left_hand")
  parts[RIGHT_HAND_OFFSET:] = PART_NAMES.index("right_hand")
  return parts


# Part of every keypoint [75] and the keypoint indices of every part.
KEYPOINT_PARTS = _keypoint_parts()
PART_GROUPS = {name: tuple(np.where(KEYPOINT_PARTS == i)[0].tolist())
               for i, name in enumerate(PART_NAMES)}


def _flip_permutation():
  perm = np.arange(NUM_KEYPOINTS)
  for i, name in enumerate(POSE_NAMES):
    if name.startswith("left_"):
      j = POSE_NAMES.index("right_" + name[5:])
    elif name.startswith("right_"):
      j = POSE_NAMES.index("left_" + name[6:])
    elif name == "mouth_left":
      j = POSE_NAMES.index("mouth_right")
    elif name == "mouth_right":
      j = POSE_NAMES.index("mouth_left")
    else:
      j = i
    perm[i] = j
  perm[LEFT_HAND_OFFSET:RIGHT_HAND_OFFSET] = np.arange(RIGHT_HAND_OFFSET, NUM_KEYPOINTS)
  perm[RIGHT_HAND_OFFSET:] = np.arange(LEFT_HAND_OFFSET, RIGHT_HAND_OFFSET)
  return perm


# Index map for a horizontal mirror: new[i] = old[FLIP_PERMUTATION[i]] after x -> 1 - x.
FLIP_PERMUTATION = _flip_permutation()


def check_shapes(keypoints, visibility):
  """Raises ValueError unless keypoints are [..., 75, 2] and visibility [..., 75]."""
  if keypoints.shape[-2:] != (NUM_KEYPOINTS, 2):
    raise ValueError(f"body keypoints have shape {tuple(keypoints.shape)}; expected "
                     f"[..., {NUM_KEYPOINTS}, 2] normalised (x, y) in MediaPipe Holistic order.")
  if visibility.shape != keypoints.shape[:-1]:
    raise ValueError(f"body visibility has shape {tuple(visibility.shape)}; expected "
                     f"{tuple(keypoints.shape[:-1])} to match the keypoints.")


def sanitize(keypoints, visibility):
  """[..., 75, 2], [..., 75] -> same, with non-finite points set to 0 and made invisible."""
  keypoints = jnp.asarray(keypoints, jnp.float32)
  visibility = jnp.asarray(visibility, jnp.float32)
  finite = jnp.all(jnp.isfinite(keypoints), axis=-1)
  return jnp.where(finite[..., None], keypoints, 0.0), jnp.where(finite, visibility, 0.0)


def is_visible(keypoints, visibility):
  """[..., 75, 2], [..., 75] -> bool [..., 75]."""
  finite = jnp.all(jnp.isfinite(keypoints), axis=-1)
  return finite & (visibility >= VISIBILITY_THRESHOLD)


def edge_visible(keypoints, visibility):
  """[..., 75, 2], [..., 75] -> bool [..., 77]: both ends of each edge visible."""
  vis = is_visible(keypoints, visibility)
  return vis[..., EDGES[:, 0]] & vis[..., EDGES[:, 1]]


def to_pixels(keypoints, height: int, width: int):
  """Normalised [..., 75, 2] -> continuous pixel coordinates [..., 75, 2] (x * W, y * H)."""
  return jnp.asarray(keypoints, jnp.float32) * jnp.array([width, height], jnp.float32)


def flip_horizontal(keypoints, visibility):
  """Mirrors the image: x -> 1 - x and left/right swapped; [..., 75, 2], [..., 75] -> same."""
  keypoints = jnp.asarray(keypoints, jnp.float32)
  flipped = keypoints.at[..., 0].set(1.0 - keypoints[..., 0])
  return flipped[..., FLIP_PERMUTATION, :], jnp.asarray(visibility)[..., FLIP_PERMUTATION]


def rest_pose(head_centre=(0.5, 0.3), head_height=0.22):
  """A neutral upper-body pose (arms down, hands relaxed) as numpy ([75, 2], [75]) for demos/tests."""
  cx, cy = head_centre
  s = head_height
  kp = np.zeros((NUM_KEYPOINTS, 2), np.float32)
  vis = np.ones(NUM_KEYPOINTS, np.float32)
  # Pose, in units of the head height, relative to the head centre; subject's left is image right.
  rel = {
      0: (0.0, 0.05), 1: (0.05, -0.05), 2: (0.09, -0.05), 3: (0.13, -0.05), 4: (-0.05, -0.05),
      5: (-0.09, -0.05), 6: (-0.13, -0.05), 7: (0.23, 0.0), 8: (-0.23, 0.0), 9: (0.07, 0.22),
      10: (-0.07, 0.22), 11: (0.65, 0.95), 12: (-0.65, 0.95), 13: (0.95, 1.75), 14: (-0.95, 1.75),
      15: (0.45, 2.05), 16: (-0.45, 2.05), 17: (0.22, 2.1), 18: (-0.22, 2.1), 19: (0.2, 2.0),
      20: (-0.2, 2.0), 21: (0.3, 1.92), 22: (-0.3, 1.92), 23: (0.45, 2.9), 24: (-0.45, 2.9),
      25: (0.47, 4.1), 26: (-0.47, 4.1), 27: (0.48, 5.2), 28: (-0.48, 5.2), 29: (0.5, 5.35),
      30: (-0.5, 5.35), 31: (0.4, 5.5), 32: (-0.4, 5.5)}
  for i, (dx, dy) in rel.items():
    kp[i] = (cx + s * dx, cy + s * dy)
  # Hands: relaxed open hands in front of the belly, fingers pointing inwards.
  finger_dirs = np.deg2rad(np.array([-150.0, -105.0, -92.0, -80.0, -68.0]))
  seg = np.array([[0.12, 0.10, 0.08, 0.07], [0.28, 0.12, 0.08, 0.07], [0.28, 0.13, 0.09, 0.07],
                  [0.27, 0.12, 0.08, 0.06], [0.25, 0.10, 0.07, 0.06]]) * 0.45
  for offset, wrist, mirror in ((LEFT_HAND_OFFSET, 15, 1.0), (RIGHT_HAND_OFFSET, 16, -1.0)):
    w = kp[wrist]
    kp[offset] = w
    for f, ang in enumerate(finger_dirs):
      direction = np.array([np.sin(ang) * mirror, -np.cos(ang)])
      p = w.copy()
      for k in range(4):
        p = p + s * seg[f, k] * direction
        kp[offset + 1 + 4 * f + k] = p
  # Keypoints outside the image are reported as not visible, as a detector would.
  vis[np.any((kp < 0) | (kp > 1), axis=-1)] = 0.0
  return kp, vis
