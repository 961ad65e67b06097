"""Real talking-person videos -> clips in the dataset format (schema.py), with a report of what was
skipped and why.

Per video (any container and frame rate ffmpeg reads): the audio is decoded to 16 kHz mono, the
frames are resampled to 24 fps (and scaled to a longer side of at most 1024) and cut into clips of
`clip_seconds` (10 s, 240 frames, by default; a shorter tail is dropped). Per clip: MediaPipe
Holistic in tracking mode (detector.py, its own environment), checks, one square framing for the
clip (the upper body, detector.framing), the frames cropped and resized to the training
resolution, the landmarks moved into the square. Clips are then fitted in batches (fitting.py:
shape and FOV per clip, expression and pose per frame) and written as <out>/<split>/<id>.npz,
each through a temporary name, so an interrupted run leaves only whole clips.

A clip is skipped, with its reason counted in the report, when: the file cannot be decoded
("unreadable"), it has no audio stream or silent audio ("no audio"), it is shorter than one clip
("too short"), fewer than MIN_FACE_SHARE of its frames show a face ("no face"), a frame shows
several faces ("several people"), the face is smaller than MIN_FACE_PX ("face too small"), or
the fit's mean reprojection error exceeds MAX_FIT_ERROR of the resolution ("fit failed").

The stages are plain functions (`candidates`, `fit_and_write`, `report`) so that they run the
same way inline (`prepare`, for a few videos) and as an Apache Beam pipeline (`beam_pipeline`,
the DirectRunner locally, Dataflow/Flink/Spark at scale: videos are spread over workers, clips
are batched for the fit with beam.BatchElements).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
from PIL import Image

from vlogger_jax import audio as audio_lib
from vlogger_jax import contracts
from vlogger_jax import detector
from vlogger_jax import fileio
from vlogger_jax import fitting
from vlogger_jax import head as head_lib
from vlogger_jax import video_io
from vlogger_jax.data import schema

MIN_FACE_SHARE = 0.9
MIN_FACE_PX = 48
MAX_FIT_ERROR = 0.02   # of the resolution: 5 px at 256²
COUNT_EVERY = 12       # frames between face counts (several people)
REASONS = ("unreadable", "no audio", "too short", "no face", "several people", "face too small",
           "fit failed")


@dataclasses.dataclass(frozen=True)
class Settings:
  """What a preparation run makes."""
  resolution: int = 256
  clip_seconds: float = 10.0
  split: str = "train"
  fit: fitting.FitConfig = fitting.FitConfig()

  @property
  def clip_frames(self) -> int:
    return int(round(self.clip_seconds * contracts.FPS))


@dataclasses.dataclass
class Candidate:
  """One clip, detected and framed, waiting for its fit."""
  clip_id: str
  video: str
  start_s: float
  frames: np.ndarray          # [T, R, R, 3] uint8
  audio: np.ndarray           # [S] int16
  landmarks: np.ndarray       # [T, L, 2] pixels of the R x R square
  confidence: np.ndarray      # [T, L]
  body_keypoints: np.ndarray  # [T, 75, 2]
  body_visibility: np.ndarray  # [T, 75]


def skip(video: str, reason: str, start_s: float | None = None, detail: str = "") -> dict:
  """An outcome: a video or clip that was not written."""
  assert reason in REASONS, reason
  return {"video": video, "start_s": start_s, "reason": reason, "detail": detail}


def _clip_id(video: str, index: int) -> str:
  stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in
                 os.path.splitext(os.path.basename(video))[0])
  return f"{stem}-{index:04d}"


def _frame_clip(chunk, det: detector.Detections, resolution: int, names):
  """Crops a clip's frames [T, H, W, 3] to its framing square, resized -> frames, landmarks,
  confidence, keypoints, visibility in that square."""
  h, w = det.size
  x0, y0, side = detector.framing(det)
  resample = Image.Resampling.BOX if side > resolution else Image.Resampling.BICUBIC
  frames = np.stack([np.asarray(Image.fromarray(f[y0:y0 + side, x0:x0 + side]).resize(
      (resolution, resolution), resample)) for f in chunk])
  lms, conf = detector.face_landmarks(det, names)
  lms = (lms - np.array([x0, y0], np.float32)) * (resolution / side)
  kp, vis = detector.body_keypoints(det)
  kp, vis = detector.crop_keypoints(kp, vis, (x0 / w, y0 / h, (x0 + side) / w, (y0 + side) / h))
  return frames, lms.astype(np.float32), conf, kp, vis


def candidates(video: str, settings: Settings, names=None, venv: str | None = None):
  """Yields a Candidate per usable clip of `video` and a skip dict per unusable one (or for the
  whole video)."""
  names = names or head_lib.load_default().landmark_names
  try:
    wave = audio_lib.load_audio(video)
  except audio_lib.AudioError as e:
    text = str(e)
    unreadable = "no audio stream" not in text and "silent" not in text
    yield skip(video, "unreadable" if unreadable else "no audio", detail=text)
    return
  n = settings.clip_frames
  total = audio_lib.num_frames(wave.size)
  index = 0
  try:
    for chunk in video_io.iter_video(video, fps=contracts.FPS, chunk=n):
      start = index * n
      start_s = start / contracts.FPS
      if chunk.shape[0] < n or start + n > total:
        if index == 0:
          yield skip(video, "too short", 0.0, f"{chunk.shape[0]} frames at 24 fps, audio "
                     f"{wave.size / contracts.SAMPLE_RATE:.1f} s; a clip is {n}")
        break
      index += 1
      det = detector.detect(chunk, video=True, count_every=COUNT_EVERY, venv=venv)
      found = det.face_found
      if found.mean() < MIN_FACE_SHARE:
        yield skip(video, "no face", start_s, f"a face in {found.mean():.0%} of the frames")
        continue
      if det.num_faces.max() > 1:
        yield skip(video, "several people", start_s, f"{det.num_faces.max()} faces in a frame")
        continue
      boxes = detector.face_box(det)[found]
      face = float(np.median(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])))
      if face < MIN_FACE_PX:
        yield skip(video, "face too small", start_s, f"{face:.0f} px, expected {MIN_FACE_PX}")
        continue
      frames, lms, conf, kp, vis = _frame_clip(chunk, det, settings.resolution, names)
      audio16 = audio_lib.audio_for_frames(wave, start, n)
      yield Candidate(clip_id=_clip_id(video, index - 1), video=video, start_s=start_s,
                      frames=frames, audio=np.round(audio16 * 32767).astype(np.int16),
                      landmarks=lms, confidence=conf, body_keypoints=kp, body_visibility=vis)
  except video_io.VideoError as e:
    yield skip(video, "unreadable", None, str(e))


def fit_and_write(batch: list[Candidate], out_dir: str, settings: Settings, model=None,
                  pad_to: int = 1) -> list[dict]:
  """Fits a batch of clips of one length together and writes those that fit -> outcome dicts
  (written clips: id, file, fit_error_px; the others: skip). The batch is padded (with
  landmark-free copies) to a multiple of `pad_to`, so every batch of a run compiles once."""
  if not batch:
    return []
  model = model if model is not None else head_lib.load_default()
  r = settings.resolution
  lms = np.stack([c.landmarks for c in batch])
  conf = np.stack([c.confidence for c in batch])
  pad = -len(batch) % max(1, pad_to)
  lms = np.concatenate([lms, np.repeat(lms[:1], pad, 0)])
  conf = np.concatenate([conf, np.zeros((pad,) + conf.shape[1:], conf.dtype)])
  fit = fitting.fit(model, lms, conf, r, r, settings.fit)
  out = []
  for i, c in enumerate(batch):
    err = float(fit["error_px"][i])
    finite = all(np.all(np.isfinite(fit[k][i])) for k in ("shape", "fov", "expression",
                                                          "head_pose"))
    if not finite or not err <= MAX_FIT_ERROR * r:
      out.append(skip(c.video, "fit failed", c.start_s,
                      f"mean reprojection error {err:.2f} px, expected <= {MAX_FIT_ERROR * r:.1f}"))
      continue
    clip = {"id": c.clip_id, "frames": c.frames, "audio": c.audio,
            "shape": fit["shape"][i].astype(np.float32), "fov": np.float32(fit["fov"][i]),
            "expression": fit["expression"][i].astype(np.float32),
            "head_pose": fit["head_pose"][i].astype(np.float32),
            "body_keypoints": c.body_keypoints, "body_visibility": c.body_visibility}
    schema.validate_clip(clip, c.clip_id)
    path = os.path.join(out_dir, settings.split, f"{c.clip_id}.npz")
    fileio.save_npz(path, fit_error_px=np.float32(err),
                    fit_frame_error_px=fit["frame_error_px"][i].astype(np.float32), **clip)
    out.append({"video": c.video, "start_s": c.start_s, "id": c.clip_id, "file": path,
                "fit_error_px": round(err, 3)})
  return out


def report(outcomes: list[dict], videos: list[str], settings: Settings) -> dict:
  """The run's report: clips written (with fit quality), skips counted by reason."""
  written = sorted((o for o in outcomes if "id" in o), key=lambda o: o["id"])
  skipped = [o for o in outcomes if "reason" in o]
  counts = {reason: sum(o["reason"] == reason for o in skipped) for reason in REASONS}
  errors = [o["fit_error_px"] for o in written]
  return {"videos": len(videos), "clips_written": len(written),
          "clips_skipped": len(skipped), "skipped_by_reason": counts,
          "mean_fit_error_px": round(float(np.mean(errors)), 3) if errors else None,
          "resolution": settings.resolution, "clip_frames": settings.clip_frames,
          "clips": written, "skipped": sorted(skipped, key=lambda o: (o["video"],
                                                                      o["start_s"] or 0))}


def write_report(out_dir: str, rep: dict) -> str:
  """<out_dir>/report.json, atomically."""
  return fileio.write_json(os.path.join(out_dir, "report.json"), rep)


def prepare(videos: list[str], out_dir: str, settings: Settings | None = None,
            fit_batch: int = 8, venv: str | None = None) -> dict:
  """Inline preparation of `videos` into `out_dir` (module doc) -> the report (also written)."""
  settings = settings or Settings()
  model = head_lib.load_default()
  outcomes, pending = [], []
  for video in videos:
    for item in candidates(video, settings, model.landmark_names, venv):
      if isinstance(item, Candidate):
        pending.append(item)
        if len(pending) == fit_batch:
          outcomes += fit_and_write(pending, out_dir, settings, model, fit_batch)
          pending = []
      else:
        outcomes.append(item)
  outcomes += fit_and_write(pending, out_dir, settings, model, fit_batch)
  rep = report(outcomes, videos, settings)
  write_report(out_dir, rep)
  return rep


def beam_pipeline(videos: list[str], out_dir: str, settings: Settings | None = None,
                  fit_batch: int = 8, runner: str = "DirectRunner", options=None) -> dict:
  """The same preparation as an Apache Beam pipeline on `runner` -> the report (also written)."""
  import apache_beam as beam  # pylint: disable=import-outside-toplevel  (the optional [beam] extra)
  settings = settings or Settings()
  report_path = os.path.join(out_dir, "report.json")

  def split(item):
    if isinstance(item, Candidate):
      yield item
    else:
      yield beam.pvalue.TaggedOutput("skipped", item)

  def finish(outcomes):
    write_report(out_dir, report(outcomes, videos, settings))

  pipeline_options = beam.options.pipeline_options.PipelineOptions(options or [])
  if runner == "DirectRunner":
    # Beam's own in-process runner; "DirectRunner" by name first tries to download the Prism
    # binary from GitHub, which an offline machine cannot (it falls back after a timeout).
    from apache_beam.runners.portability import fn_api_runner  # pylint: disable=import-outside-toplevel
    runner = fn_api_runner.FnApiRunner()
  with beam.Pipeline(runner=runner, options=pipeline_options) as p:
    items = (p | "videos" >> beam.Create(videos)
             | "detect" >> beam.FlatMap(lambda v: candidates(v, settings))
             | "split" >> beam.FlatMap(split).with_outputs("skipped", main="clips"))
    written = (items.clips
               | "batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=fit_batch)
               | "fit" >> beam.FlatMap(lambda b: fit_and_write(list(b), out_dir, settings,
                                                           pad_to=fit_batch)))
    _ = ((written, items.skipped) | "outcomes" >> beam.Flatten()
         | "gather" >> beam.combiners.ToList() | "report" >> beam.Map(finish))
  with open(report_path) as f:
    return json.load(f)
