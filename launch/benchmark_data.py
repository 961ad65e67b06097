r"""Measures the input pipelines' throughput (clips per second) on this machine.

  python launch/benchmark_data.py --dataset=DIR --batch_size=8 --workers=0
  python launch/benchmark_data.py --config=small --data_dir=data   # builds the synthetic set first

For each pipeline it discards --warmup batches (worker start-up, first reads) and then times
--batches batches; one clip is one example (a motion window, an 8-frame video clip, an image).
docs/data.md records the figures.
"""

import os
import sys
import time

from absl import app, flags

from vlogger_jax.data import builders, pipelines

_DATASET = flags.DEFINE_string("dataset", None, "Dataset folder (from launch/build_dataset.py).")
_CONFIG = flags.DEFINE_string("config", "small", "Without --dataset: synthetic config to build.")
_DATA_DIR = flags.DEFINE_string("data_dir", "data", "Without --dataset: where to build it.")
_SPLIT = flags.DEFINE_string("split", "train", "Split to read.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Host-local batch size.")
_WORKERS = flags.DEFINE_integer("workers", 0, "grain worker processes (0: threads in this one).")
_BATCHES = flags.DEFINE_integer("batches", 20, "Timed batches per pipeline.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed batches first.")
_RESOLUTION = flags.DEFINE_integer("resolution", 128, "Video/image output resolution.")
_PIPELINES = flags.DEFINE_list("pipelines", ["motion", "video", "image"], "Which to measure.")


def main(argv):
  del argv
  path = _DATASET.value or builders.ensure_synthetic(_DATA_DIR.value, _CONFIG.value)
  common = dict(batch_size=_BATCH.value, seed=0, num_workers=_WORKERS.value)
  makers = {
      "motion": lambda: pipelines.motion_pipeline(path, _SPLIT.value, **common),
      "video": lambda: pipelines.video_pipeline(path, _SPLIT.value, resolution=_RESOLUTION.value,
                                                **common),
      "image": lambda: pipelines.image_pipeline(path, _SPLIT.value, resolution=_RESOLUTION.value,
                                                **common),
  }
  print(f"dataset {path}, batch {_BATCH.value}, workers {_WORKERS.value}, "
        f"{os.cpu_count()} CPUs")
  for name in _PIPELINES.value:
    start = time.perf_counter()
    it = makers[name]()
    for _ in range(_WARMUP.value):
      next(it)
    warm = time.perf_counter()
    for _ in range(_BATCHES.value):
      next(it)
    end = time.perf_counter()
    clips = _BATCHES.value * _BATCH.value
    per_batch = (end - warm) / _BATCHES.value
    print(f"{name:>6}: {clips / (end - warm):8.1f} clips/s  ({per_batch * 1e3:.1f} ms/batch; "
          f"start-up and {_WARMUP.value} warm-up batches {warm - start:.1f} s)")
    del it
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
