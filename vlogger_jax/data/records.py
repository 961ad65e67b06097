"""The record format of the datasets: one talking-human clip -> one TFDS record, and back.

A record holds every field of the clip format (schema.py) except that `frames` is a 1-D array of
T per-frame PNG bytes (so a pipeline decodes only the frames of its window, and no TFDS image
feature is needed: those encode through TensorFlow), plus `mel` [T, 256] float16 computed over
the whole clip at build time and the `num_frames`/`resolution` scalars. Every builder writes it
(builders.py); the pipelines read it (pipelines.py). Changing anything here changes the bytes on
disk: bump builders.VERSION.
"""

from __future__ import annotations

import io
import os

import jax
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from vlogger_jax import audio as audio_lib
from vlogger_jax import contracts
from vlogger_jax import fileio
from vlogger_jax.data import schema

PNG_LEVEL = 3  # zlib level: level 1 makes files ~1.5x larger, levels above 3 gain little.
MEL_DTYPE = np.float16

_FIELDS_PARAMS = ("expression", "head_pose", "body_keypoints", "body_visibility")


def features() -> tfds.features.FeaturesDict:
  """The record format shared by every builder (field shapes as in schema.py, T frames)."""
  f = tfds.features
  return f.FeaturesDict({
      "id": f.Text(),
      "num_frames": f.Scalar(dtype=np.int32),
      "resolution": f.Scalar(dtype=np.int32),
      "frames": f.Tensor(shape=(None,), dtype=np.object_),  # T PNG-encoded RGB frames.
      "audio": f.Tensor(shape=(None,), dtype=np.int16, encoding="bytes"),
      "mel": f.Tensor(shape=(None, contracts.MEL_BINS), dtype=MEL_DTYPE, encoding="bytes"),
      "shape": f.Tensor(shape=(contracts.NUM_SHAPE,), dtype=np.float32),
      "fov": f.Scalar(dtype=np.float32),
      "expression": f.Tensor(shape=(None, contracts.NUM_EXPRESSION), dtype=np.float32,
                             encoding="bytes"),
      "head_pose": f.Tensor(shape=(None, contracts.HEAD_POSE_DIM), dtype=np.float32,
                            encoding="bytes"),
      "body_keypoints": f.Tensor(shape=(None, contracts.NUM_KEYPOINTS, 2), dtype=np.float32,
                                 encoding="bytes"),
      "body_visibility": f.Tensor(shape=(None, contracts.NUM_KEYPOINTS), dtype=np.float32,
                                  encoding="bytes"),
  })


_MEL_FN = {}


def clip_mel(audio: np.ndarray, num_frames: int) -> np.ndarray:
  """Log-mel of a whole clip, int16 audio [S] -> [num_frames, 256] float16."""
  if "fn" not in _MEL_FN:
    _MEL_FN["fn"] = jax.jit(audio_lib.mel_features)
  wave = np.asarray(audio, np.float32) / 32768.0
  mel = np.asarray(_MEL_FN["fn"](wave))[:num_frames]
  if mel.shape[0] != num_frames:
    raise ValueError(f"audio of {wave.shape[0]} samples covers {mel.shape[0]} frames; expected "
                     f"at least {num_frames}.")
  return mel.astype(MEL_DTYPE)


def encode_png(frame: np.ndarray) -> bytes:
  """One uint8 RGB frame [R, R, 3] -> PNG bytes."""
  buffer = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(frame)).save(buffer, format="png",
                                                     compress_level=PNG_LEVEL)
  return buffer.getvalue()


def encode_clip(clip: dict, name: str = "clip") -> dict:
  """A schema-valid clip -> one record (frames as PNG bytes, mel added); ValueError if invalid."""
  schema.validate_clip(clip, name)
  frames = np.asarray(clip["frames"])
  t = frames.shape[0]
  audio = np.asarray(clip["audio"])
  example = {
      "id": str(clip["id"]),
      "num_frames": np.int32(t),
      "resolution": np.int32(frames.shape[1]),
      "frames": np.array([encode_png(f) for f in frames], dtype=object),
      "audio": audio,
      "mel": clip_mel(audio, t),
      "shape": np.asarray(clip["shape"], np.float32),
      "fov": np.float32(clip["fov"]),
  }
  for key in _FIELDS_PARAMS:
    example[key] = np.asarray(clip[key], np.float32)
  return example


def load_npz_clip(path: str) -> dict:
  """A clip from an .npz file of schema fields (float64 arrays become float32; id defaults to
  the file name)."""
  try:
    clip = fileio.read_npz(path)
  except fileio.NpzError as e:
    raise ValueError(f"clip file {path} {e}; expected a schema .npz clip.") from None
  clip["id"] = str(clip["id"]) if "id" in clip else os.path.splitext(os.path.basename(path))[0]
  for key, (dtype, _) in schema.FIELDS.items():
    value = clip.get(key)
    if (isinstance(value, np.ndarray) and dtype is not str and value.dtype.kind == "f"
        and np.dtype(dtype).kind == "f"):
      clip[key] = value.astype(dtype)
  return clip
