r"""Builds a talking-human dataset (TFDS ArrayRecord) and its motion statistics.

  python launch/build_dataset.py --dataset=synthetic --config=small --data_dir=data
  python launch/build_dataset.py --dataset=folder --source=clips/ --data_dir=data --workers=8

Prints the dataset folder to pass to the pipelines (data/<builder>/<config>/<version>) on stdout,
its progress on stderr. Rerunning is a no-op once finished; an interrupted build starts over from
scratch on the next run (records appear only when complete), and so does one whose record files
cannot be read. docs/data.md describes the formats and sizes.
"""

import sys

from absl import flags, logging
import tensorflow_datasets as tfds

from vlogger_jax import cli
from vlogger_jax.data import builders

_DATASET = flags.DEFINE_enum("dataset", "synthetic", ["synthetic", "folder"],
                             "synthetic: generated clips; folder: .npz clips under --source.")
_CONFIG = flags.DEFINE_string("config", "small", "Synthetic config: " + ", ".join(
    c.name for c in builders.SYNTHETIC_CONFIGS) + ".")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder that receives the dataset.")
_SOURCE = flags.DEFINE_string("source", None, "For --dataset=folder: <source>/<split>/*.npz.")
_WORKERS = flags.DEFINE_integer("workers", 0, "Processes that make and encode clips (0: this one).")
flags.mark_flags_as_required(["data_dir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  if not sys.stderr.isatty():
    tfds.disable_progress_bar()  # a log file would get every redraw of the bars
  try:
    if _DATASET.value == "synthetic":
      path = builders.ensure_synthetic(_DATA_DIR.value, _CONFIG.value, workers=_WORKERS.value)
    else:
      if not _SOURCE.value:
        raise ValueError("--dataset=folder needs --source, the folder holding <split>/*.npz clips.")
      path = builders.build_folder(_SOURCE.value, _DATA_DIR.value, workers=_WORKERS.value)
  except ValueError as e:
    return cli.report(e)
  print(path)
  return 0


if __name__ == "__main__":
  cli.run(main)
