r"""Talking-person videos -> clips of the dataset format, fitted, with a report of what was skipped.

  python launch/prepare_videos.py --videos=DIR --out=CLIPS                  # inline, this machine
  python launch/prepare_videos.py --videos=DIR --out=CLIPS --runner=DirectRunner   # Apache Beam
  python launch/build_dataset.py --source=CLIPS ...                          # then the dataset

Every video ffmpeg reads (mp4, mov, mkv, webm, avi, ...; any frame rate, with speech) under
--videos becomes 10-s clips at 24 fps with 16 kHz mono audio, the person framed (upper body) and
resized to --resolution, with fitted parameters per frame and the fit's quality: CLIPS/<split>/
<video>-<n>.npz and CLIPS/report.json (clips written, skips counted by reason). Needs the
detector environment (`python launch/install_detector.py`); --runner needs the optional Beam
extra (`pip install -e ".[beam]"`); --beam_options passes the runner's own options.
docs/real_data.md has the details.
"""

import os
import shlex
import time

from absl import flags

from vlogger_jax import cli
from vlogger_jax import detector
from vlogger_jax import fileio
from vlogger_jax.data import real_videos

_VIDEOS = flags.DEFINE_string("videos", None, "Folder of videos (searched recursively).")
_OUT = flags.DEFINE_string("out", None, "Output folder of clips and report.json.")
_RESOLUTION = flags.DEFINE_integer("resolution", 256, "Square training resolution (<= 512).")
_SECONDS = flags.DEFINE_float("clip_seconds", 10.0, "Clip length in seconds.")
_SPLIT = flags.DEFINE_string("split", "train", "The split folder the clips go into.")
_FIT_BATCH = flags.DEFINE_integer("fit_batch", 8, "Clips fitted together (more on a GPU).")
_RUNNER = flags.DEFINE_string("runner", None, "An Apache Beam runner (DirectRunner, "
                              "DataflowRunner, ...); default: inline in this process.")
_BEAM_OPTIONS = flags.DEFINE_string("beam_options", "", "The Beam runner's own options, e.g. "
                                    "\"--direct_num_workers=4 --direct_running_mode=multi_processing\".")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".flv",
                    ".wmv", ".ts", ".3gp")


def _videos(folder: str) -> list[str]:
  if not os.path.isdir(folder):
    raise ValueError(f"--videos '{folder}' is not a folder; expected a folder of video files.")
  found = sorted(os.path.join(d, f) for d, _, files in os.walk(folder) for f in files
                 if f.lower().endswith(VIDEO_EXTENSIONS))
  if not found:
    raise ValueError(f"--videos '{folder}' holds no video files; expected files ending in "
                     f"{', '.join(VIDEO_EXTENSIONS[:5])}, ...")
  return found


def run() -> int:
  if not _VIDEOS.value or not _OUT.value:
    raise ValueError("--videos and --out are required; e.g. --videos=talks --out=clips.")
  if not 16 <= _RESOLUTION.value <= 512 or _RESOLUTION.value % 2:
    raise ValueError(f"--resolution {_RESOLUTION.value}; expected an even size in [16, 512].")
  videos = _videos(_VIDEOS.value)
  fileio.check_output_folder(_OUT.value, "--out")
  detector.check()  # one sentence now rather than one per video
  settings = real_videos.Settings(resolution=_RESOLUTION.value, clip_seconds=_SECONDS.value,
                                  split=_SPLIT.value)
  start = time.perf_counter()
  if _RUNNER.value:
    try:
      import apache_beam  # pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
      raise ValueError(f"--runner={_RUNNER.value} needs Apache Beam, which is not installed; "
                       "expected `pip install -e \".[beam]\"`, or no --runner.") from None
    rep = real_videos.beam_pipeline(videos, _OUT.value, settings, _FIT_BATCH.value,
                                    _RUNNER.value, shlex.split(_BEAM_OPTIONS.value))
  else:
    rep = real_videos.prepare(videos, _OUT.value, settings, _FIT_BATCH.value)
  reasons = ", ".join(f"{n} {k}" for k, n in rep["skipped_by_reason"].items() if n) or "none"
  print(f"wrote {rep['clips_written']} clips from {rep['videos']} videos to {_OUT.value} "
        f"(mean fit error {rep['mean_fit_error_px']} px at {settings.resolution}²; skipped "
        f"{rep['clips_skipped']}: {reasons}; {time.perf_counter() - start:.0f} s); report "
        f"{os.path.join(_OUT.value, 'report.json')}")
  return 0


def main(argv):
  if len(argv) > 1:
    return cli.report(f"unexpected argument '{argv[1]}'; expected only --flags (see --help).", 2)
  try:
    return run()
  except (ValueError, detector.DetectorError) as e:
    return cli.report(e)


if __name__ == "__main__":
  cli.run(main)
