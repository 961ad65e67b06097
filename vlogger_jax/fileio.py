"""Writing files so that an interrupted program never leaves one half-written."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import numpy as np


def unwritable_reason(path) -> str | None:
  """Why a file cannot be written at `path` (its folder is missing or not writable, or `path`
  is a folder), as a phrase; None if it can. Checked before work whose result goes there."""
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    return f"the folder '{folder}' does not exist"
  if not os.access(folder, os.W_OK):
    return f"the folder '{folder}' is not writable"
  if os.path.isdir(path):
    return "it is a folder"
  return None


def write_json(path: str, obj: Any, indent: int | None = 2) -> str:
  """Writes `obj` as JSON to a temporary name beside `path`, then renames it; returns path."""
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=indent)
  os.replace(tmp, path)
  return path


def save_png(path: str, image) -> str:
  """Saves a PIL image (or a uint8 array [H, W, 3]) as PNG through a temporary name; returns
  path."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if not isinstance(image, Image.Image):
    image = Image.fromarray(image)
  tmp = f"{path}.tmp-{os.getpid()}.png"
  image.save(tmp, optimize=True)
  os.replace(tmp, path)
  return path


def save_npz(path: str, **arrays) -> str:
  """Saves `arrays` as a compressed .npz through a temporary name beside `path`, readable by all
  (as the other writers here leave their files); returns path."""
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".npz", dir=folder)
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez_compressed(f, **arrays)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would survive the rename
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path
