"""Writing files so that an interrupted program never leaves one half-written."""

from __future__ import annotations

import json
import os
from typing import Any


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
