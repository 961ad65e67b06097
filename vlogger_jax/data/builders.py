"""TFDS builders that write talking-human clips as ArrayRecord, built and read without TensorFlow.

Two builders write the same record format (docs/data.md):
  SyntheticTalkingHumans  clips made by vlogger_jax/data/synthetic.py, configs tiny/small/large,
                          splits 'train' and 'test' (held-out seeds, hence held-out identities)
  TalkingClipsFolder      prepared real clips, one schema .npz per clip under <folder>/<split>/

A record holds every field of the clip format (schema.py) except that `frames` is a 1-D array of
per-frame PNG bytes (so a pipeline decodes only the frames of its window, and no TFDS image
feature is needed: those encode through TensorFlow), plus `mel` [T, 256] float16 computed over
the whole clip at build time and `num_frames`/`resolution` scalars. Beside the records, in the
dataset's version folder, `prepare` writes motion_stats.json (relative residuals),
motion_stats_absolute.json and clip_summary.json, each atomically; motion_stats.json is written
last and marks a finished dataset.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import fcntl
import glob
import io
import json
import multiprocessing
import os
import shutil
from typing import Callable, Iterable, Iterator

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from vlogger_jax import contracts
from vlogger_jax import fileio
from vlogger_jax import motion
from vlogger_jax.data import schema

VERSION = "1.0.0"
STATS_FILE = "motion_stats.json"
ABSOLUTE_STATS_FILE = "motion_stats_absolute.json"
SUMMARY_FILE = "clip_summary.json"
TEST_SEED_OFFSET = 1_000_000  # Test seeds never meet train seeds, so identities are held out.
STATS_WINDOWS_PER_CLIP = 8
STATS_MIN_FRAMES, STATS_MAX_FRAMES = 72, 240  # The motion pipeline's window lengths (Supp. C.1).
PNG_LEVEL = 3  # zlib level: level 1 makes files ~1.5x larger, levels above 3 gain little.
MEL_DTYPE = np.float16
DATASETS = {"synthetic": "synthetic_talking_humans", "folder": "talking_clips_folder"}

_FIELDS_PARAMS = ("expression", "head_pose", "body_keypoints", "body_visibility")


def features() -> tfds.features.FeaturesDict:
  """The record format shared by every builder (field shapes as in schema.py, T frames)."""
  f = tfds.features
  return f.FeaturesDict({
      "id": f.Text(),
      "num_frames": f.Scalar(dtype=np.int32),
      "resolution": f.Scalar(dtype=np.int32),
      "frames": f.Tensor(shape=(None,), dtype=np.object_),  # T PNG-encoded RGB frames.
      "audio": f.Tensor(shape=(None,), dtype=np.int16, encoding="bytes"),
      "mel": f.Tensor(shape=(None, contracts.MEL_BINS), dtype=MEL_DTYPE, encoding="bytes"),
      "shape": f.Tensor(shape=(contracts.NUM_SHAPE,), dtype=np.float32),
      "fov": f.Scalar(dtype=np.float32),
      "expression": f.Tensor(shape=(None, contracts.NUM_EXPRESSION), dtype=np.float32,
                             encoding="bytes"),
      "head_pose": f.Tensor(shape=(None, contracts.HEAD_POSE_DIM), dtype=np.float32,
                            encoding="bytes"),
      "body_keypoints": f.Tensor(shape=(None, contracts.NUM_KEYPOINTS, 2), dtype=np.float32,
                                 encoding="bytes"),
      "body_visibility": f.Tensor(shape=(None, contracts.NUM_KEYPOINTS), dtype=np.float32,
                                  encoding="bytes"),
  })


# ---------------------------------------------------------------------------------------------
# Encoding one clip.

_MEL_FN = {}


def clip_mel(audio: np.ndarray, num_frames: int) -> np.ndarray:
  """Log-mel of a whole clip, int16 audio [S] -> [num_frames, 256] float16."""
  import jax  # pylint: disable=g-import-not-at-top  (keeps `import builders` free of JAX)
  from vlogger_jax import audio as audio_lib  # pylint: disable=g-import-not-at-top
  if "fn" not in _MEL_FN:
    _MEL_FN["fn"] = jax.jit(audio_lib.mel_features)
  wave = np.asarray(audio, np.float32) / 32768.0
  mel = np.asarray(_MEL_FN["fn"](wave))[:num_frames]
  if mel.shape[0] != num_frames:
    raise ValueError(f"audio of {wave.shape[0]} samples covers {mel.shape[0]} frames; expected "
                     f"at least {num_frames}.")
  return mel.astype(MEL_DTYPE)


def encode_png(frame: np.ndarray) -> bytes:
  """One uint8 RGB frame [R, R, 3] -> PNG bytes."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(frame)).save(buffer, format="png",
                                                     compress_level=PNG_LEVEL)
  return buffer.getvalue()


def encode_clip(clip: dict, name: str = "clip") -> dict:
  """A schema-valid clip -> one record (frames as PNG bytes, mel added); ValueError if invalid."""
  schema.validate_clip(clip, name)
  frames = np.asarray(clip["frames"])
  t = frames.shape[0]
  audio = np.asarray(clip["audio"])
  example = {
      "id": str(clip["id"]),
      "num_frames": np.int32(t),
      "resolution": np.int32(frames.shape[1]),
      "frames": np.array([encode_png(f) for f in frames], dtype=object),
      "audio": audio,
      "mel": clip_mel(audio, t),
      "shape": np.asarray(clip["shape"], np.float32),
      "fov": np.float32(clip["fov"]),
  }
  for key in _FIELDS_PARAMS:
    example[key] = np.asarray(clip[key], np.float32)
  return example


def load_npz_clip(path: str) -> dict:
  """A clip from an .npz file of schema fields (float64 arrays become float32; id defaults to
  the file name)."""
  with np.load(path, allow_pickle=False) as data:
    clip = {k: data[k] for k in data.files}
  clip["id"] = str(clip["id"]) if "id" in clip else os.path.splitext(os.path.basename(path))[0]
  for key, (dtype, _) in schema.FIELDS.items():
    value = clip.get(key)
    if (isinstance(value, np.ndarray) and dtype is not str and value.dtype.kind == "f"
        and np.dtype(dtype).kind == "f"):
      clip[key] = value.astype(dtype)
  return clip


# ---------------------------------------------------------------------------------------------
# Work in worker processes (spawned: JAX and forked children do not mix).

_HEAD_MODEL = {}


def _init_worker() -> None:
  # Several workers on one accelerator must not each grab most of its memory.
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def _synthetic_example(args: tuple[int, int, int]) -> tuple[str, dict]:
  seed, num_frames, resolution = args
  from vlogger_jax import head  # pylint: disable=g-import-not-at-top
  from vlogger_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  if "model" not in _HEAD_MODEL:
    _HEAD_MODEL["model"] = head.load_default()
  clip = synthetic.generate_clip(seed, num_frames=num_frames, resolution=resolution,
                                 head_model=_HEAD_MODEL["model"])
  return f"seed{seed:08d}", encode_clip(clip, f"synthetic clip of seed {seed}")


def _folder_example(path: str) -> tuple[str, dict | None, str]:
  try:
    return path, encode_clip(load_npz_clip(path), path), ""
  except Exception as e:  # pylint: disable=broad-except
    # One unreadable or invalid file must never stop the build of the others.
    return path, None, f"{type(e).__name__}: {e}"


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
  """Size of a synthetic dataset."""
  num_train: int = 0
  num_test: int = 0
  num_frames: int = schema.CLIP_FRAMES
  resolution: int = 128


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
    SyntheticConfig(name="video", num_train=160, num_test=16, num_frames=schema.CLIP_FRAMES,
                    resolution=128,
                    description="Short video-model runs at 128 px: 160 + 16 clips of 10 s "
                    "(about 2 min with 15 workers)."),
    SyntheticConfig(name="large", num_train=4000, num_test=200, num_frames=schema.CLIP_FRAMES,
                    resolution=256,
                    description="Accelerator training: 4000 + 200 clips of 10 s at 256 px."),
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
    return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=features())


class SyntheticTalkingHumans(_Builder):
  """Synthetic talking humans (vlogger_jax/data/synthetic.py), one identity per seed."""

  BUILDER_CONFIGS = SYNTHETIC_CONFIGS
  DEFAULT_CONFIG_NAME = "small"

  def _split_generators(self, dl_manager):
    del dl_manager
    c = self.builder_config
    return {"train": self._generate_examples(range(c.num_train)),
            "test": self._generate_examples(range(TEST_SEED_OFFSET,
                                                  TEST_SEED_OFFSET + c.num_test))}

  def _generate_examples(self, seeds: Iterable[int]):
    c = self.builder_config
    items = [(int(s), c.num_frames, c.resolution) for s in seeds]
    yield from _ordered_map(_synthetic_example, items, self._workers)


class TalkingClipsFolder(_Builder):
  """Prepared real clips: <manual_dir>/<split>/*.npz, one clip in the schema format per file."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put one .npz per clip (the fields of vlogger_jax/data/schema.py) under "
      "<manual_dir>/train/ and <manual_dir>/test/ (any subfolder name becomes a split).")

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    splits = {}
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
      files = sorted(glob.glob(os.path.join(root, name, "*.npz")))
      if files:
        splits[name] = self._generate_examples(files)
    if "train" not in splits:
      raise ValueError(f"clip folder {root} has no train/*.npz files; expected one .npz clip per "
                       "file under train/ (and test/).")
    return splits

  def _generate_examples(self, files: list[str]):
    written = 0
    for path, example, error in _ordered_map(_folder_example, files, self._workers):
      if example is None:
        logging.warning("Skipping clip file %s: %s", path, error)
        continue
      written += 1
      yield os.path.basename(path), example
    if not written:
      raise ValueError(f"none of the {len(files)} clip files in {os.path.dirname(files[0])} is "
                       "valid (see the warnings); expected at least one schema .npz clip.")


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
  from tensorflow_datasets.core import shuffle  # pylint: disable=g-import-not-at-top
  before = shuffle.MAX_MEM_BUFFER_SIZE
  shuffle.MAX_MEM_BUFFER_SIZE = max(before, _shuffle_buffer_bytes())
  try:
    yield
  except ModuleNotFoundError as e:
    if e.name != "tensorflow":
      raise
    raise RuntimeError(
        f"a split of this dataset is larger than the in-memory shuffle buffer "
        f"({shuffle.MAX_MEM_BUFFER_SIZE / 2**30:.1f} GiB, half this host's memory) and TFDS "
        "spills larger splits through TensorFlow, which is not installed; expected a host with "
        "more memory, `pip install tensorflow-cpu`, or a smaller config.") from e
  finally:
    shuffle.MAX_MEM_BUFFER_SIZE = before


def is_finished(version_dir: str) -> bool:
  """Whether `version_dir` holds complete records and their statistics."""
  return (os.path.exists(os.path.join(version_dir, "dataset_info.json"))
          and os.path.exists(os.path.join(version_dir, STATS_FILE)))


def prepare(builder: tfds.core.DatasetBuilder, download_config=None) -> str:
  """Builds `builder` unless built, writes its statistics unless written; returns the version dir.

  TFDS writes into an `incomplete.*` folder renamed when every split is written, so a killed
  build leaves no version folder and the next call removes its leftovers and starts over; a
  finished one is a no-op.
  """
  version_dir = os.fspath(builder.data_dir)
  lock = os.path.join(os.path.dirname(version_dir), f".{os.path.basename(version_dir)}.lock")
  with _file_lock(lock):
    if is_finished(version_dir):
      return version_dir
    # A killed build leaves its incomplete.* folder (GBs for `large`); under the lock no other
    # build of this dataset is running, so it is garbage.
    for stale in glob.glob(os.path.join(os.path.dirname(version_dir),
                                        f"incomplete.*_{os.path.basename(version_dir)}")):
      logging.info("Removing %s left by an interrupted build.", stale)
      shutil.rmtree(stale, ignore_errors=True)
    config = download_config or tfds.download.DownloadConfig()
    config = dataclasses.replace(config, compute_stats=tfds.download.ComputeStatsMode.SKIP)
    with _in_memory_shuffle():
      builder.download_and_prepare(download_config=config)
    write_statistics(version_dir)
  return version_dir


def motion_window_vectors(clip: dict, rng: np.random.Generator, windows: int,
                          absolute: bool = False) -> np.ndarray:
  """Motion vectors [N, 223] of `windows` random 72-240 frame windows, each relative to its
  first frame (the motion pipeline's reference)."""
  t = int(clip["num_frames"])
  out = []
  for _ in range(windows):
    length = min(t, int(rng.integers(STATS_MIN_FRAMES, STATS_MAX_FRAMES + 1)))
    s = int(rng.integers(0, t - length + 1))
    w = slice(s, s + length)
    out.append(motion.pack(clip["expression"][w], clip["head_pose"][w], clip["body_keypoints"][w],
                          clip["head_pose"][s], clip["body_keypoints"][s], absolute))
  return np.concatenate(out).astype(np.float64)


def write_statistics(version_dir: str, seed: int = 0) -> None:
  """Motion statistics over the train split and the per-split clip summary, beside the records."""
  builder = tfds.builder_from_directory(version_dir)
  summary = {}
  sums = {False: np.zeros((3, contracts.MOTION_DIM)), True: np.zeros((3, contracts.MOTION_DIM))}
  rng = np.random.default_rng(seed)
  for split, info in builder.info.splits.items():
    source = builder.as_data_source(split)
    lengths, resolutions = [], set()
    for i in range(len(source)):
      try:
        clip = source[i]
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("Statistics skip record %d of split %s in %s: %s", i, split,
                        version_dir, e)
        continue
      lengths.append(int(clip["num_frames"]))
      resolutions.add(int(clip["resolution"]))
      if split == "train":
        state = rng.bit_generator.state
        for absolute in (False, True):
          rng.bit_generator.state = state  # The same windows for both kinds.
          v = motion_window_vectors(clip, rng, STATS_WINDOWS_PER_CLIP, absolute)
          sums[absolute] += [np.full(v.shape[1], v.shape[0]), v.sum(0), np.square(v).sum(0)]
      if (i + 1) % 100 == 0:
        logging.info("Statistics: %d / %d clips of split %s", i + 1, info.num_examples, split)
    summary[split] = {"num_clips": len(lengths), "min_frames": min(lengths, default=0),
                      "max_frames": max(lengths, default=0), "resolutions": sorted(resolutions)}
  if sums[False][0, 0] == 0:
    raise ValueError(f"dataset {version_dir} has no readable train clip; expected at least one "
                     "to compute motion statistics.")
  fileio.write_json(os.path.join(version_dir, SUMMARY_FILE), summary)
  for absolute, name in ((True, ABSOLUTE_STATS_FILE), (False, STATS_FILE)):
    n, s, s2 = sums[absolute]
    mean = s / n
    std = np.sqrt(np.maximum(s2 / n - mean ** 2, 0.0))
    motion.Stats(mean, std).save(os.path.join(version_dir, name))


def synthetic_builder(data_dir: str, config_name: str, workers: int = 0):
  """The SyntheticTalkingHumans builder of config `config_name` under `data_dir`."""
  names = [c.name for c in SYNTHETIC_CONFIGS]
  if config_name not in names:
    raise ValueError(f"synthetic dataset config '{config_name}' is unknown; expected one of "
                     f"{', '.join(names)}.")
  return SyntheticTalkingHumans(config=config_name, data_dir=data_dir, workers=workers)


def ensure_synthetic(data_dir: str, config_name: str, workers: int = 0) -> str:
  """Builds the synthetic dataset `config_name` under `data_dir` if needed; returns its folder."""
  return prepare(synthetic_builder(data_dir, config_name, workers))


def build_folder(source_dir: str, data_dir: str, workers: int = 0) -> str:
  """Builds TalkingClipsFolder from the .npz clips under `source_dir`; returns its folder."""
  if not os.path.isdir(source_dir):
    raise ValueError(f"clip folder {source_dir} does not exist; expected a folder with "
                     "train/*.npz (and test/*.npz).")
  builder = TalkingClipsFolder(data_dir=data_dir, workers=workers)
  return prepare(builder, tfds.download.DownloadConfig(manual_dir=source_dir))


def resolve(path: str) -> str:
  """The version folder of a dataset given it or its parent; ValueError in one sentence if none."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise ValueError(f"dataset path {path} does not exist; expected a folder written by "
                     "launch/build_dataset.py.")
  if not os.path.exists(os.path.join(path, "dataset_info.json")):
    if os.path.exists(os.path.join(path, VERSION, "dataset_info.json")):
      path = os.path.join(path, VERSION)
    else:
      found = sorted(d for d in os.listdir(path)
                     if os.path.exists(os.path.join(path, d, "dataset_info.json")))
      raise ValueError(f"dataset path {path} holds no dataset of version {VERSION} (found "
                       f"{', '.join(found) or 'none'}); expected the folder of a dataset built "
                       "by this version of launch/build_dataset.py.")
  with open(os.path.join(path, "dataset_info.json")) as f:
    version = json.load(f).get("version", "")
  if version.split(".")[0] != VERSION.split(".")[0]:
    raise ValueError(f"dataset {path} has version {version}; expected {VERSION} (rebuild it "
                     "with launch/build_dataset.py).")
  if not os.path.exists(os.path.join(path, STATS_FILE)):
    raise ValueError(f"dataset {path} lacks {STATS_FILE}; finish it by running "
                     "launch/build_dataset.py again.")
  return path


def dataset_dir(data_config) -> str:
  """The dataset a config's `data` section names, built first if it is the synthetic one.

  data.dataset 'synthetic' -> SyntheticTalkingHumans/<data.config_name> under data.data_dir
  (default ./data); 'folder' -> a dataset already built from .npz clips at data.path.
  """
  if data_config.dataset == "synthetic":
    return ensure_synthetic(data_config.data_dir or "data", data_config.config_name)
  if data_config.dataset == "folder":
    return resolve(data_config.path)
  raise ValueError(f"data.dataset '{data_config.dataset}' is unknown; expected 'synthetic' or "
                   "'folder'.")
