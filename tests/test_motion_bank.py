"""In-memory motion batches: the same windows as the grain pipeline's, exact resumption."""

import numpy as np
import pytest

from vlogger_jax.data import motion_bank
from vlogger_jax.data import pipelines
from vlogger_jax.data import windows

MIN, MAX = 8, 32


class _ScriptedRng:
  """Stands in for np.random.Generator in MotionWindow: integers() returns queued values."""

  def __init__(self, values):
    self.values = list(values)

  def integers(self, low, high):
    v = self.values.pop(0)
    assert low <= v < high
    return v


@pytest.fixture(scope="module")
def bank_and_stats(synthetic_tiny):
  _, path = synthetic_tiny
  records = pipelines.open_records(path, "train")
  return path, motion_bank.MotionBank(records, "train"), pipelines.load_stats(None, records)


def _iterator(bank, stats, **kw):
  kw = {**dict(batch_size=3, seed=7, min_frames=MIN, max_frames=MAX), **kw}
  return motion_bank.MotionBatchIterator(bank, stats, **kw)


def test_bank_holds_the_records(bank_and_stats):
  path, bank, _ = bank_and_stats
  records = pipelines.open_records(path, "train")
  assert len(bank) == len(records)
  for i in range(len(records)):
    r = records[i]
    t = int(r["num_frames"])
    assert bank.num_frames[i] == t
    frames = bank.frames(i)
    for k in ("expression", "head_pose", "body_keypoints", "mel"):
      np.testing.assert_array_equal(frames[k], np.asarray(r[k], np.float32), err_msg=k)
    np.testing.assert_array_equal(bank.shape[i], r["shape"])


@pytest.mark.parametrize("absolute", [False, True])
def test_windows_equal_the_grain_transform(bank_and_stats, absolute):
  path, bank, stats = bank_and_stats
  records = pipelines.open_records(path, "train")
  it = _iterator(bank, stats, absolute=absolute, prefetch=0)
  transform = pipelines.MotionWindow(stats.mean, stats.std, MIN, MAX, absolute)
  for step in range(4):
    clips = it.clips_of(step)
    start, length = it.windows_of(step, clips)
    batch = it.make_batch(clips, start, length)
    for i, c in enumerate(clips):
      want = transform(records[int(c)], _ScriptedRng([length[i], start[i]]))
      for k, v in want.items():
        np.testing.assert_allclose(batch[k][i], v, rtol=1e-6, atol=1e-6, err_msg=k)


def test_draw_and_draw_batch_sample_one_distribution():
  t = np.array([5, 40, 300])  # shorter than MIN, between, longer than MAX
  n = 3000
  rng = np.random.default_rng(0)
  batched = np.stack([np.stack(windows.draw_batch(t, MIN, MAX, rng), -1) for _ in range(n)])
  rng = np.random.default_rng(1)
  single = np.array([[windows.draw(int(c), MIN, MAX, rng) for c in t] for _ in range(n)])
  for draws in (batched, single):  # [n, 3 clips, (start, length)]
    start, length = draws[..., 0], draws[..., 1]
    assert np.all(length[:, 0] == 5) and np.all(start[:, 0] == 0)  # the whole short clip
    assert length[:, 1:].min() == MIN and length[:, 1:].max() == MAX
    assert np.all(start >= 0) and np.all(start + length <= t)
    assert start[:, 2].max() > 300 - MAX  # short windows start later than long ones can
    # Uniform length, then a uniform start: E[length] = 20, E[start] = (t - 20) / 2.
    np.testing.assert_allclose(length[:, 1:].mean(0), [20, 20], atol=0.5)
    np.testing.assert_allclose(start[:, 1].mean(), 10, atol=0.5)
    np.testing.assert_allclose(start[:, 2].mean(), 140, atol=5)


def test_window_lengths_and_padding(bank_and_stats):
  _, bank, stats = bank_and_stats
  it = _iterator(bank, stats, prefetch=0)
  lengths = []
  for _ in range(20):
    b = next(it)
    n = b["mask"].sum(axis=1)
    lengths.extend(n)
    assert b["motion"].shape == (3, MAX, 223) and b["mel"].shape == (3, MAX, 256)
    assert np.all((n >= MIN) & (n <= MAX))
    pad = b["mask"] == 0
    assert not np.any(b["motion"][pad]) and not np.any(b["mel"][pad])
    assert np.all(np.diff(b["mask"], axis=1) <= 0)  # valid frames first
  assert len(set(lengths)) > 5  # lengths vary


def test_every_clip_once_per_epoch(bank_and_stats):
  _, bank, stats = bank_and_stats
  it = _iterator(bank, stats, prefetch=0)
  c = len(bank)
  seen = np.concatenate([it.clips_of(s) for s in range(c * 2)])  # 6 epochs of c clips
  for e in range(6):
    assert sorted(seen[e * c:(e + 1) * c]) == list(range(c))
  assert any(not np.array_equal(seen[:c], seen[e * c:(e + 1) * c]) for e in range(1, 6))


def test_resume_and_prefetch_are_exact(bank_and_stats):
  _, bank, stats = bank_and_stats
  a = _iterator(bank, stats, prefetch=3)
  ref = [next(a) for _ in range(6)]
  b = _iterator(bank, stats, prefetch=0)
  for want in ref[:2]:
    got = next(b)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])
  state = b.get_state()
  c = _iterator(bank, stats, prefetch=2)
  next(c)  # some batches already in flight must be dropped by set_state
  c.set_state(state)
  for want in ref[2:]:
    got = next(c)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])
  a.close()
  c.close()
  with pytest.raises(ValueError, match="batch_size"):
    _iterator(bank, stats, prefetch=0).set_state({**state, "batch_size": 5})
  other_seed = _iterator(bank, stats, seed=8, prefetch=0)
  assert not np.array_equal(next(other_seed)["motion"], ref[0]["motion"])


def test_bad_arguments(bank_and_stats):
  _, bank, stats = bank_and_stats
  with pytest.raises(ValueError, match="window lengths"):
    motion_bank.MotionBatchIterator(bank, stats, 2, 0, min_frames=10, max_frames=5)
  with pytest.raises(ValueError, match="process_index"):
    motion_bank.MotionBank(bank_and_stats[0], "train", process_index=2, process_count=2)
