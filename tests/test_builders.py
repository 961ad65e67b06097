"""TFDS builders: records written without TensorFlow, statistics, resumption, bad input."""

import io
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core import shuffle
from PIL import Image

from vlogger_jax import audio as audio_lib
from vlogger_jax import contracts
from vlogger_jax import motion
from vlogger_jax.data import builders
from vlogger_jax.data import paths
from vlogger_jax.data import pipelines
from vlogger_jax.data import schema
from vlogger_jax.data import statistics

FRAMES, RES = 100, 16  # Long enough for an 8-frame window with a reference 72 frames away.


def make_clip(seed: int, num_frames: int = FRAMES, resolution: int = RES) -> dict:
  """A random schema-valid clip (smooth frames so PNG stays small; iid uniform keypoints)."""
  rng = np.random.default_rng(seed)
  x = np.arange(resolution)[None, :, None, None]
  t = np.arange(num_frames)[:, None, None, None]
  frames = (rng.integers(0, 256, 3) + 5 * x + 3 * t + np.zeros((1, resolution, resolution, 3)))
  frames = frames % 256
  rot = np.array([1, 0, 0, 0, 1, 0], np.float32) + rng.normal(0, 0.1, (num_frames, 6))
  return {
      "id": f"clip{seed}",
      "frames": frames.astype(np.uint8),
      "audio": rng.normal(0, 3000, schema.num_samples(num_frames)).astype(np.int16),
      "shape": rng.normal(size=contracts.NUM_SHAPE).astype(np.float32),
      "fov": np.float32(20 + seed % 30),
      "expression": rng.normal(size=(num_frames, contracts.NUM_EXPRESSION)).astype(np.float32),
      "head_pose": np.concatenate([rot, rng.normal(0, 0.02, (num_frames, 3))], 1).astype(
          np.float32),
      "body_keypoints": rng.uniform(0, 1, (num_frames, 75, 2)).astype(np.float32),
      "body_visibility": (rng.uniform(size=(num_frames, 75)) > 0.2).astype(np.float32),
  }


TRAIN_SEEDS, TEST_SEEDS = range(6), range(100, 102)


def write_clip_folder(root: str) -> dict:
  """<root>/{train,test}/*.npz stand-in clips plus two bad files; returns {id: clip}."""
  clips = {}
  for split, seeds in (("train", TRAIN_SEEDS), ("test", TEST_SEEDS)):
    os.makedirs(os.path.join(root, split), exist_ok=True)
    for s in seeds:
      clip = make_clip(s)
      clips[clip["id"]] = clip
      np.savez(os.path.join(root, split, f"{clip['id']}.npz"), **clip)
  with open(os.path.join(root, "train", "truncated.npz"), "wb") as f:
    f.write(b"PK\x03\x04 not really a zip")
  bad = make_clip(99)
  bad["expression"] = bad["expression"][:, :10]
  np.savez(os.path.join(root, "train", "wrong_shape.npz"), **bad)
  return clips


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  root = tmp_path_factory.mktemp("clips")
  clips = write_clip_folder(str(root))
  data_dir = str(tmp_path_factory.mktemp("data"))
  path = builders.build_folder(str(root), data_dir)
  return path, clips, str(root), data_dir


def test_records_hold_every_field_and_the_whole_clip_mel(built):
  path, clips, _, _ = built
  assert path.endswith(os.path.join("talking_clips_folder", builders.VERSION))
  builder = tfds.builder_from_directory(path)
  assert builder.info.splits["train"].num_examples == len(TRAIN_SEEDS)  # Bad files skipped.
  assert builder.info.splits["test"].num_examples == len(TEST_SEEDS)
  source = builder.as_data_source("train")
  ids = set()
  for i in range(len(source)):
    record = source[i]
    clip = clips[record["id"].decode()]
    ids.add(record["id"].decode())
    assert int(record["num_frames"]) == FRAMES and int(record["resolution"]) == RES
    frames = np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in record["frames"]])
    np.testing.assert_array_equal(frames, clip["frames"])  # PNG is lossless.
    np.testing.assert_array_equal(record["audio"], clip["audio"])
    for key in ("shape", "expression", "head_pose", "body_keypoints", "body_visibility"):
      np.testing.assert_array_equal(record[key], clip[key])
    assert record["mel"].dtype == np.float16 and record["mel"].shape == (FRAMES, 256)
    mel = np.asarray(audio_lib.mel_features(clip["audio"].astype(np.float32) / 32768))[:FRAMES]
    np.testing.assert_allclose(record["mel"].astype(np.float32), mel, atol=0.02, rtol=0.01)
  assert ids == {f"clip{s}" for s in TRAIN_SEEDS}


def test_bad_files_are_skipped_with_a_warning_naming_them(tmp_path, caplog):
  root = tmp_path / "clips"
  (root / "train").mkdir(parents=True)
  np.savez(root / "train" / "good.npz", **make_clip(1, num_frames=8))
  (root / "train" / "corrupt.npz").write_bytes(b"garbage")
  path = builders.build_folder(str(root), str(tmp_path / "data"))
  assert tfds.builder_from_directory(path).info.splits["train"].num_examples == 1
  assert "corrupt.npz" in caplog.text


def test_statistics_are_relative_to_the_window_start(built):
  path, clips, _, _ = built
  rel = motion.Stats.load(os.path.join(path, statistics.STATS_FILE))
  ab = motion.Stats.load(os.path.join(path, statistics.ABSOLUTE_STATS_FILE))
  kp = np.concatenate([clips[f"clip{s}"]["body_keypoints"] for s in TRAIN_SEEDS])
  # Absolute keypoints are the data's own; residuals of iid uniforms have mean 0 and sqrt(2)
  # times the spread.
  np.testing.assert_allclose(ab.mean[motion.BODY], 0.5, atol=0.05)
  np.testing.assert_allclose(ab.std[motion.BODY].mean(), kp.std(), rtol=0.05)
  # Windows of 100-frame clips mostly start at frame 0, so only about 6 references per dimension:
  # loose tolerances, still far from the absolute statistics (0.5 and 1x).
  assert abs(rel.mean[motion.BODY].mean()) < 0.05
  np.testing.assert_allclose(rel.std[motion.BODY].mean(), np.sqrt(2) * kp.std(), rtol=0.1)
  np.testing.assert_allclose(rel.mean[motion.EXPRESSION], ab.mean[motion.EXPRESSION])
  summary = json.load(open(os.path.join(path, statistics.SUMMARY_FILE)))
  assert summary["train"] == {"num_clips": 6, "min_frames": FRAMES, "max_frames": FRAMES,
                              "resolutions": [RES]}


def test_rebuild_is_a_no_op_and_lost_statistics_are_rewritten(built):
  path, _, root, data_dir = built
  info = os.path.join(path, "dataset_info.json")
  before = os.stat(info).st_mtime_ns
  stats = open(os.path.join(path, statistics.STATS_FILE)).read()
  os.remove(os.path.join(path, statistics.STATS_FILE))  # As if killed after the records ...
  leftover = os.path.join(os.path.dirname(path), f"incomplete.ABC123_{builders.VERSION}")
  os.makedirs(leftover)  # ... and an earlier run killed while writing them.
  with pytest.raises(ValueError, match="lacks motion_stats.json"):
    paths.resolve(path)
  assert builders.build_folder(root, data_dir) == path
  assert os.stat(info).st_mtime_ns == before
  assert open(os.path.join(path, statistics.STATS_FILE)).read() == stats
  assert not [f for f in os.listdir(path) if ".tmp" in f]
  assert not os.path.exists(leftover)


def test_resolve_rejects_missing_paths_and_other_versions(built, tmp_path):
  path, _, _, _ = built
  assert paths.resolve(os.path.dirname(path)) == path
  with pytest.raises(ValueError, match="does not exist"):
    paths.resolve(str(tmp_path / "nowhere"))
  old = tmp_path / "talking_clips_folder" / "0.1.0"
  shutil.copytree(path, old)
  info = json.load(open(old / "dataset_info.json"))
  info["version"] = "0.1.0"
  json.dump(info, open(old / "dataset_info.json", "w"))
  with pytest.raises(ValueError, match="has version 0.1.0; expected 1.1.0"):
    paths.resolve(str(old))
  with pytest.raises(ValueError, match=r"no dataset of version 1.1.0 \(found 0.1.0\)"):
    paths.resolve(str(old.parent))


def test_folder_without_train_clips_and_unknown_config(tmp_path):
  (tmp_path / "clips" / "val").mkdir(parents=True)
  with pytest.raises(ValueError, match="has no train"):
    builders.build_folder(str(tmp_path / "clips"), str(tmp_path / "data"))
  with pytest.raises(ValueError, match="does not exist"):
    builders.build_folder(str(tmp_path / "nothing"), str(tmp_path / "data"))
  with pytest.raises(ValueError, match="'huge' is unknown"):
    builders.ensure_synthetic(str(tmp_path / "data"), "huge")


def test_command_line_builds_a_folder(built, python_runner, tmp_path):
  _, _, root, _ = built
  proc = python_runner(["launch/build_dataset.py", "--dataset=folder", f"--source={root}",
                        f"--data_dir={tmp_path}"])
  path = proc.stdout.strip().splitlines()[-1]
  assert path == os.path.join(str(tmp_path), "talking_clips_folder", builders.VERSION)
  assert paths.resolve(path) == path
  proc = python_runner(["launch/build_dataset.py", "--dataset=folder", f"--data_dir={tmp_path}"],
                       check=False)
  assert proc.returncode == 1 and "needs --source" in proc.stderr


def test_synthetic_tiny_builds_and_reads_through_the_pipelines(synthetic_tiny):
  data_dir, path = synthetic_tiny
  tmp_path = data_dir
  assert path == os.path.join(str(tmp_path), "synthetic_talking_humans", "tiny", builders.VERSION)
  config = builders.SYNTHETIC_CONFIGS[0]
  info = tfds.builder_from_directory(path).info
  assert info.splits["train"].num_examples == config.num_train
  assert info.splits["test"].num_examples == config.num_test
  assert builders.ensure_synthetic(str(tmp_path), "tiny") == path  # Finished: no-op.
  batch = next(pipelines.motion_pipeline(path, "train", 2, seed=0))
  assert batch["motion"].shape == (2, 240, 223)
  assert batch["mask"].sum(1).tolist() == [config.num_frames] * 2
  assert np.isfinite(batch["motion"]).all() and np.isfinite(batch["mel"]).all()
  batch = next(pipelines.video_pipeline(path, "test", 2, seed=0, resolution=32,
                                        min_ref_distance=24))
  assert batch["frames"].shape == (2, 8, 32, 32, 3) and batch["frames"].std() > 5


def test_split_larger_than_the_shuffle_buffer_fails_in_one_sentence(tmp_path, monkeypatch):
  # TFDS spills splits beyond its buffer through TensorFlow, which is not installed: the builder
  # raises the buffer to half the host's memory and names the problem when even that is short.
  monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 1000)
  monkeypatch.setattr(builders, "_shuffle_buffer_bytes", lambda: 1000)
  with pytest.raises(RuntimeError, match="in-memory shuffle buffer"):
    builders.ensure_synthetic(str(tmp_path), "tiny")
  assert shuffle.MAX_MEM_BUFFER_SIZE == 1000
  monkeypatch.undo()
  assert builders._shuffle_buffer_bytes() > 1 << 30


def test_super_resolution_configs_share_seeds_and_have_longer_test_clips(tmp_path, monkeypatch):
  configs = {c.name: c for c in builders.SYNTHETIC_CONFIGS}
  for name, resolution in (("sr256", 256), ("sr512", 512)):
    c = configs[name]
    assert (c.num_train, c.num_test, c.num_frames, c.test_frames, c.resolution) == (
        320, 16, 24, 120, resolution)
  assert configs["video"].test_frames == configs["video"].num_frames  # 0: the train length.
  # Which (seed, frames, resolution) each split renders, without rendering them.
  monkeypatch.setattr(builders, "_synthetic_example", lambda args: args)
  splits = builders.synthetic_builder(str(tmp_path), "sr_tiny")._split_generators(None)
  assert list(splits["train"]) == [(s, 16, 64) for s in range(4)]
  assert list(splits["test"]) == [(builders.TEST_SEED_OFFSET + s, 48, 64) for s in range(2)]
