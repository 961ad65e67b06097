r"""A photo -> a reference file (the framed image and its fitted head and body parameters) and an
overlay PNG of the fit.

  python launch/fit_image.py photo.png --out ref.npz            # also writes ref_overlay.png
  python launch/generate.py --image=ref.npz --text="Hello." --out=hello.mp4

Any photo of one person (not centred, upper body, head turned): it is framed in a square around
the person, not cropped to the face (vlogger_jax/inference/photo.py). Grayscale, RGBA, palette and
16-bit pictures are converted. Needs the detector environment, made once by
`python launch/install_detector.py`. A photo without a face, with several faces, or too small is
refused with one sentence and nothing is written. docs/real_data.md has the details.
"""

import os
import sys
import time

from absl import flags

from vlogger_jax import cli
from vlogger_jax import fileio
from vlogger_jax.inference import photo as photo_lib
from vlogger_jax.inference import reference as reference_lib
from vlogger_jax.inference.errors import InputError

_OUT = flags.DEFINE_string("out", None, "The reference file to write (.npz).")
_OVERLAY = flags.DEFINE_string("overlay", None, "The overlay PNG; default <out stem>_overlay.png.")


def run(path: str) -> int:
  if not _OUT.value or not _OUT.value.endswith(".npz"):
    raise InputError(f"--out '{_OUT.value}' is not a .npz path; expected e.g. --out=ref.npz.")
  overlay_path = _OVERLAY.value or os.path.splitext(_OUT.value)[0] + "_overlay.png"
  for p, flag in ((_OUT.value, "--out"), (overlay_path, "--overlay")):
    reason = fileio.unwritable_reason(p)
    if reason:
      raise InputError(f"{flag} '{p}': {reason}; expected a file name in an existing folder "
                       "you may write into.")
  start = time.perf_counter()
  image = reference_lib.read_image(path)
  result = photo_lib.fit_photo(image, name=f"image file '{path}'")
  ref = reference_lib.Reference(image=result.image, name=os.path.basename(path), **result.params)
  # The overlay first: the reference file is the product, written last.
  fileio.save_png(overlay_path, photo_lib.overlay(result))
  ref.save(_OUT.value)
  x0, y0, side = result.box
  print(f"wrote {_OUT.value}: {side}x{side} square at ({x0}, {y0}) of the photo, "
        f"{result.image.shape[0]}x{result.image.shape[0]}, landmarks fitted within "
        f"{result.error_px:.2f} px, fov {float(result.params['fov']):.1f} deg "
        f"({time.perf_counter() - start:.1f} s); overlay {overlay_path}")
  return 0


def main(argv):
  if len(argv) != 2:
    print("error: expected one photo, e.g. launch/fit_image.py photo.png --out ref.npz.",
          file=sys.stderr)
    return 2
  try:
    return run(argv[1])
  except InputError as e:
    return cli.report(e)


if __name__ == "__main__":
  cli.run(main)
