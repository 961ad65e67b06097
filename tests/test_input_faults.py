"""The input and message faults of issue 20: each is one sentence naming the input, with the
right exit code and nothing written where a start fails.

Command lines run as subprocesses (their output and exit code are the point), all of them at
once in one module fixture, two at a time; each fails before it compiles anything. Messages of
functions are checked in this process. One folder dataset of four 8-frame 8-px clips serves
every dataset test.
"""

import concurrent.futures
import contextlib
import glob
import io
import json
import logging
import os
import pickle
import shutil
import wave

import numpy as np
import pytest

from conftest import run_python
from vlogger_jax import audio as audio_lib
from vlogger_jax import contracts
from vlogger_jax import fileio
from vlogger_jax import head
from vlogger_jax import video_io
from vlogger_jax.data import builders, motion_bank, paths, pipelines, records, schema
from vlogger_jax.inference import pipeline as pipeline_lib
from vlogger_jax.inference import reference
from vlogger_jax.inference.errors import InputError
from vlogger_jax.models import weights
from vlogger_jax.train import config_lib

TINY = "configs/toy.py:tiny"


def _clip(seed: int, t: int = 8, r: int = 8) -> dict:
  """A random schema-valid clip of t frames at r px."""
  rng = np.random.default_rng(seed)
  rot = np.tile(np.array([1, 0, 0, 0, 1, 0, 0, 0, 0], np.float32), (t, 1))
  return {"id": f"clip{seed}", "frames": rng.integers(0, 256, (t, r, r, 3), np.uint8),
          "audio": rng.normal(0, 3000, schema.num_samples(t)).astype(np.int16),
          "shape": rng.normal(size=contracts.NUM_SHAPE).astype(np.float32),
          "fov": np.float32(25),
          "expression": rng.normal(size=(t, contracts.NUM_EXPRESSION)).astype(np.float32),
          "head_pose": rot + rng.normal(0, 0.01, rot.shape).astype(np.float32),
          "body_keypoints": rng.uniform(0, 1, (t, contracts.NUM_KEYPOINTS, 2)).astype(np.float32),
          "body_visibility": np.ones((t, contracts.NUM_KEYPOINTS), np.float32)}


def _write_clips(root) -> str:
  for split, seeds in (("train", range(3)), ("test", range(100, 101))):
    os.makedirs(os.path.join(root, split), exist_ok=True)
    for s in seeds:
      np.savez(os.path.join(root, split, f"clip{s}.npz"), **_clip(s))
  return str(root)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  """(version dir, source, data_dir, stdout, stderr) of a folder dataset built here, with what
  the build printed."""
  source = _write_clips(tmp_path_factory.mktemp("clips"))
  data_dir = str(tmp_path_factory.mktemp("data"))
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    path = builders.build_folder(source, data_dir)
  return path, source, data_dir, out.getvalue(), err.getvalue()


def _corrupt_copy(dataset, folder) -> str:
  """A copy of the dataset whose train records are overwritten with noise; its version dir."""
  path, _, data_dir, _, _ = dataset
  shutil.copytree(data_dir, folder)
  version = os.path.join(folder, os.path.relpath(path, data_dir))
  (shard,) = glob.glob(os.path.join(version, "*-train.array_record-*"))
  size = os.path.getsize(shard)
  with open(shard, "r+b") as f:
    f.write(np.random.default_rng(0).bytes(size))
  return version


def _wav(path, seconds: float, rate: int = 16000) -> str:
  t = np.arange(int(seconds * rate)) / rate
  with wave.open(str(path), "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(rate)
    w.writeframes((np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16).tobytes())
  return str(path)


def _listing(folder) -> list[str]:
  return sorted(os.path.relpath(os.path.join(d, f), folder)
                for d, dirs, files in os.walk(folder) for f in files + dirs)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, dataset):
  """name -> (CompletedProcess, folder that must stay as it was, its listing before)."""
  tmp = tmp_path_factory.mktemp("runs")
  text_npz = tmp / "params.npz"
  text_npz.write_text("expression, head_pose\n0.1, 0.2\n")
  workdir_file = tmp / "wd" / "notes.txt"
  workdir_file.parent.mkdir()
  workdir_file.write_text("a file, not a folder")
  (tmp / "empty_clips").mkdir()
  corrupt = _corrupt_copy(dataset, str(tmp / "corrupt_data"))
  for name in ("gen_npz", "gen_audio", "train_corrupt"):
    (tmp / name).mkdir()
  cases = {
      "override": ["launch/train.py", f"--config={TINY}", f"--workdir={tmp / 'w_override'}",
                   "--config.optimizer.lrr=3e-4"],
      "workdir_file": ["launch/train.py", f"--config={TINY}", f"--workdir={workdir_file}"],
      "train_corrupt": ["launch/train.py", "--config=configs/motion.py:tiny",
                        f"--workdir={tmp / 'train_corrupt' / 'run'}",
                        "--config.data.dataset=folder", f"--config.data.path={corrupt}"],
      "empty_source": ["launch/build_dataset.py", "--dataset=folder",
                       f"--source={tmp / 'empty_clips'}", f"--data_dir={tmp / 'd_empty'}"],
      "help": ["launch/build_dataset.py", "--help"],
      "gen_npz": ["launch/generate.py", "--image=synthetic:0", f"--driving_params={text_npz}",
                  f"--out={tmp / 'gen_npz' / 'out.mp4'}"],
      "gen_audio": ["launch/generate.py", "--image=synthetic:0",
                    f"--audio={_wav(tmp / 'five.wav', 5.0)}", "--max_seconds=2",
                    f"--out={tmp / 'gen_audio' / 'out.mp4'}"],
  }
  watched = {"override": tmp, "workdir_file": workdir_file.parent,
             "train_corrupt": tmp / "train_corrupt", "empty_source": tmp,
             "gen_npz": tmp / "gen_npz", "gen_audio": tmp / "gen_audio"}
  before = {k: _listing(v) for k, v in watched.items()}
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    futures = {k: pool.submit(run_python, v, check=False, timeout=120) for k, v in cases.items()}
    procs = {k: f.result() for k, f in futures.items()}
  return {"_tmp": tmp, "_corrupt": corrupt,
          **{k: (procs[k], watched.get(k), before.get(k)) for k in cases}}


def _one_sentence(run, *words, code=1):
  """The run failed with `code`, printed one line 'error: ...' holding `words`, no traceback,
  and left its watched folder as it was."""
  proc, folder, before = run
  assert proc.returncode == code, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
  assert lines[0].endswith("."), lines[0]
  for w in words:
    assert w in lines[0], (w, lines[0])
  if folder is not None:
    assert _listing(folder) == before
  return lines[0]


# --- 1. unknown or misspelt config overrides ---

def test_a_misspelt_override_names_the_key_and_the_closest_ones(runs):
  _one_sentence(runs["override"], "--config.optimizer.lrr", "optimizer.lr")
  assert not os.path.exists(runs["_tmp"] / "w_override")


@pytest.mark.parametrize("override, words", [
    ("--config.nosuchkey=1", ["no key 'nosuchkey'", "top level", "batch_size"]),
    ("--config.lr=1", ["no key 'lr'", "optimizer.lr"]),
    ("--config.optimzer.lr=1", ["optimizer.lr"]),
    ("--config.seed.x=1", ["seed of configs/toy.py:tiny is a value"]),
    ("--config.data.foo=1", ["the keys of data are"]),
])
def test_preflight_checks_every_override_key(override, words):
  problem = config_lib.preflight(["prog", f"--config={TINY}", override])
  assert problem and problem.endswith(".") and "\n" not in problem
  for w in words:
    assert w in problem, (w, problem)
  assert config_lib.preflight(["prog", f"--config={TINY}", "--config.optimizer.lr=1",
                               "--noconfig.ema_warmup"]) is None


def test_preflight_checks_overrides_of_a_default_config_flag():
  problem = config_lib.preflight(["prog", "--motion_config.modle.width=3"],
                                 {"motion_config": "configs/motion.py"})
  assert "--motion_config.modle.width" in problem and "model.width" in problem


# --- 2. a workdir that is a file or cannot be written ---

def test_a_workdir_that_is_a_file_is_one_sentence_and_nothing_is_written(runs):
  _one_sentence(runs["workdir_file"], "--workdir", "notes.txt", "is a file, not a folder")


def test_unusable_folders_are_named_without_leaving_anything(tmp_path):
  afile = tmp_path / "afile"
  afile.write_text("x")
  assert "is a file" in fileio.unusable_folder_reason(afile)
  assert "is a file, so no folder" in fileio.unusable_folder_reason(afile / "run")
  assert fileio.unusable_folder_reason(tmp_path / "new" / "run") is None
  locked = tmp_path / "locked"
  locked.mkdir()
  locked.chmod(0o555)
  try:
    # Root writes into a 0555 folder; /sys refuses root as well.
    target = locked if fileio.unusable_folder_reason(locked) else "/sys/vlogger_run"
    assert "is not writable" in fileio.unusable_folder_reason(os.path.join(target, "run"))
  finally:
    locked.chmod(0o755)
  assert sorted(os.listdir(tmp_path)) == ["afile", "locked"] and not os.listdir(locked)
  with pytest.raises(ValueError, match=r"^--workdir '.*afile': it is a file, not a folder; "
                                       "expected a folder"):
    fileio.check_output_folder(afile, "--workdir")


# --- 3. a missing, empty or unusable clip folder ---

def test_an_empty_source_is_one_sentence_and_writes_nothing(runs):
  _one_sentence(runs["empty_source"], "empty_clips", "has no train/*.npz files", "it is empty")
  assert not os.path.exists(runs["_tmp"] / "d_empty")


def test_clip_folders_without_usable_clips_say_why(tmp_path):
  data = tmp_path / "data"
  (tmp_path / "loose").mkdir()
  np.savez(tmp_path / "loose" / "a.npz", x=np.zeros(1))
  (tmp_path / "val" / "val").mkdir(parents=True)
  (tmp_path / "val" / "val" / "b.npz").write_bytes(b"x")
  (tmp_path / "afile").write_text("x")
  for source, words in ((tmp_path / "missing", "does not exist"),
                        (tmp_path / "afile", "is a file, not a folder"),
                        (tmp_path / "loose", "holds 1 .npz files itself, not under train/"),
                        (tmp_path / "val", "its subfolders with .npz files are val")):
    with pytest.raises(ValueError, match="expected one .npz clip per file under train/") as e:
      builders.build_folder(str(source), str(data))
    assert words in str(e.value) and str(source) in str(e.value)
  assert not data.exists()
  (tmp_path / "bad" / "train").mkdir(parents=True)
  (tmp_path / "bad" / "train" / "notes.npz").write_text("not an archive")
  with pytest.raises(ValueError, match=r"none of the 1 clip files .* is a valid clip \(the "
                                       r"first: clip file .*notes.npz is not a valid .npz "
                                       r"archive \(it holds text"):
    builders.build_folder(str(tmp_path / "bad"), str(data))


# --- 4. unreadable records ---

def test_a_split_of_unreadable_records_names_it_and_the_command_that_rebuilds_it(runs, dataset):
  _, source, _, _, _ = dataset
  corrupt = runs["_corrupt"]
  data_dir = os.path.dirname(os.path.dirname(corrupt))
  command = (f"python launch/build_dataset.py --dataset=folder --source={source} "
             f"--data_dir={data_dir}")
  _one_sentence(runs["train_corrupt"], "split train", corrupt, command)
  assert not builders.is_finished(corrupt)
  with pytest.raises(ValueError, match="split train of dataset") as e:
    paths.resolve(corrupt)
  assert f"`{command}`" in str(e.value)
  # The command builds it again; the unreadable version is kept aside, not deleted.
  assert builders.build_folder(source, data_dir) == corrupt
  assert paths.resolve(corrupt) == corrupt and builders.is_finished(corrupt)
  (aside,) = os.listdir(os.path.join(os.path.dirname(corrupt), builders.DAMAGED))
  assert aside.startswith(os.path.basename(corrupt) + "-")


def test_missing_shards_and_the_synthetic_command(dataset, tmp_path):
  path, _, _, _, _ = dataset
  copy = tmp_path / "copy"
  shutil.copytree(path, copy)
  (shard,) = glob.glob(str(copy / "*-test.array_record-*"))
  os.remove(shard)
  split, file, reason = builders.records_problem(str(copy))
  assert (split, file, reason) == ("test", shard, "the file is missing")
  synthetic = tmp_path / "data dir" / "synthetic_talking_humans" / "tiny" / "1.0.0"
  synthetic.mkdir(parents=True)
  (synthetic / "dataset_info.json").write_text(json.dumps(
      {"name": "synthetic_talking_humans", "configName": "tiny", "version": "1.0.0"}))
  assert builders.rebuild_command(str(synthetic)) == (
      f"python launch/build_dataset.py --dataset=synthetic --config=tiny "
      f"--data_dir='{tmp_path / 'data dir'}'")


# --- 5. no "Downloading and preparing" ---

def test_the_build_prints_its_own_line_not_the_tfds_banner(dataset):
  path, source, data_dir, out, err = dataset
  assert "Downloading" not in out + err and "downloaded and prepared" not in out + err
  assert (f"building talking_clips_folder (4 clip files: 1 test, 3 train, from {source}) in "
          f"{path}") in err
  assert "downloads" not in os.listdir(data_dir)


# --- 6. a file that is not a .npz archive ---

def test_files_that_are_not_npz_archives_say_so_without_pickles(runs, tmp_path):
  line = _one_sentence(runs["gen_npz"], "--driving_params", "params.npz",
                       "is not a valid .npz archive (it holds text", "expected a .npz")
  assert "pickle" not in line
  text = tmp_path / "text.npz"
  text.write_text("hello\n")
  npy = tmp_path / "array.npz"
  with open(npy, "wb") as f:
    np.save(f, np.zeros(3))
  pickled = tmp_path / "pickled.npz"
  pickled.write_bytes(pickle.dumps({"a": 1}))
  objects = tmp_path / "objects.npz"
  np.savez(objects, a=np.array([{"a": 1}], dtype=object))
  loaders = {"reference": lambda p: reference.read_npz(p, "--params"),
             "weights": weights.read_config, "head asset": head.load_asset,
             "clip": records.load_npz_clip, "frames": video_io.load_frames}
  for what, load in loaders.items():
    for path, words in ((text, "it holds text"), (npy, "it is a single .npy array"),
                        (pickled, "it looks like a Python pickle, which is never loaded"),
                        (objects, "holds object arrays")):
      with pytest.raises(ValueError) as e:
        load(str(path))
      message = str(e.value)
      assert os.path.basename(path) in message and words in message, (what, message)
      assert "allow_pickle" not in message and "\n" not in message, (what, message)
      if path is not objects:
        assert "is not a valid .npz archive" in message, (what, message)


# --- 7. one warning per corrupt record ---

class _Flaky:
  """A record source whose record 1 never reads."""

  def __len__(self):
    return 4

  def __getitem__(self, i):
    if i == 1:
      raise RuntimeError("Corrupted record")
    return {"i": i}


def _skips(caplog) -> int:
  return sum("Skipped unreadable record" in r.getMessage() for r in caplog.records)


def test_a_corrupt_record_warns_once_however_often_it_is_read(caplog):
  records_ = pipelines.Records(None, "train", _Flaky())
  with caplog.at_level(logging.WARNING):
    for _ in range(30):
      for i in range(4):
        records_[i]
  assert _skips(caplog) == 1 and records_.unreadable == {1} and records_.skipped == 30

  class _Broken(_Flaky):
    def __getitem__(self, i):
      raise RuntimeError("Corrupted record")

  broken = pipelines.Records(None, "test", _Broken())
  with pytest.raises(ValueError, match="every record of split test .* failed to decode"):
    for _ in range(10):
      broken[0]


def test_a_corrupt_record_in_a_dataset_warns_once_in_a_pipeline(dataset, tmp_path, caplog):
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  path, _, _, _, _ = dataset
  broken = tmp_path / "broken"
  shutil.copytree(path, broken)
  (shard,) = glob.glob(str(broken / "*-train.array_record-*"))
  reader = array_record_module.ArrayRecordReader(shard)
  serialized = reader.read_all()
  reader.close()
  serialized[1] = b"\x08\x96\x01 not a serialized example"
  writer = array_record_module.ArrayRecordWriter(shard, "group_size:1")
  for r in serialized:
    writer.write(r)
  writer.close()
  assert paths.resolve(str(broken)) == str(broken)  # the first record of each shard reads
  with caplog.at_level(logging.WARNING):
    it = pipelines.motion_pipeline(str(broken), "train", 2, seed=0)
    for _ in range(12):  # 24 windows of 2 readable clips: the bad one is met about 12 times
      next(it)
  assert _skips(caplog) == 1
  # The in-memory motion bank of process 1 of 2 reads record 1 alone.
  with pytest.raises(ValueError, match=r"none of the 1 records of split train .* can be decoded; "
                                       r"expected readable records: build it again with "
                                       r"`python launch/build_dataset.py --dataset=folder"):
    motion_bank.MotionBank(str(broken), "train", process_index=1, process_count=2)


# --- 8. --help exits 0 ---

def test_every_absl_script_runs_through_cli_run():
  scripts = [p for p in glob.glob(os.path.join(os.path.dirname(__file__), "..", "launch", "*.py"))
             if "from absl import" in open(p).read()]
  assert len(scripts) >= 15
  for path in scripts:
    source = open(path).read()
    assert "cli.run(main)" in source and "app.run(" not in source, path


def test_help_exits_zero(runs):
  proc = runs["help"][0]
  assert proc.returncode == 0 and "--data_dir" in proc.stdout and not proc.stderr, proc.stderr


_HARNESS = ("import sys; from absl import flags; from vlogger_jax import cli; "
            "flags.DEFINE_integer('n', None, 'A number.'); flags.mark_flag_as_required('n')\n"
            "def main(argv):\n"
            "  try:\n"
            "    raise ValueError('--n is odd; expected an even number.')\n"
            "  except ValueError as e:\n"
            "    return cli.report(e)\n"
            "cli.run(main)")


@pytest.mark.parametrize("args, code, out, err", [
    (["--help"], 0, "A number.", None),
    (["--helpshort"], 0, "A number.", None),
    (["-?"], 0, "A number.", None),
    (["--helpfull"], 0, "A number.", None),
    ([], 1, None, "error: --n is required; expected a value for it (see --help)."),
    (["--n=x"], 1, None, "error: --n=x: invalid literal for int() with base 10: 'x'; expected a "
                         "value that --n accepts (see --help)."),
    (["--n=1", "--m=2"], 1, None, "error: Unknown command line flag 'm'; expected the flags "
                                  "that --help lists."),
    (["--n=1"], 1, None, "error: --n is odd; expected an even number."),
])
def test_cli_conventions(args, code, out, err):
  proc = run_python(["-c", _HARNESS, *args], check=False, env={"VLOGGER_TRACEBACK": ""})
  assert proc.returncode == code, proc.stderr
  if out:
    assert out in proc.stdout and not proc.stderr
  if err:
    assert proc.stderr.strip() == err


def test_the_traceback_comes_only_when_asked_for():
  proc = run_python(["-c", _HARNESS, "--n=1"], check=False, env={"VLOGGER_TRACEBACK": "1"})
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 1 and lines[0].startswith("Traceback") and "ValueError" in proc.stderr
  assert lines[-1] == "error: --n is odd; expected an even number."


# --- 9. long audio ---

def test_long_audio_is_refused_naming_the_limit_and_its_flag(runs):
  _one_sentence(runs["gen_audio"], "five.wav", "lasts at least 3.0 s", "limit of 2 s",
                "--max_seconds")


def test_the_decoder_stops_at_the_limit(tmp_path, monkeypatch):
  path = _wav(tmp_path / "five.wav", 5.0, rate=44100)
  decoded = []
  parse = audio_lib._parse_float_wav  # pylint: disable=protected-access

  def spy(data):
    channels, rate = parse(data)
    decoded.append(channels.shape[0] / rate)
    return channels, rate

  monkeypatch.setattr(audio_lib, "_parse_float_wav", spy)
  with pytest.raises(InputError, match=r"five.wav' lasts at least 3.0 s, longer than the limit "
                                       r"of 2 s; .*\(--max_seconds\)\.$"):
    pipeline_lib.Pipeline.speech(path, max_seconds=2)
  assert decoded[-1] <= 2 + audio_lib.LIMIT_SLACK_S + 0.01  # ffmpeg read no further
  with pytest.raises(InputError, match=r"lasts 5.0 s, longer than the limit of 4.5 s"):
    pipeline_lib.Pipeline.speech(path, max_seconds=4.5)  # within the slack: the exact length
  assert pipeline_lib.Pipeline.speech(path, max_seconds=10).shape == (5 * 16000,)
  with pytest.raises(audio_lib.AudioTooLong, match="Audio array .* lasts 3.0 s"):
    audio_lib.load_audio(np.full(48000, 0.1, np.float32), sample_rate=16000, max_seconds=2)
