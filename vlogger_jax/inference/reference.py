"""The reference: one image of the person and its fitted parameters (paper Fig. 2, I_ref).

Generation needs the reference image and the parameters of the person in it: head shape β, the
camera's field of view, and the reference frame's expression, head pose and body keypoints (the
motion the video is generated as a residual of). Three ways to get one:

- `synthetic(index)`: a held-out identity of the synthetic talking-human generator (seeds from
  data.builders.TEST_SEED_OFFSET, never used for training); its parameters are known exactly.
- `load(path)`: a reference file (.npz: `image` uint8 [H, H, 3] plus the parameter fields, as
  `Reference.save` writes), or an image file with a parameters file beside it (`params=`).
- `from_photo(path)`: a photo alone: landmark detection and fitting (inference/photo.py, the same
  path as launch/fit_image.py) frame the person in a square and fit the head and body to it.

Images are read with Pillow; grayscale, palette, RGBA (composited on white) and 16-bit images
are converted to 8-bit RGB, EXIF rotations applied, and images are resized (area filter) to the
model's resolution. Parameters are in normalised image coordinates of the square image, so a
non-square image with parameters is refused rather than silently cropped.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from PIL import Image, ImageOps

from vlogger_jax import contracts
from vlogger_jax import fileio
from vlogger_jax.data import builders
from vlogger_jax.data import synthetic as synthetic_lib
from vlogger_jax.inference import photo as photo_lib
from vlogger_jax.inference.errors import InputError

# Fields of a reference file besides the image: name -> shape.
PARAM_SHAPES = {"shape": (contracts.NUM_SHAPE,), "fov": (),
                "expression": (contracts.NUM_EXPRESSION,), "head_pose": (contracts.HEAD_POSE_DIM,),
                "body_keypoints": (contracts.NUM_KEYPOINTS, 2),
                "body_visibility": (contracts.NUM_KEYPOINTS,)}
MAX_PIXELS = 64_000_000      # larger images are refused before decoding (decompression bombs)


@dataclasses.dataclass
class Reference:
  """One image of the person [H, H, 3] uint8 and the parameters of that image."""
  image: np.ndarray
  shape: np.ndarray            # [64]
  fov: np.ndarray              # [] radians, diagonal
  expression: np.ndarray       # [64]
  head_pose: np.ndarray        # [9]
  body_keypoints: np.ndarray   # [75, 2] normalised image coordinates
  body_visibility: np.ndarray  # [75]
  name: str = "reference"

  def params(self) -> dict:
    return {k: getattr(self, k) for k in PARAM_SHAPES}

  def resized(self, size: int) -> np.ndarray:
    """The image at size x size, uint8 (the parameters do not change: they are normalised)."""
    if self.image.shape[:2] == (size, size):
      return self.image
    im = Image.fromarray(self.image).resize((size, size), Image.Resampling.BOX
                                            if self.image.shape[0] > size
                                            else Image.Resampling.BICUBIC)
    return np.asarray(im)

  def save(self, path: str) -> str:
    """A reference file (.npz) that `load` reads back."""
    return fileio.save_npz(path, image=self.image, name=np.array(self.name),
                           **{k: np.asarray(v, np.float32) for k, v in self.params().items()})


def synthetic_seed(index: int) -> int:
  """The generator seed of held-out synthetic identity `index` (>= 0)."""
  return builders.TEST_SEED_OFFSET + int(index)


def synthetic(index: int = 0, resolution: int = 128, head_model=None) -> Reference:
  """Held-out synthetic identity `index`: the first frame of its clip and its parameters."""
  if int(index) < 0:
    raise InputError(f"synthetic identity {index} is negative; expected an index >= 0.")
  clip = synthetic_lib.generate_clip(synthetic_seed(index), num_frames=1,
                                     resolution=resolution, head_model=head_model)
  return Reference(image=clip["frames"][0], shape=clip["shape"], fov=np.float32(clip["fov"]),
                   expression=clip["expression"][0], head_pose=clip["head_pose"][0],
                   body_keypoints=clip["body_keypoints"][0],
                   body_visibility=clip["body_visibility"][0],
                   name=f"synthetic identity {int(index)}")


def read_image(path: str) -> np.ndarray:
  """RGB uint8 [H, W, 3] of an image file (module doc: conversions)."""
  name = f"image file '{path}'"
  if not os.path.exists(path):
    raise InputError(f"{name} does not exist; expected a PNG or JPEG picture of the person.")
  if not os.path.isfile(path) or os.path.getsize(path) == 0:
    raise InputError(f"{name} is empty or not a regular file; expected a PNG or JPEG "
                     "picture of the person.")
  try:
    with Image.open(path) as im:
      if im.width * im.height > MAX_PIXELS:
        raise InputError(f"{name} is {im.width}x{im.height} pixels, more than "
                         f"{MAX_PIXELS // 1_000_000} megapixels; expected a photo of "
                         "ordinary size.")
      im = ImageOps.exif_transpose(im)
      return _to_rgb8(im)
  except InputError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (Pillow raises many kinds)
    raise InputError(f"{name} cannot be read as an image ({type(e).__name__}); expected a "
                     "PNG or JPEG picture of the person.") from None


def _to_rgb8(im: Image.Image) -> np.ndarray:
  if im.mode in ("I;16", "I;16B", "I;16L", "I"):          # 16-bit or 32-bit grey
    a = np.asarray(im, np.float64)
    top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
    a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(a[..., None], 3, axis=-1)
  if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
  arr = np.asarray(im)
  if arr.dtype == np.uint16 or (im.mode.startswith("RGB") and arr.dtype != np.uint8):
    arr = (arr.astype(np.float64) / 65535.0 * 255.0 + 0.5).astype(np.uint8)
    return arr[..., :3]
  return np.asarray(im.convert("RGB"))


def _params_from(data, name: str) -> dict:
  out = {}
  for k, shape in PARAM_SHAPES.items():
    if k not in data:
      raise InputError(f"{name} lacks '{k}'; expected the fields "
                       f"{', '.join(PARAM_SHAPES)} (as Reference.save writes them).")
    v = np.asarray(data[k], np.float32)
    if v.shape != shape:
      raise InputError(f"{name} holds '{k}' of shape {v.shape}; expected {shape}.")
    if not np.all(np.isfinite(v)):
      raise InputError(f"{name} holds non-finite values in '{k}'; expected finite numbers.")
    out[k] = v
  return out


def read_npz(path: str, what: str,
             expected: str = "a .npz written by Reference.save or launch/fit_image.py") -> dict:
  """The arrays of a .npz input (no pickles), or InputError naming `what` and `expected`."""
  try:
    return fileio.read_npz(path)
  except fileio.NpzError as e:
    raise InputError(f"{what} '{path}' {e}; expected {expected}.") from None


def _square(image: np.ndarray, name: str) -> np.ndarray:
  h, w = image.shape[:2]
  if h != w:
    raise InputError(f"{name} is {w}x{h}; its parameters are fitted on a square image, so "
                     "expected a square picture (the one the parameters were fitted on).")
  return image


def load(path: str, params: str | None = None) -> Reference:
  """A reference from a reference file (.npz with its image), or an image file and the
  parameters file `params` fitted on it."""
  if str(path).endswith(".npz"):
    data = read_npz(path, "reference file")
    name = f"reference file '{path}'"
    if "image" not in data:
      raise InputError(f"{name} lacks 'image'; expected the picture [H, H, 3] uint8 beside "
                       "its parameters.")
    image = np.asarray(data["image"])
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
      raise InputError(f"{name} holds an image of shape {image.shape} and dtype "
                       f"{image.dtype}; expected [H, H, 3] uint8.")
    fields = _params_from(data, name)
    if params is not None:
      fields = _params_from(read_npz(params, "parameters file"), f"parameters file '{params}'")
    label = str(data["name"]) if "name" in data else os.path.basename(path)
    return Reference(image=_square(image, name), name=label, **fields)
  image = read_image(path)
  if params is None:
    return from_photo(path, image)
  fields = _params_from(read_npz(params, "parameters file"), f"parameters file '{params}'")
  return Reference(image=_square(image, f"image file '{path}'"),
                   name=os.path.basename(path), **fields)


def from_photo(path: str, image: np.ndarray | None = None) -> Reference:
  """A reference from a photo alone: the person framed in a square, the head and body model
  fitted to its landmarks (inference/photo.py, as launch/fit_image.py does)."""
  image = read_image(path) if image is None else image
  result = photo_lib.fit_photo(image, name=f"image file '{path}'")
  return Reference(image=result.image, name=os.path.basename(path), **result.params)


def parse(spec: str, params: str | None = None, resolution: int = 128) -> Reference:
  """A reference from a command-line value: 'synthetic:N' (held-out identity N), a reference
  file (.npz) or an image file (with `params`)."""
  spec = str(spec)
  if spec.startswith("synthetic:") or spec == "synthetic":
    index = spec.partition(":")[2] or "0"
    if not index.isdigit():
      raise InputError(f"--image '{spec}' names no identity; expected synthetic:N with N a "
                       "number >= 0, e.g. synthetic:3.")
    return synthetic(int(index), resolution)
  return load(spec, params)
