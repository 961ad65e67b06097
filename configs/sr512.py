r"""Super-resolution 256² -> 512² (paper §3.2, Supp. C.2): configs/sr256.py's recipe one octave
up, on the synthetic `sr512` set (the same identities as `sr256`).

  python launch/train.py --config=configs/sr512.py --workdir=workdir/sr512
  python launch/train.py --config=configs/sr512.py:short --workdir=workdir/sr512_short
  python launch/train.py --config=configs/sr512.py:tiny --workdir=workdir/sr512_tiny

`default` trains the `sr512` network (Imagen's 256 -> 1024 Efficient U-Net layout, no
self-attention; docs/super_resolution.md) on random 256² crops of the 512² windows, so that a
batch of 128 eight-frame windows fits; generation runs on whole 512² frames. `short` (the
ten-minute GPU run) trains on the same crops; `tiny` (CPU) on full frames.
"""

import importlib.util
import os

import ml_collections


def _sr256():
  # The two stages share one recipe; config files are loaded by path, not imported as a package.
  spec = importlib.util.spec_from_file_location(
      "_vlogger_sr256", os.path.join(os.path.dirname(os.path.abspath(__file__)), "sr256.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return _sr256().stage(512, 256, "sr512", "sr512", arg, "configs/sr512.py", paper_crop=256)
