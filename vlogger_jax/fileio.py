"""Writing files so that an interrupted program never leaves one half-written, and reading the
.npz files users give (never unpickled, bad files named in one phrase)."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any
import zipfile
import zlib

import numpy as np

NPZ_FORMAT = "a .npz is a zip archive of .npy arrays, as numpy.savez writes"


class NpzError(ValueError):
  """A file that is not a readable .npz archive. The message is a phrase about the file ("is
  not a valid .npz archive (it holds text; ...)") that callers put after its name."""


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


def unusable_folder_reason(path) -> str | None:
  """Why `path` cannot be, or become, a folder that this process writes into, as a phrase; None
  if it can. Nothing is left behind: writability is probed with a temporary file in the nearest
  existing folder, removed at once (os.access says yes to root on read-only mounts)."""
  path = os.path.abspath(os.fspath(path))
  if os.path.exists(path) and not os.path.isdir(path):
    return "it is a file, not a folder"
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    return f"'{existing}' is a file, so no folder can be made under it"
  if not os.access(existing, os.W_OK | os.X_OK):
    return f"the folder '{existing}' is not writable"
  try:
    fd, probe = tempfile.mkstemp(prefix=".write_probe_", dir=existing)
  except OSError as e:
    return f"the folder '{existing}' is not writable ({e.strerror})"
  os.close(fd)
  os.remove(probe)
  return None


def check_output_folder(path, flag: str) -> None:
  """ValueError in one sentence, naming `flag`, unless `path` can be a folder written into."""
  if (reason := unusable_folder_reason(path)):
    raise ValueError(f"{flag} '{os.fspath(path)}': {reason}; expected a folder, new or existing, "
                     "that you may write into.")


def _looks_like(head: bytes) -> str:
  """What the first bytes of a file that is not a zip archive look like, as a phrase."""
  if head.startswith(b"\x93NUMPY"):
    return "it is a single .npy array"
  if head.startswith(b"PK"):
    return "it starts like a zip archive but is truncated or damaged"
  if head.startswith(b"\x80"):
    return "it looks like a Python pickle, which is never loaded"
  try:
    text = head.decode("utf-8")
  except UnicodeDecodeError:
    text = None
  if text is not None and all(c.isprintable() or c.isspace() for c in text):
    return "it holds text"
  return "it has no zip header"


def read_npz(path) -> dict[str, np.ndarray]:
  """Every array of the .npz archive at `path`, read at once (so a damaged member fails here),
  without unpickling anything; NpzError (a phrase: module doc) if the file is not one."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise NpzError("does not exist")
  if not os.path.isfile(path):
    raise NpzError("is not a regular file")
  with open(path, "rb") as f:
    head = f.read(512)
  if not head:
    raise NpzError("is empty (0 bytes)")
  if not zipfile.is_zipfile(path):
    raise NpzError(f"is not a valid .npz archive ({_looks_like(head)}; {NPZ_FORMAT})")
  try:
    with np.load(path, allow_pickle=False) as data:
      return {k: data[k] for k in data.files}
  except ValueError as e:
    if "pickle" in str(e):  # numpy refuses object arrays without allow_pickle
      raise NpzError("holds object arrays, which only unpickling could read and which are "
                     "never loaded") from None
    raise NpzError(f"is a damaged .npz archive ({_first_line(e)})") from None
  except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError) as e:
    raise NpzError(f"is a damaged .npz archive ({type(e).__name__}: {_first_line(e)})") from None


def _first_line(e: Exception) -> str:
  return (str(e).splitlines() or [type(e).__name__])[0][:160]


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
