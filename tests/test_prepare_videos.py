"""Video preparation on videos the test makes: a synthetic talking person encoded as mp4 with its
audio, and bad ones; inline and on Beam's DirectRunner. Needs the detector environment (as
tests/test_photo.py: skipped without it unless VLOGGER_REQUIRE_DETECTOR=1)."""

import glob
import json
import os

import numpy as np
import pytest

from conftest import detector_or_skip

from vlogger_jax import audio as audio_lib
from vlogger_jax import geometry
from vlogger_jax import video_io
from vlogger_jax.data import real_videos
from vlogger_jax.data import records
from vlogger_jax.data import schema
from vlogger_jax.data import synthetic

FRAMES, SIZE, CLIP = 24, 160, 12
# 12-frame clips at 128², fitted two at a time, to be quick on a CPU (the defaults are 240 frames
# at 256², eight at a time).
SETTINGS = real_videos.Settings(resolution=128, clip_seconds=CLIP / 24)


@pytest.fixture(scope="module", autouse=True)
def detector_env():
  return detector_or_skip()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  folder = tmp_path_factory.mktemp("videos")
  clip = synthetic.generate_clip(3, num_frames=FRAMES, resolution=SIZE)
  paths = {"person": str(folder / "person.mp4"), "silent": str(folder / "silent_film.mov"),
           "broken": str(folder / "broken.mp4"), "nobody": str(folder / "nobody.mkv"),
           "two": str(folder / "two.mp4")}
  video_io.write_video(paths["person"], clip["frames"], audio=clip["audio"])
  short = clip["frames"][:CLIP]
  video_io.write_video(paths["silent"], short)
  with open(paths["broken"], "wb") as f:
    f.write(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
  video_io.write_video(paths["nobody"], np.full_like(short, 90), audio=clip["audio"])
  video_io.write_video(paths["two"], np.concatenate([short] * 2, axis=2), audio=clip["audio"])
  return paths, clip


@pytest.fixture(scope="module")
def prepared(videos, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("prepared") / "clips")
  return out, real_videos.prepare(sorted(videos[0].values()), out, SETTINGS, fit_batch=2)


def test_videos_become_valid_fitted_clips_and_bad_ones_are_counted(videos, prepared):
  truth = videos[1]
  out, rep = prepared
  with open(os.path.join(out, "report.json")) as f:
    assert json.load(f) == json.loads(json.dumps(rep))
  assert rep["clips_written"] == 2 and rep["videos"] == 5, rep
  assert rep["skipped_by_reason"] == {"unreadable": 1, "no audio": 1, "too short": 0,
                                      "no face": 1, "several people": 1, "face too small": 0,
                                      "fit failed": 0}, rep["skipped"]
  files = sorted(glob.glob(os.path.join(out, "train", "*")))
  assert [os.path.basename(f) for f in files] == [f"person-000{i}.npz" for i in range(2)]
  assert sorted(os.listdir(out)) == ["report.json", "train"]       # nothing half-written
  for i, path in enumerate(files):
    clip = records.load_npz_clip(path)
    schema.validate_clip(clip, path)
    assert clip["frames"].shape == (CLIP, 128, 128, 3)
    assert float(clip["fit_error_px"]) < 2.0                # at 128²
    # Detector -> fit against the synthetic truth: the head's rotation within a few degrees
    # (the crop's off-centre camera and the mesh-to-landmark definitions bias it slightly:
    # 6.4 and 8.2 degrees on average on these two clips of the sentence-speaking people, 4.5-5
    # on the syllable-speaking ones before; a failed fit is tens of degrees off).
    span = slice(CLIP * i, CLIP * (i + 1))
    ra = geometry.rot6d_to_matrix(truth["head_pose"][span, :6])
    rb = geometry.rot6d_to_matrix(clip["head_pose"][:, :6])
    cos = (np.trace(np.swapaxes(ra, -1, -2) @ rb, axis1=-2, axis2=-1) - 1) / 2
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))).mean() < 12.0
    # (The mouth's correlation with the truth needs longer clips: test_fitting.py has it.)
    assert clip["body_visibility"][:, 11:13].min() > 0.5    # shoulders in the framed square


def test_the_beam_pipeline_on_the_direct_runner_writes_the_same(videos, tmp_path):
  pytest.importorskip("apache_beam")
  paths, _ = videos
  out = str(tmp_path / "beam")
  rep = real_videos.beam_pipeline([paths["person"], paths["broken"]], out, SETTINGS, fit_batch=2)
  assert rep["clips_written"] == 2 and rep["skipped_by_reason"]["unreadable"] == 1, rep
  for path in sorted(glob.glob(os.path.join(out, "train", "*.npz"))):
    schema.validate_clip(records.load_npz_clip(path), path)


@pytest.mark.slow   # the video model on a CPU: about 2 minutes
def test_a_prepared_clip_drives_generation_with_its_own_audio(prepared, tmp_path, python_runner):
  clip = os.path.join(prepared[0], "train", "person-0000.npz")
  out = str(tmp_path / "reenact.mp4")
  proc = python_runner(["launch/generate.py", "--image=synthetic:0", f"--driving_params={clip}",
                        f"--out={out}"])
  assert f"{CLIP} frames" in proc.stdout and "with audio" in proc.stdout, proc.stdout
  frames, _ = video_io.read_video(out)
  assert frames.shape[0] == CLIP
  audio_lib.load_audio(out)    # the clip's speech, not silence (load_audio refuses silence)
