"""TFDS builders that write talking-human clips as ArrayRecord, built and read without TensorFlow.

Two builders write the same record format (records.py, docs/data.md):
  SyntheticTalkingHumans  clips made by vlogger_jax/data/synthetic.py, configs tiny/small/
                          video_cpu/motion/motion2k/video/large and sr_tiny/sr256/sr512
                          (super-resolution),
                          splits 'train' and 'test' (held-out seeds, hence held-out identities)
  TalkingClipsFolder      prepared real clips, one schema .npz per clip under <folder>/<split>/

`prepare` builds one (resumable: a killed build starts over, a finished one is a no-op, one whose
records cannot be read is built again; builds of one dataset take turns through a lock file) and
then writes its statistics (statistics.py); `ensure_synthetic` and `build_folder` prepare the two
kinds. paths.py finds a built one; `records_problem` and `rebuild_command` say what is wrong with
one and how to build it again.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import fcntl
import glob
import json
import multiprocessing
import os
import shlex
import shutil
import sys
import tempfile
import textwrap
import time
from typing import Callable, Iterable, Iterator

from absl import logging
from array_record.python import array_record_module
import tensorflow_datasets as tfds
from tensorflow_datasets.core import shuffle as tfds_shuffle

from vlogger_jax import fileio
from vlogger_jax import head
from vlogger_jax.data import records
from vlogger_jax.data import schema
from vlogger_jax.data import statistics
from vlogger_jax.data import synthetic

# The minor version names the synthetic generator: 1.1 speaks espeak-ng sentences (issue 18), so
# a cached 1.0 synthetic dataset (syllable speech) is not reused; folder datasets of 1.x still read.
VERSION = "1.1.0"
DAMAGED = ".damaged"           # <dataset>/<config>/.damaged/<version>-<time>: unreadable builds
# Test seeds never meet train seeds: held-out identities, and held-out sentences and voices.
TEST_SEED_OFFSET = synthetic.HELD_OUT_SEEDS
DATASETS = {"synthetic": "synthetic_talking_humans", "folder": "talking_clips_folder"}
SOURCE_FILE = "source.json"  # beside a folder dataset's records: the clip folder it came from
BUILD_COMMAND = "python launch/build_dataset.py"


# ---------------------------------------------------------------------------------------------
# Work in worker processes (spawned: JAX and forked children do not mix).

_HEAD_MODEL = {}


def _init_worker() -> None:
  # Several workers on one accelerator must not each grab most of its memory.
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def _synthetic_example(args: tuple[int, int, int]) -> tuple[str, dict]:
  seed, num_frames, resolution = args
  if "model" not in _HEAD_MODEL:
    _HEAD_MODEL["model"] = head.load_default()
  clip = synthetic.generate_clip(seed, num_frames=num_frames, resolution=resolution,
                                 head_model=_HEAD_MODEL["model"])
  return f"seed{seed:08d}", records.encode_clip(clip, f"synthetic clip of seed {seed}")


def _folder_example(path: str) -> tuple[str, dict | None, str]:
  try:
    return path, records.encode_clip(records.load_npz_clip(path), path), ""
  except Exception as e:  # pylint: disable=broad-except
    # One unreadable or invalid file must never stop the build of the others.
    return path, None, str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"


def _ordered_map(fn: Callable, items: list, workers: int) -> Iterator:
  """fn over items in order, in `workers` spawned processes (in this one when workers <= 1)."""
  if workers <= 1:
    yield from map(fn, items)
    return
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context,
                                              initializer=_init_worker) as pool:
    yield from pool.map(fn, items)


# ---------------------------------------------------------------------------------------------
# Builders.


@dataclasses.dataclass(eq=False)
class SyntheticConfig(tfds.core.BuilderConfig):
  """Size of a synthetic dataset: clips per split, frames per clip (num_test_frames for the test
  clips, 0 for num_frames) and resolution."""
  num_train: int = 0
  num_test: int = 0
  num_frames: int = schema.CLIP_FRAMES
  resolution: int = 128
  num_test_frames: int = 0

  @property
  def test_frames(self) -> int:
    """Frames per test clip."""
    return self.num_test_frames or self.num_frames


SYNTHETIC_CONFIGS = [
    SyntheticConfig(name="tiny", num_train=4, num_test=2, num_frames=48, resolution=64,
                    description="For tests: 4 + 2 clips of 2 s at 64 px."),
    SyntheticConfig(name="small", num_train=16, num_test=4, num_frames=schema.CLIP_FRAMES,
                    resolution=128,
                    description="CPU experiments: 16 + 4 clips of 10 s at 128 px (~4 min)."),
    SyntheticConfig(name="video_cpu", num_train=12, num_test=4, num_frames=120, resolution=64,
                    description="CPU video runs: 12 + 4 clips of 5 s at 64 px (room for a "
                    "reference 3 s away from an 8-frame window)."),
    SyntheticConfig(name="motion", num_train=640, num_test=32, num_frames=schema.CLIP_FRAMES,
                    resolution=32,
                    description="Motion training: 640 + 32 clips of 10 s; the frames are "
                    "32 px thumbnails (the motion model reads audio and parameters)."),
    # Phoneme-level lip sync is harder to learn than the old loudness-driven jaw: sequence probes
    # on 200 clips fit the training set and stay far below it on held-out speakers, so this one
    # has three times motion's clips (the same 32 test seeds, so their evaluations compare).
    SyntheticConfig(name="motion2k", num_train=2000, num_test=32, num_frames=schema.CLIP_FRAMES,
                    resolution=32,
                    description="Motion training with more speech: 2000 + 32 clips of 10 s at "
                    "32 px (about 4 min with 15 workers)."),
    SyntheticConfig(name="video", num_train=160, num_test=16, num_frames=schema.CLIP_FRAMES,
                    resolution=128,
                    description="Short video-model runs at 128 px: 160 + 16 clips of 10 s "
                    "(about 2 min with 15 workers)."),
    SyntheticConfig(name="large", num_train=4000, num_test=200, num_frames=schema.CLIP_FRAMES,
                    resolution=256,
                    description="Accelerator training: 4000 + 200 clips of 10 s at 256 px."),
    # Super-resolution stages: short train clips (a record is one clip, so an 8-frame window reads
    # at most 3x the frames it uses) of many identities; test clips long enough for a base-model
    # reenactment and a cascade evaluation. sr256 and sr512 share their seeds, and a seed is the
    # same scene at every resolution (docs/data.md).
    SyntheticConfig(name="sr_tiny", num_train=4, num_test=2, num_frames=16, num_test_frames=48,
                    resolution=64,
                    description="For tests: 4 clips of 16 frames + 2 of 2 s at 64 px."),
    SyntheticConfig(name="sr256", num_train=320, num_test=16, num_frames=24, num_test_frames=120,
                    resolution=256,
                    description="128->256 super-resolution: 320 clips of 1 s + 16 of 5 s at "
                    "256 px."),
    SyntheticConfig(name="sr512", num_train=320, num_test=16, num_frames=24, num_test_frames=120,
                    resolution=512,
                    description="256->512 super-resolution: 320 clips of 1 s + 16 of 5 s at "
                    "512 px (the identities of sr256)."),
]


class _Builder(tfds.core.GeneratorBasedBuilder):
  """Shared construction: ArrayRecord output and optional worker processes."""

  VERSION = tfds.core.Version(VERSION)

  def __init__(self, *, workers: int = 0, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    self._workers = workers
    super().__init__(**kwargs)

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> None:
    # TFDS looks for checksum files beside the builder's code, through the `importlib_resources`
    # backport that is not installed; these builders download nothing, so there are none.
    return None

  def _info(self) -> tfds.core.DatasetInfo:
    # DatasetInfo directly: dataset_info_from_configs() reads metadata files beside the module.
    return tfds.core.DatasetInfo(builder=self, description=self.__doc__,
                                 features=records.features())

  # TFDS prints "Downloading and preparing dataset Unknown size (download: Unknown size, ...)"
  # and "Dataset ... downloaded and prepared to ..." (termcolor.cprint to stdout, no logger or
  # option governs them) from these two hooks of the builder. These builders download nothing,
  # and build_dataset.py's stdout is the dataset folder alone: `prepare` says what it builds.
  def _log_download_bytes(self) -> None:
    pass

  def _log_download_done(self) -> None:
    pass


class SyntheticTalkingHumans(_Builder):
  """Synthetic talking humans (vlogger_jax/data/synthetic.py), one identity per seed."""

  BUILDER_CONFIGS = SYNTHETIC_CONFIGS
  DEFAULT_CONFIG_NAME = "small"

  def _split_generators(self, dl_manager):
    del dl_manager
    c = self.builder_config
    return {"train": self._generate_examples(range(c.num_train), c.num_frames),
            "test": self._generate_examples(range(TEST_SEED_OFFSET,
                                                  TEST_SEED_OFFSET + c.num_test), c.test_frames)}

  def _generate_examples(self, seeds: Iterable[int], num_frames: int):
    items = [(int(s), num_frames, self.builder_config.resolution) for s in seeds]
    yield from _ordered_map(_synthetic_example, items, self._workers)


class TalkingClipsFolder(_Builder):
  """Prepared real clips: <manual_dir>/<split>/*.npz, one clip in the schema format per file."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put one .npz per clip (the fields of vlogger_jax/data/schema.py) under "
      "<manual_dir>/train/ and <manual_dir>/test/ (any subfolder name becomes a split).")

  def _split_generators(self, dl_manager):
    files = clip_files(os.fspath(dl_manager.manual_dir))
    return {name: self._generate_examples(paths) for name, paths in files.items()}

  def _generate_examples(self, files: list[str]):
    written, first_error = 0, ""
    for path, example, error in _ordered_map(_folder_example, files, self._workers):
      if example is None:
        logging.warning("Skipping clip file %s: %s", path, error)
        first_error = first_error or error
        continue
      written += 1
      yield os.path.basename(path), example
    if not written:
      # The first file's problem without its "; expected ...", which this sentence says.
      raise ValueError(f"none of the {len(files)} clip files in {os.path.dirname(files[0])} is "
                       f"a valid clip (the first: {first_error.split('; expected', 1)[0]}); "
                       "expected at least one schema .npz clip (vlogger_jax/data/schema.py).")


# ---------------------------------------------------------------------------------------------
# Preparing a dataset: build (resumable), then statistics.


@contextlib.contextmanager
def _file_lock(path: str):
  # Processes preparing the same dataset (hosts of one job, or two runs) take turns; the second
  # then finds the dataset finished.
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _shuffle_buffer_bytes() -> int:
  """Half the host's memory: how much of one split TFDS may hold for shuffling."""
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
  except (ValueError, OSError, AttributeError):
    return 8 << 30


@contextlib.contextmanager
def _in_memory_shuffle():
  """TFDS shuffles a split in memory up to 1 GB and spills beyond it through tf.io.gfile, i.e.
  TensorFlow, which this project does not install; raise that buffer to half the host's memory
  (the 128 px `video` split holds about 0.8 GB) and say so in one sentence if a split outgrows
  even that."""
  before = tfds_shuffle.MAX_MEM_BUFFER_SIZE
  tfds_shuffle.MAX_MEM_BUFFER_SIZE = max(before, _shuffle_buffer_bytes())
  try:
    yield
  except ModuleNotFoundError as e:
    if e.name != "tensorflow":
      raise
    raise RuntimeError(
        f"a split of this dataset is larger than the in-memory shuffle buffer "
        f"({tfds_shuffle.MAX_MEM_BUFFER_SIZE / 2**30:.1f} GiB, half this host's memory) and TFDS "
        "spills larger splits through TensorFlow, which is not installed; expected a host with "
        "more memory, `pip install tensorflow-cpu`, or a smaller config.") from e
  finally:
    tfds_shuffle.MAX_MEM_BUFFER_SIZE = before


def records_problem(version_dir: str) -> tuple[str, str, str] | None:
  """(split, file, reason) for the first record file of a built dataset that is missing, holds
  another number of records than dataset_info.json says, or whose first record cannot be read;
  None if every file passes. Cheap: each file's index and one record (TFDS itself calls a
  dataset complete once dataset_info.json exists, whatever became of its records since)."""
  with open(os.path.join(version_dir, "dataset_info.json")) as f:
    info = json.load(f)
  name = info.get("name", "")
  for split in info.get("splits", []):
    lengths = [int(n) for n in split.get("shardLengths", [])]
    for i, length in enumerate(lengths):
      path = os.path.join(version_dir, f"{name}-{split['name']}.array_record-"
                                       f"{i:05d}-of-{len(lengths):05d}")
      if not os.path.isfile(path):
        return split["name"], path, "the file is missing"
      try:
        reader = array_record_module.ArrayRecordReader(path)
        try:
          if reader.num_records() != length:
            return split["name"], path, (f"it holds {reader.num_records()} records where "
                                         f"dataset_info.json says {length}")
          if length:
            reader.read([0])
        finally:
          reader.close()
      except Exception as e:  # pylint: disable=broad-except  (Riegeli reports damage as it can)
        reason = textwrap.shorten(str(e).splitlines()[0], 120, placeholder=" ...")
        return split["name"], path, f"{type(e).__name__}: {reason}"
  return None


def rebuild_command(version_dir: str) -> str:
  """The build_dataset.py command that builds the dataset in `version_dir` again."""
  version_dir = os.path.abspath(version_dir)
  with open(os.path.join(version_dir, "dataset_info.json")) as f:
    info = json.load(f)
  if info.get("name") == DATASETS["synthetic"]:  # <data_dir>/<name>/<config>/<version>
    data_dir = os.path.dirname(os.path.dirname(os.path.dirname(version_dir)))
    return (f"{BUILD_COMMAND} --dataset=synthetic --config={info.get('configName', '')} "
            f"--data_dir={shlex.quote(data_dir)}")
  data_dir = os.path.dirname(os.path.dirname(version_dir))  # <data_dir>/<name>/<version>
  source = "<the folder of .npz clips it was built from>"
  if os.path.exists(os.path.join(version_dir, SOURCE_FILE)):
    with open(os.path.join(version_dir, SOURCE_FILE)) as f:
      source = shlex.quote(json.load(f)["source"])
  return f"{BUILD_COMMAND} --dataset=folder --source={source} --data_dir={shlex.quote(data_dir)}"


def is_finished(version_dir: str) -> bool:
  """Whether `version_dir` holds complete, readable records (records_problem) and their
  statistics."""
  return (os.path.exists(os.path.join(version_dir, "dataset_info.json"))
          and os.path.exists(os.path.join(version_dir, statistics.STATS_FILE))
          and records_problem(version_dir) is None)


def prepare(builder: tfds.core.DatasetBuilder, download_config=None, what: str = "",
            source: str | None = None) -> str:
  """Builds `builder` unless built, writes its statistics unless written; returns the version dir.

  TFDS writes into an `incomplete.*` folder renamed when every split is written, so a killed
  build leaves no version folder and the next call removes its leftovers and starts over; a
  finished one is a no-op. A version folder whose records cannot be read (records_problem) is
  moved aside into DAMAGED beside it (never deleted) and built again. `what` describes the build in its one line on stderr; `source`, the
  clip folder of a folder dataset, is kept beside the records (SOURCE_FILE) for rebuild_command.
  """
  version_dir = os.fspath(builder.data_dir)
  lock = os.path.join(os.path.dirname(version_dir), f".{os.path.basename(version_dir)}.lock")
  with _file_lock(lock):
    if is_finished(version_dir):
      return version_dir
    if os.path.exists(os.path.join(version_dir, "dataset_info.json")):
      if (problem := records_problem(version_dir)):
        split, path, reason = problem
        aside = os.path.join(os.path.dirname(version_dir), DAMAGED,
                             f"{os.path.basename(version_dir)}-{time.strftime('%Y%m%d-%H%M%S')}")
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        os.rename(version_dir, aside)
        _say(f"split {split} of {version_dir} cannot be read ({path}: {reason}); moved it to "
             f"{aside} (delete it once the new build is good) and building the dataset again")
    # A killed build leaves its incomplete.* folder (GBs for `large`); under the lock no other
    # build of this dataset is running, so it is garbage.
    for stale in glob.glob(os.path.join(os.path.dirname(version_dir),
                                        f"incomplete.*_{os.path.basename(version_dir)}")):
      logging.info("Removing %s left by an interrupted build.", stale)
      shutil.rmtree(stale, ignore_errors=True)
    config = download_config or tfds.download.DownloadConfig()
    config = dataclasses.replace(config, compute_stats=tfds.download.ComputeStatsMode.SKIP)
    name = builder.name + (f"/{builder.builder_config.name}" if builder.builder_config else "")
    if not os.path.exists(os.path.join(version_dir, "dataset_info.json")):
      _say(f"building {name}{f' ({what})' if what else ''} in {version_dir}")
      start = time.monotonic()
      # Nothing is downloaded: TFDS's download folder (it makes downloads/extracted/) is a
      # temporary one rather than an empty folder left in data_dir.
      with _in_memory_shuffle(), tempfile.TemporaryDirectory(prefix="tfds_downloads_") as tmp:
        builder.download_and_prepare(download_dir=tmp, download_config=config)
      _say(f"built {name} in {time.monotonic() - start:.0f} s")
    if source is not None:
      fileio.write_json(os.path.join(version_dir, SOURCE_FILE), {"source": source})
    statistics.write_statistics(version_dir)
  return version_dir


def _say(line: str) -> None:
  """A build's progress line, on stderr (build_dataset.py's stdout is the dataset folder)."""
  print(line, file=sys.stderr, flush=True)


def synthetic_builder(data_dir: str, config_name: str, workers: int = 0):
  """The SyntheticTalkingHumans builder of config `config_name` under `data_dir`."""
  names = [c.name for c in SYNTHETIC_CONFIGS]
  if config_name not in names:
    raise ValueError(f"synthetic dataset config '{config_name}' is unknown; expected one of "
                     f"{', '.join(names)}.")
  return SyntheticTalkingHumans(config=config_name, data_dir=data_dir, workers=workers)


def ensure_synthetic(data_dir: str, config_name: str, workers: int = 0) -> str:
  """Builds the synthetic dataset `config_name` under `data_dir` if needed; returns its folder."""
  builder = synthetic_builder(data_dir, config_name, workers)
  c = builder.builder_config
  frames = (f"{c.num_frames} frames" if c.test_frames == c.num_frames
            else f"{c.num_frames} and {c.test_frames} frames")
  return prepare(builder, what=f"{c.num_train + c.num_test} clips of {frames} at "
                               f"{c.resolution} px")


def clip_files(source_dir: str) -> dict[str, list[str]]:
  """The .npz clip files of a clip folder by split: {split: sorted <source_dir>/<split>/*.npz}, the
  splits that hold none left out; ValueError in one sentence unless there is a train split."""
  expected = "expected one .npz clip per file under train/ (and test/)"
  if not os.path.exists(source_dir):
    raise ValueError(f"clip folder {source_dir} does not exist; {expected}.")
  if not os.path.isdir(source_dir):
    raise ValueError(f"clip folder {source_dir} is a file, not a folder; {expected}.")
  splits = {}
  for name in sorted(os.listdir(source_dir)):
    files = sorted(glob.glob(os.path.join(source_dir, name, "*.npz")))
    if files and os.path.isdir(os.path.join(source_dir, name)):
      splits[name] = files
  if "train" not in splits:
    loose = glob.glob(os.path.join(source_dir, "*.npz"))
    found = (f"it holds {len(loose)} .npz files itself, not under train/" if loose else
             f"its subfolders with .npz files are {', '.join(splits)}" if splits else
             "it is empty" if not os.listdir(source_dir) else "it holds no .npz files")
    raise ValueError(f"clip folder {source_dir} has no train/*.npz files ({found}); {expected}.")
  return splits


def build_folder(source_dir: str, data_dir: str, workers: int = 0) -> str:
  """Builds TalkingClipsFolder from the .npz clips under `source_dir`; returns its folder.
  ValueError in one sentence, before anything is written, if there are no train clips."""
  splits = clip_files(source_dir)
  count = sum(map(len, splits.values()))
  what = (f"{count} clip file{'s' if count != 1 else ''}: "
          + ", ".join(f"{len(v)} {k}" for k, v in splits.items()) + f", from {source_dir}")
  builder = TalkingClipsFolder(data_dir=data_dir, workers=workers)
  return prepare(builder, tfds.download.DownloadConfig(manual_dir=source_dir), what,
                 source=os.path.abspath(source_dir))
