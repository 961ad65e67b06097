"""grain pipelines: documented batches, references far from the window, shards, exact resume."""

import json
import os

from array_record.python import array_record_module
import numpy as np
import pytest
import tensorflow_datasets as tfds

from test_builders import FRAMES, RES, TRAIN_SEEDS, write_clip_folder
from vlogger_jax import motion
from vlogger_jax.data import builders
from vlogger_jax.data import pipelines
from vlogger_jax.data import records
from vlogger_jax.data import statistics


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("clips")
  clips = write_clip_folder(str(root))
  path = builders.build_folder(str(root), str(tmp_path_factory.mktemp("data")))
  # Clips by their (unique) shape vector, which every batch carries.
  return path, {tuple(c["shape"]): c for c in clips.values()}


def _clip(clips, shape):
  return clips[tuple(shape)]


def _row(table, row):
  """Index of the row of `table` [T, ...] equal to `row`."""
  hits = np.flatnonzero((table.reshape(len(table), -1) == row.reshape(-1)).all(1))
  assert hits.size == 1
  return int(hits[0])


def test_motion_batches_are_windows_relative_to_their_first_frame(dataset):
  path, clips = dataset
  stats = motion.Stats.load(os.path.join(path, statistics.STATS_FILE))
  it = pipelines.motion_pipeline(path, "train", 3, seed=1)
  for _ in range(3):
    b = next(it)
    assert {k: (v.shape, v.dtype) for k, v in b.items()} == {
        "mel": ((3, 240, 256), np.float32), "motion": ((3, 240, 223), np.float32),
        "mask": ((3, 240), np.float32), "ref_head_pose": ((3, 9), np.float32),
        "ref_body_keypoints": ((3, 75, 2), np.float32), "shape": ((3, 64), np.float32),
        "fov": ((3,), np.float32)}
    for i in range(3):
      clip = _clip(clips, b["shape"][i])
      n = int(b["mask"][i].sum())
      assert 72 <= n <= FRAMES and b["mask"][i, :n].all()
      s = _row(clip["head_pose"], b["ref_head_pose"][i])
      np.testing.assert_array_equal(b["ref_body_keypoints"][i], clip["body_keypoints"][s])
      assert b["fov"][i] == clip["fov"]
      want = motion.pack(clip["expression"][s:s + n], clip["head_pose"][s:s + n],
                         clip["body_keypoints"][s:s + n], clip["head_pose"][s],
                         clip["body_keypoints"][s])
      np.testing.assert_allclose(stats.denormalize(b["motion"][i, :n]), want, atol=1e-4)
      identity = (motion.identity_head_pose_residual() - stats.mean[motion.HEAD]) / stats.std[
          motion.HEAD]
      np.testing.assert_allclose(b["motion"][i, 0, motion.HEAD], identity, atol=1e-4)
      assert not b["motion"][i, n:].any() and not b["mel"][i, n:].any()
      mel = np.asarray(records.clip_mel(clip["audio"], FRAMES), np.float32)
      np.testing.assert_array_equal(b["mel"][i, :n], mel[s:s + n])


def test_video_batches_have_a_reference_at_least_72_frames_away(dataset):
  path, clips = dataset
  it = pipelines.video_pipeline(path, "train", 4, seed=2, resolution=RES)
  for _ in range(4):
    b = next(it)
    assert {k: (v.shape, v.dtype) for k, v in b.items()} == {
        "frames": ((4, 8, RES, RES, 3), np.uint8), "ref_frame": ((4, RES, RES, 3), np.uint8),
        "shape": ((4, 64), np.float32), "fov": ((4,), np.float32),
        "expression": ((4, 8, 64), np.float32), "head_pose": ((4, 8, 9), np.float32),
        "body_keypoints": ((4, 8, 75, 2), np.float32),
        "body_visibility": ((4, 8, 75), np.float32), "ref_expression": ((4, 64), np.float32),
        "ref_head_pose": ((4, 9), np.float32), "ref_body_keypoints": ((4, 75, 2), np.float32),
        "ref_body_visibility": ((4, 75), np.float32)}
    for i in range(4):
      clip = _clip(clips, b["shape"][i])
      s = _row(clip["expression"], b["expression"][i, 0])
      r = _row(clip["expression"], b["ref_expression"][i])
      assert min(abs(r - t) for t in range(s, s + 8)) >= 72
      np.testing.assert_array_equal(b["frames"][i], clip["frames"][s:s + 8])
      np.testing.assert_array_equal(b["ref_frame"][i], clip["frames"][r])
      for key in ("head_pose", "body_keypoints", "body_visibility"):
        np.testing.assert_array_equal(b[key][i], clip[key][s:s + 8])
        np.testing.assert_array_equal(b["ref_" + key][i], clip[key][r])


def test_window_and_reference_sampling_covers_both_sides():
  rng = np.random.default_rng(0)
  picks = [pipelines.sample_window_and_reference(100, 8, 72, rng) for _ in range(300)]
  assert all(min(abs(r - t) for t in range(s, s + 8)) >= 72 for s, r in picks)
  assert {r < s for s, r in picks} == {True, False}
  assert pipelines.sample_window_and_reference(79, 8, 72, rng) is None
  assert pipelines.sample_window_and_reference(80, 8, 72, rng) in ((0, 79), (72, 0))


def test_frames_are_box_filtered_down_and_images_have_one_frame(dataset):
  path, clips = dataset
  b = next(pipelines.image_pipeline(path, "test", 2, seed=0, resolution=RES // 2))
  assert b["frames"].shape == (2, 1, RES // 2, RES // 2, 3) and b["expression"].shape == (2, 1, 64)
  clip = _clip(clips, b["shape"][0])
  s = _row(clip["expression"], b["expression"][0, 0])
  boxed = clip["frames"][s].reshape(RES // 2, 2, RES // 2, 2, 3).astype(np.float32).mean((1, 3))
  assert np.abs(b["frames"][0, 0].astype(np.float32) - boxed).max() <= 1


def test_several_images_per_clip_read_are_valid_pairs_and_resume_exactly(dataset):
  path, clips = dataset
  make = lambda: pipelines.image_pipeline(path, "train", 8, seed=1, resolution=RES,  # noqa: E731
                                          samples_per_clip=4)
  it = make()
  b = next(it)
  assert b["frames"].shape == (8, 1, RES, RES, 3) and b["ref_frame"].shape == (8, RES, RES, 3)
  # Two clips per batch, four draws from each, side by side; the draws differ.
  assert [len({tuple(s) for s in b["shape"][i:i + 4]}) for i in (0, 4)] == [1, 1]
  assert not np.array_equal(b["shape"][0], b["shape"][4])
  assert len({_row(_clip(clips, b["shape"][0])["expression"], b["expression"][i, 0])
              for i in range(4)}) > 1
  for i in range(8):
    clip = _clip(clips, b["shape"][i])
    s = _row(clip["expression"], b["expression"][i, 0])
    r = _row(clip["expression"], b["ref_expression"][i])
    assert abs(r - s) >= 72
    np.testing.assert_array_equal(b["frames"][i, 0], clip["frames"][s])
    np.testing.assert_array_equal(b["ref_frame"][i], clip["frames"][r])
  state = json.loads(json.dumps(it.get_state()))
  want = next(it)
  restored = make()
  restored.set_state(state)
  got = next(restored)
  for key in want:
    np.testing.assert_array_equal(want[key], got[key])
  with pytest.raises(ValueError, match="samples_per_clip is 3 for a batch of 8"):
    pipelines.image_pipeline(path, "train", 8, seed=1, resolution=RES, samples_per_clip=3)


@pytest.fixture(scope="module")
def decoded(dataset):
  """The train split's records decoded into memory, plus a clip of exactly 8 frames (a window
  has one start) and one of 7 (too short for 8-frame windows): an in-memory data source."""
  path, _ = dataset
  source = tfds.builder_from_directory(path).as_data_source("train")
  clips = [source[i] for i in range(len(source))]
  for length, offset in ((8, 1.0), (7, 2.0)):
    clip = {k: (v[:length] if isinstance(v, np.ndarray) and v.ndim and k != "shape" else v)
            for k, v in clips[0].items()}
    clip["num_frames"], clip["shape"] = np.int32(length), clips[0]["shape"] + offset
    clips.append(clip)
  return clips


def test_frame_windows_are_consecutive_frames_with_their_parameters(dataset, decoded, caplog):
  _, clips = dataset
  exact, short = decoded[-2], decoded[-1]
  it = pipelines.frames_pipeline(decoded, "train", 4, seed=1, resolution=RES, num_frames=8)
  seen = set()
  for _ in range(4):  # 16 windows: two epochs of the 7 usable clips.
    b = next(it)
    assert {k: (v.shape, v.dtype) for k, v in b.items()} == {
        "frames": ((4, 8, RES, RES, 3), np.uint8), "shape": ((4, 64), np.float32),
        "fov": ((4,), np.float32), "expression": ((4, 8, 64), np.float32),
        "head_pose": ((4, 8, 9), np.float32), "body_keypoints": ((4, 8, 75, 2), np.float32),
        "body_visibility": ((4, 8, 75), np.float32)}
    for i in range(4):
      seen.add(tuple(b["shape"][i]))
      if np.array_equal(b["shape"][i], exact["shape"]):
        clip, s = _clip(clips, decoded[0]["shape"]), 0  # Its frames are clip 0's first eight.
      else:
        clip = _clip(clips, b["shape"][i])
        s = _row(clip["expression"], b["expression"][i, 0])
      assert s + 8 <= FRAMES and b["fov"][i] == clip["fov"]
      np.testing.assert_array_equal(b["frames"][i], clip["frames"][s:s + 8])
      for key in ("expression", "head_pose", "body_keypoints", "body_visibility"):
        np.testing.assert_array_equal(b[key][i], clip[key][s:s + 8])
  assert tuple(exact["shape"]) in seen and tuple(short["shape"]) not in seen
  assert len(seen) == len(TRAIN_SEEDS) + 1
  assert "Skipped a clip of 7 frames: too short for 8-frame windows" in caplog.text


def test_restored_frames_iterator_continues_with_the_same_batches(decoded):
  make = lambda seed: pipelines.frames_pipeline(decoded, "train", 3, seed=seed,  # noqa: E731
                                                resolution=8, num_frames=4)
  it = make(0)
  for _ in range(2):
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  want = [next(it) for _ in range(3)]
  restored = make(0)
  restored.set_state(state)
  for a, b in zip(want, [next(restored) for _ in range(3)]):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(next(make(1))["expression"], next(make(0))["expression"])


def _ids(batches, key="shape"):
  return [tuple(row) for b in batches for row in b[key]]


def test_processes_read_disjoint_shards_and_epochs_reshuffle(dataset):
  path, _ = dataset
  seen = []
  for p in range(2):
    it = pipelines.motion_pipeline(path, "train", 3, seed=5, process_index=p, process_count=2)
    first, second = _ids([next(it)]), _ids([next(it)])  # 3 clips per shard: one batch = 1 epoch.
    assert len(set(first)) == 3 and set(first) == set(second)
    seen.append(set(first))
  assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == len(TRAIN_SEEDS)
  it = pipelines.motion_pipeline(path, "train", 6, seed=5)
  epochs = [_ids([next(it)]) for _ in range(4)]
  assert len({tuple(e) for e in epochs}) > 1  # A new order (and new windows) every epoch.


@pytest.mark.parametrize("workers", [0, 2])
def test_restored_iterator_continues_with_the_same_batches(dataset, workers):
  path, _ = dataset
  make = lambda: pipelines.video_pipeline(path, "train", 2, seed=3, resolution=8,  # noqa: E731
                                          num_workers=workers)
  it = make()
  for _ in range(3):
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # What checkpoints store.
  want = [next(it) for _ in range(4)]
  restored = make()
  restored.set_state(state)
  got = [next(restored) for _ in range(4)]
  for a, b in zip(want, got):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  if workers == 0:  # Worker processes take seconds to start; one pair of iterators is enough.
    np.testing.assert_array_equal(next(make())["frames"], next(make())["frames"])
    other = pipelines.video_pipeline(path, "train", 2, seed=4, resolution=8)
    assert not np.array_equal(next(other)["ref_frame"], next(make())["ref_frame"])


def test_corrupt_records_are_skipped_and_counted(dataset, tmp_path, caplog):
  path, _ = dataset
  broken = str(tmp_path / "broken")
  os.makedirs(broken)
  for name in os.listdir(path):
    src = os.path.join(path, name)
    if "-train.array_record" not in name:
      os.symlink(src, os.path.join(broken, name))
      continue
    reader = array_record_module.ArrayRecordReader(src)
    serialized = reader.read_all()
    reader.close()
    serialized[2] = b"\x08\x96\x01 this is not a serialized example"
    writer = array_record_module.ArrayRecordWriter(os.path.join(broken, name), "group_size:1")
    for r in serialized:
      writer.write(r)
    writer.close()
  it = pipelines.motion_pipeline(broken, "train", 5, seed=0)
  ids = _ids([next(it) for _ in range(3)])
  assert len(set(ids)) == len(TRAIN_SEEDS) - 1
  assert "Skipped unreadable record 2 of split train" in caplog.text
  assert "skipped so far" in caplog.text


def test_bad_paths_and_arguments_say_so(dataset, tmp_path):
  path, _ = dataset
  with pytest.raises(ValueError, match="does not exist"):
    pipelines.motion_pipeline(str(tmp_path / "missing"), "train", 2, seed=0)
  with pytest.raises(ValueError, match="no split 'validation'"):
    pipelines.motion_pipeline(path, "validation", 2, seed=0)
  with pytest.raises(ValueError, match="at least 1080"):
    pipelines.video_pipeline(path, "train", 2, seed=0, resolution=8, min_ref_distance=1072)
  with pytest.raises(ValueError, match="at least 101 for 101-frame windows"):
    pipelines.frames_pipeline(path, "train", 2, seed=0, resolution=8, num_frames=101)
  with pytest.raises(ValueError, match="num_frames is 0"):
    pipelines.frames_pipeline(path, "train", 2, seed=0, resolution=8, num_frames=0)
  with pytest.raises(ValueError, match="at least one clip per process"):
    pipelines.motion_pipeline(path, "test", 1, seed=0, process_index=0, process_count=3)
  with pytest.raises(ValueError, match="process_index 2 is not in"):
    pipelines.motion_pipeline(path, "train", 1, seed=0, process_index=2, process_count=2)
