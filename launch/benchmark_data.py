r"""Measures the input pipelines' throughput on this machine and what one example's parts cost.

  python launch/benchmark_data.py --dataset=DIR --batch_size=8 --workers=0
  python launch/benchmark_data.py --config=small --data_dir=data   # builds the synthetic set first
  python launch/benchmark_data.py --dataset=DIR --pipelines=frames --num_frames=8 --resolution=512

First, in this process on one thread, the parts of an example over the split's first
--sample_records records: reading a record (ArrayRecord read and zstd decompression of the whole
record), TFDS deserialising it (every field, all frames' PNG bytes included), and decoding one
frame's PNG at the stored resolution and at --resolution. Then, for each pipeline, it discards
--warmup batches (worker start-up, first reads) and times --batches batches; one clip is one example
(a motion window, a video clip of --num_frames frames and a reference, an image, a frames window of
--num_frames frames); frames/s counts the `frames` of the batches; MB read per batch is the stored
records a batch reads (each example reads and deserialises its whole record). docs/data.md records
the figures.
"""

import glob
import os
import sys
import time

from absl import flags
import numpy as np
import tensorflow_datasets as tfds

from vlogger_jax import cli
from vlogger_jax.data import builders, paths, pipelines

_DATASET = flags.DEFINE_string("dataset", None, "Dataset folder (from launch/build_dataset.py).")
_CONFIG = flags.DEFINE_string("config", "small", "Without --dataset: synthetic config to build.")
_DATA_DIR = flags.DEFINE_string("data_dir", "data", "Without --dataset: where to build it.")
_SPLIT = flags.DEFINE_string("split", "train", "Split to read.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Host-local batch size.")
_WORKERS = flags.DEFINE_integer("workers", 0, "grain worker processes (0: threads in this one).")
_BATCHES = flags.DEFINE_integer("batches", 20, "Timed batches per pipeline.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed batches first.")
_RESOLUTION = flags.DEFINE_integer("resolution", 128, "Video/image/frames output resolution.")
_NUM_FRAMES = flags.DEFINE_integer("num_frames", 8, "Frames per video and frames window.")
_PIPELINES = flags.DEFINE_list("pipelines", ["motion", "video", "image"],
                               "Which to measure: motion, video, image, frames.")
_SAMPLE = flags.DEFINE_integer("sample_records", 8, "Records timed part by part (0: none).")


def stored_record_bytes(path: str, split: str) -> float:
  """Mean bytes on disk of one record of `split` (its ArrayRecord files over its records)."""
  files = glob.glob(os.path.join(path, f"*-{split}.array_record-*"))
  count = tfds.builder_from_directory(path).info.splits[split].num_examples
  return sum(os.path.getsize(f) for f in files) / max(count, 1)


def time_parts(path: str, split: str, count: int, resolution: int) -> None:
  """Prints the cost of reading, deserialising and decoding the first `count` records' parts."""
  builder = tfds.builder_from_directory(path)
  source = builder.as_data_source(split)
  n = min(count, len(source))
  start = time.perf_counter()
  raw = [source.data_source[i] for i in range(n)]
  read = time.perf_counter()
  records = [builder.info.features.deserialize_example_np(r) for r in raw]
  parsed = time.perf_counter()
  pngs = [r["frames"][j] for r in records for j in range(0, len(r["frames"]), 3)]
  stored = int(records[0]["resolution"])
  decode = {}
  for size in dict.fromkeys((stored, resolution)):
    t = time.perf_counter()
    for png in pngs:
      pipelines.decode_frame(png, size)
    decode[size] = (time.perf_counter() - t) / len(pngs)
  frames = np.mean([len(r["frames"]) for r in records])
  png_kb = np.mean([len(p) for p in pngs]) / 1e3
  print(f"records: {stored} px, {frames:.0f} frames, {stored_record_bytes(path, split) / 1e6:.2f} "
        f"MB stored, {np.mean([len(r) for r in raw]) / 1e6:.2f} MB serialised, PNG {png_kb:.0f} kB "
        f"per frame")
  print(f"one record: read {(read - start) / n * 1e3:.1f} ms + deserialise "
        f"{(parsed - read) / n * 1e3:.1f} ms ({n} records, one thread)")
  for size, seconds in decode.items():
    how = "" if size == stored else " (decode and resize)"
    print(f"one frame: PNG {stored} px -> {size} px {seconds * 1e3:.1f} ms{how} ({len(pngs)} "
          "frames)")


def main(argv):
  del argv
  path = paths.resolve(_DATASET.value) if _DATASET.value else builders.ensure_synthetic(
      _DATA_DIR.value, _CONFIG.value)
  split, res, n = _SPLIT.value, _RESOLUTION.value, _NUM_FRAMES.value
  common = dict(batch_size=_BATCH.value, seed=0, num_workers=_WORKERS.value)
  makers = {
      "motion": lambda: pipelines.motion_pipeline(path, split, **common),
      "video": lambda: pipelines.video_pipeline(path, split, resolution=res, num_frames=n,
                                                **common),
      "image": lambda: pipelines.image_pipeline(path, split, resolution=res, **common),
      "frames": lambda: pipelines.frames_pipeline(path, split, resolution=res, num_frames=n,
                                                  **common),
  }
  unknown = [p for p in _PIPELINES.value if p not in makers]
  if unknown:
    print(f"error: --pipelines names {', '.join(unknown)}; expected some of {', '.join(makers)}.",
          file=sys.stderr)
    return 1
  print(f"dataset {path}, split {split}, batch {_BATCH.value}, workers {_WORKERS.value}, "
        f"{os.cpu_count()} CPUs")
  if _SAMPLE.value > 0:
    time_parts(path, split, _SAMPLE.value, res)
  batch_mb = _BATCH.value * stored_record_bytes(path, split) / 1e6
  for name in _PIPELINES.value:
    start = time.perf_counter()
    it = makers[name]()
    for _ in range(_WARMUP.value):
      next(it)
    warm = time.perf_counter()
    frames = 0
    for _ in range(_BATCHES.value):
      batch = next(it)
      frames += batch["frames"][:, :, 0, 0, 0].size if "frames" in batch else 0
    end = time.perf_counter()
    clips = _BATCHES.value * _BATCH.value
    per_batch = (end - warm) / _BATCHES.value
    rate = f", {frames / (end - warm):7.1f} frames/s" if frames else ""
    print(f"{name:>6}: {clips / (end - warm):8.1f} clips/s{rate}  ({per_batch * 1e3:.1f} ms/batch, "
          f"{batch_mb:.1f} MB read per batch; start-up and {_WARMUP.value} warm-up batches "
          f"{warm - start:.1f} s)")
    del it
  return 0


if __name__ == "__main__":
  cli.run(main)
