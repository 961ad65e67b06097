"""The representation contracts that cross modules, defined once (docs/contracts.md).

Every module that needs one of these numbers or key lists imports it from here; the modules that
own a representation (motion.py the motion vector, render.py the control channels, head.py the
head model, data/schema.py the clip format) build on them.
"""

from __future__ import annotations

import numpy as np

# --- time and audio ---
FPS = 24                        # video frames per second
SAMPLE_RATE = 16_000            # audio samples per second (mono)
MEL_BINS = 256                  # log-mel bins per video frame

# --- the parameters of one frame ---
NUM_SHAPE = 64                  # head shape beta (one per identity)
NUM_EXPRESSION = 64             # expression theta_e (jaw, gaze, blinks live here too)
HEAD_POSE_DIM = 9               # 6-D rotation | translation
NUM_KEYPOINTS = 75              # 33 pose + 21 left hand + 21 right hand (MediaPipe Holistic)
BODY_DIM = NUM_KEYPOINTS * 2    # image-plane x, y
MOTION_DIM = NUM_EXPRESSION + HEAD_POSE_DIM + BODY_DIM   # 223: the motion vector

# --- batch keys ---
# Per-frame motion parameters of a clip, and those of its reference frame (prefixed 'ref_').
FRAME_KEYS = ("expression", "head_pose", "body_keypoints", "body_visibility")
REF_KEYS = tuple(f"ref_{k}" for k in FRAME_KEYS)
# What the video models need to render a clip's controls: identity, camera, frames, reference.
CLIP_KEYS = ("shape", "fov") + FRAME_KEYS + REF_KEYS
# The motion batch of the motion model: mel [B, W, 256], motion [B, W, 223], mask [B, W].
MOTION_BATCH_KEYS = ("mel", "motion", "mask")


def frame_shapes(num_frames: int) -> dict:
  """{key: shape} of the per-frame parameters of `num_frames` frames (FRAME_KEYS)."""
  n = num_frames
  return {"expression": (n, NUM_EXPRESSION), "head_pose": (n, HEAD_POSE_DIM),
          "body_keypoints": (n, NUM_KEYPOINTS, 2), "body_visibility": (n, NUM_KEYPOINTS)}


def clip_shapes(num_frames: int) -> dict:
  """{key: shape} of one clip of motion parameters without a batch dimension (CLIP_KEYS)."""
  out = {"shape": (NUM_SHAPE,), "fov": ()}
  out.update(frame_shapes(num_frames))
  out.update({f"ref_{k}": s[1:] for k, s in frame_shapes(1).items()})
  return out


def video_batch_shapes(batch: int, num_frames: int, size: int) -> dict:
  """{key: (shape, dtype)} of the video batch that the data pipelines yield and the video tasks
  train on: uint8 frames [B, N, S, S, 3], the reference frame [B, S, S, 3] and CLIP_KEYS."""
  out = {"frames": ((batch, num_frames, size, size, 3), np.uint8),
         "ref_frame": ((batch, size, size, 3), np.uint8)}
  out.update({k: ((batch,) + s, np.float32) for k, s in clip_shapes(num_frames).items()})
  return out


# --- the head model's layout (the .npz asset) ---
# The names and index maps that head.py (the runtime model), head_procedural.py (the default
# asset) and head_flame.py (the FLAME converter) share. "Left" is always the subject's own left.

# Semantic classes of the face; per-triangle labels index this tuple.
CLASS_NAMES = ("skin", "left_brow", "right_brow", "left_eye", "right_eye", "left_iris",
               "right_iris", "nose", "upper_lip", "lower_lip", "mouth_interior", "teeth", "ears",
               "neck", "hair")
NUM_CLASSES = len(CLASS_NAMES)
CLASS = {name: i for i, name in enumerate(CLASS_NAMES)}

# The procedural head's joints and their parents (-1: the root); a FLAME asset has its own.
JOINT_NAMES = ("root", "neck", "head", "jaw", "left_eye", "right_eye", "left_upper_lid",
               "left_lower_lid", "right_upper_lid", "right_lower_lid")
JOINT_PARENTS = (-1, 0, 1, 2, 2, 2, 2, 2, 2, 2)

# Expression theta_e [NUM_EXPRESSION]: joint-driven components first, then linear blendshapes,
# then unnamed auxiliary blendshapes.
JOINT_EXPRESSIONS = ("jaw_open", "jaw_sideways", "gaze_horizontal", "gaze_vertical", "blink_left",
                     "blink_right")
BLENDSHAPE_EXPRESSIONS = (
    "smile_left", "smile_right", "frown_left", "frown_right", "pucker", "mouth_stretch",
    "lips_part", "upper_lip_raise", "lower_lip_depress", "mouth_left", "mouth_right",
    "cheek_puff", "cheek_raise_left", "cheek_raise_right", "nose_wrinkle", "brow_raise_left",
    "brow_raise_right", "brow_furrow", "brow_inner_raise", "chin_raise")
EXPRESSION_NAMES = JOINT_EXPRESSIONS + BLENDSHAPE_EXPRESSIONS + tuple(
    f"aux_{i:02d}" for i in range(len(JOINT_EXPRESSIONS) + len(BLENDSHAPE_EXPRESSIONS),
                                  NUM_EXPRESSION))
EXPRESSION = {name: i for i, name in enumerate(EXPRESSION_NAMES)}

# Shape beta [NUM_SHAPE] of the procedural head: named components first, then auxiliary ones.
SHAPE_NAMED = ("head_scale", "head_width", "head_height", "head_depth", "face_length", "jaw_width",
               "chin_protrusion", "nose_length", "nose_width", "nose_protrusion", "eye_spacing",
               "eye_height", "brow_ridge", "cheek_fullness", "lip_fullness", "mouth_width",
               "forehead_slope", "ear_size", "ear_protrusion", "neck_thickness", "cranium_back")
SHAPE_NAMES = SHAPE_NAMED + tuple(f"aux_{i:02d}" for i in range(len(SHAPE_NAMED), NUM_SHAPE))

# Every field of the .npz asset: name -> (dtype kind, rank). Names are stored as unicode arrays.
ASSET_FIELDS = {
    "template": ("f", 2), "faces": ("i", 2), "shape_basis": ("f", 3),
    "expression_basis": ("f", 3), "expression_pose": ("f", 3), "joint_regressor": ("f", 2),
    "skin_weights": ("f", 2), "parents": ("i", 1), "tri_labels": ("i", 1),
    "landmark_tri": ("i", 1), "landmark_bary": ("f", 2), "vertex_tint": ("f", 2),
    "joint_names": ("U", 1), "expression_names": ("U", 1), "shape_names": ("U", 1),
    "class_names": ("U", 1), "landmark_names": ("U", 1), "source": ("U", 0),
}
