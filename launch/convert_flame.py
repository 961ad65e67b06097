"""Converts a FLAME model file that you supply into a vlogger_jax head asset (.npz).

  python launch/convert_flame.py --flame /path/to/generic_model.pkl --out flame_head.npz \
      [--masks /path/to/FLAME_masks.pkl] [--landmarks /path/to/flame_static_embedding.pkl]

FLAME cannot be shipped or downloaded by this project; get it from flame.is.tue.mpg.de under its
licence. WARNING: FLAME files are Python pickles, and unpickling a file can run code. The converter
reads only the files named here, never imports chumpy and accepts only numpy, scipy.sparse and
chumpy objects, but convert only files you trust.
"""

import argparse
import os

from vlogger_jax import head
from vlogger_jax import head_flame


def main(argv=None):
  parser = argparse.ArgumentParser(
      description="Convert a user-supplied FLAME .pkl into a vlogger_jax head asset (.npz). "
      "WARNING: FLAME files are Python pickles and unpickling can run code; convert only files "
      "you trust.")
  parser.add_argument("--flame", required=True, help="FLAME model .pkl (e.g. generic_model.pkl).")
  parser.add_argument("--out", required=True, help="output .npz path (written atomically).")
  parser.add_argument("--masks", default=None,
                      help="optional FLAME_masks.pkl; gives the semantic face labels.")
  parser.add_argument("--landmarks", default=None,
                      help="optional landmark embedding .pkl with lmk_face_idx and lmk_b_coords.")
  parser.add_argument("--num_flame_shape", type=int, default=300,
                      help="number of shape components in the FLAME file before the expression "
                      "components (300 for FLAME 2020/2023).")
  args = parser.parse_args(argv)
  for flag in ("flame", "masks", "landmarks"):
    path = getattr(args, flag)
    if path and not os.path.isfile(path):
      parser.error(f"--{flag} {path} does not exist; expected a readable file.")
  try:
    asset = head_flame.convert_flame(args.flame, args.masks, args.landmarks, args.num_flame_shape)
    head.model_from_dict(asset, name=args.out)  # validates sizes before writing
  except ValueError as e:
    parser.exit(2, f"error: {e}\n")
  head.save_asset(asset, args.out)
  print(f"wrote {args.out}: {asset['template'].shape[0]} vertices, {asset['faces'].shape[0]} "
        f"triangles, {len(asset['parents'])} joints, {len(asset['landmark_tri'])} landmarks")


if __name__ == "__main__":
  main()
