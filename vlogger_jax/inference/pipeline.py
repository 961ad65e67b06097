"""Image + speech -> video (paper Fig. 2): the trained stages chained, without their trainers.

    pipe = pipeline.Pipeline.load()                      # the shipped default weights
    ref = reference.synthetic(3)                         # or reference.load("ref.npz")
    result = pipe.generate(ref, audio.load_audio("speech.wav"), pipeline.Options(num_samples=2))
    result.frames                                        # [2, T, 128, 128, 3] uint8 at 24 fps

Stages: speech (16 kHz) -> log-mel per frame -> the motion model (residual motion of the
reference's pose) -> per-frame parameters -> the base video model at 128² (controls rendered on
the device inside every window) -> the super-resolution stages (128² -> 256² -> 512², each
conditioned on the stage before it and on the controls at its own size) -> frames. The output
resolution is that of the last stage loaded, or any earlier one (`Options.resolution`).

Long speech runs in constant device memory: every sampler runs in chunks of
`Options.windows_per_chunk` windows. Each chunk continues the previous one from its last
`overlap` frames with the windows numbered on, which is exactly one call over the whole
sequence (windowed_sampler.generate), and its frames go to the host (or straight to an encoder
through `on_frames`) before the next chunk starts. The super-resolution stages use the base
model's window and overlap, so each of them continues its own previous chunk over the same
frames: a chunk of base frames goes up the whole cascade before the next one is made.

Randomness: sample i of a call with seed s uses fold_in(PRNGKey(s), i), so the samples of one
batched call are the single calls with the matching keys, and sample 0 does not depend on
`num_samples`. Motion and video draw from fold_in(key_i, 0) and fold_in(key_i, 1), super-
resolution stage j from fold_in(key_i, 2 + j).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vlogger_jax import audio as audio_lib
from vlogger_jax import contracts
from vlogger_jax import diffusion
from vlogger_jax import motion as motion_lib
from vlogger_jax import render
from vlogger_jax import video_io
from vlogger_jax import windowed_sampler
from vlogger_jax.inference import reference as reference_lib
from vlogger_jax.inference.errors import InputError
from vlogger_jax.models import loading
from vlogger_jax.models import video as video_lib
from vlogger_jax.models.image import to_pixels

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets",
                      "weights")
DEFAULT_WEIGHTS = {"motion": os.path.join(ASSETS, "motion.npz"),
                   "video": os.path.join(ASSETS, "base128.npz")}

# progress(stage, done, total): called as a stage advances (the command line draws bars).
Progress = Callable[[str, int, int], None]


@dataclasses.dataclass(frozen=True)
class Options:
  """How to generate. None takes the value the stage's run was configured with
  (config.sampling)."""
  num_samples: int = 1                 # samples per call, generated as one batch
  seed: int = 0
  resolution: int | None = None        # output size; None: the last loaded stage's
  motion_sampler: str | None = None    # 'ddpm' | 'ddim' | 'dpm'
  motion_steps: int | None = None
  motion_guidance: float | None = None
  motion_overlap: int | None = None
  video_sampler: str | None = None
  video_steps: int | None = None
  video_eta: float | None = None
  video_guidance: float | None = None
  video_overlap: int | None = None
  sr_sampler: str | None = None        # every super-resolution stage
  sr_steps: int | None = None
  sr_eta: float | None = None
  sr_aug_level: float | None = None    # noise-conditioning augmentation level in [0, 1]
  windows_per_chunk: int = 4           # windows per device call (memory and progress steps)
  max_seconds: float = 600.0           # longer speech is refused


@dataclasses.dataclass
class Result:
  """What a generation made."""
  frames: np.ndarray | None      # [N, T, S, S, 3] uint8 (None when streamed to on_frames)
  audio: np.ndarray              # [T * 16000 / 24] float32: the speech the frames cover
  params: dict                   # per-frame parameters [N, T, ...] and shape [N, 64], fov [N]
  motion: np.ndarray | None      # normalised motion [N, T, 223] (None when driven by params)
  seconds: dict                  # wall time per stage
  fps: int = contracts.FPS

  @property
  def num_frames(self) -> int:
    return int(self.params["expression"].shape[1])


def _overrides(**kw) -> dict:
  return {k: v for k, v in kw.items() if v is not None}


def _chunked(run_chunk, inputs: dict, length: int, cfg: windowed_sampler.SamplerConfig,
             windows_per_chunk: int, frame_shapes: tuple, batch: int, emit, progress=None,
             stage: str = "", device=None):
  """Runs windowed samplers over `length` frames in chunks of `windows_per_chunk` windows.

  inputs: per-frame arrays [B, P, ...] padded to cover every chunk (`chunk_frames` below);
  run_chunk(inputs_slice, contexts, first_window) -> one frames array [B, L, *shape] per entry
  of `frame_shapes` (a cascade: each stage continues its own previous chunk from its context);
  emit(frames [B, t, ...] numpy, start) receives the last one's finished frames in order.
  device: where the model's parameters are; the first chunk's (zero) contexts are committed
  there like the later chunks' contexts (outputs of the previous call), so that all chunks share
  one compilation (jit keys its cache on whether arguments are committed)."""
  o, stride, k, chunks = _chunk_plan(length, cfg, windows_per_chunk)
  chunk_len = (k - 1) * stride + cfg.window
  contexts = tuple(jnp.zeros((batch, o) + tuple(shape), jnp.float32) for shape in frame_shapes)
  if device is not None:
    contexts = jax.device_put(contexts, device)
  if progress is not None:
    progress(stage, 0, chunks)   # the clock starts before the first chunk compiles
  # Chunk c + 1 is dispatched before chunk c's frames are pulled to the host (its context is a
  # device array), so the device works while the host encodes the frames before them.
  pending = None
  for c in range(chunks + 1):
    if c < chunks:
      start = c * k * stride
      piece = {name: a[:, start:start + chunk_len] for name, a in inputs.items()}
      outs = tuple(run_chunk(piece, contexts, jnp.asarray(c * k, jnp.int32)))
      contexts = tuple(out[:, k * stride:k * stride + o] for out in outs)
      out = outs[-1]
    if pending is not None:
      done_out, done_start = pending
      keep = min(k * stride, length - done_start) if c < chunks else length - done_start
      emit(np.asarray(done_out[:, :keep]), done_start)
      if progress is not None:
        progress(stage, c, chunks)
    pending = (out, start) if c < chunks else None


def _device(params):
  """The device holding a tree of parameters."""
  return next(iter(jax.tree.leaves(params)[0].devices()))


def _chunk_plan(length: int, cfg: windowed_sampler.SamplerConfig, windows_per_chunk: int):
  """(overlap, stride, windows per chunk, chunks) of `length` frames."""
  total = windowed_sampler.num_windows(length, cfg.window, cfg.overlap)
  k = max(1, min(int(windows_per_chunk), total))
  return cfg.overlap, cfg.window - cfg.overlap, k, -(-total // k)


def chunk_frames(length: int, cfg: windowed_sampler.SamplerConfig, windows_per_chunk: int) -> int:
  """Frames that the chunks of `_chunked` read: `length` rounded up to whole chunks."""
  _, stride, k, chunks = _chunk_plan(length, cfg, windows_per_chunk)
  return (chunks * k - 1) * stride + cfg.window


def _pad(a: np.ndarray, frames: int, mode: str = "edge") -> np.ndarray:
  pad = [(0, 0)] * a.ndim
  pad[1] = (0, frames - a.shape[1])
  return np.pad(a, pad, mode=mode)


class Pipeline:
  """The loaded stages of one generation: a motion model (optional when driven by parameters),
  the base video model and the super-resolution stages that follow it (any prefix of the
  cascade, each taking the previous stage's resolution)."""

  def __init__(self, motion: loading.Loaded | None, video: loading.Loaded,
               sr: tuple[loading.Loaded, ...] = ()):
    self.motion = motion
    self.video = video
    self.sr = tuple(sr)
    size = int(video.model.size)
    for i, stage in enumerate(self.sr):
      if stage.model.low_size != size:
        raise InputError(f"super-resolution stage {i + 1} ({stage.workdir}) takes "
                         f"{stage.model.low_size}² frames; expected {size}², the output of the "
                         "stage before it.")
      size = int(stage.model.size)
    self.head_model = video.model.head_model
    self.stages = {"motion": motion, "video": video}
    self.stages.update({f"sr{s.model.size}": s for s in self.sr})

  @classmethod
  def load(cls, motion: str | None = None, video: str | None = None,
           sr: tuple[str, ...] = (), *, device=None, need_motion: bool = True) -> "Pipeline":
    """Stages from run directories or weights files; None takes the shipped default weights
    (motion and base video; super-resolution stages are only what `sr` names, in order)."""
    def one(path, kind):
      if not path and kind not in DEFAULT_WEIGHTS:
        raise InputError(f"--{kind} names an empty path; expected run directories or weights "
                         "files, comma-separated.")
      path = path or DEFAULT_WEIGHTS[kind]
      try:
        return loading.load(path, expect=(kind,), device=device)
      except loading.LoadError as e:
        raise InputError(f"--{kind}: {e}") from None
      except ValueError as e:   # a config this version cannot build
        raise InputError(f"--{kind}: '{path}' cannot be loaded by this version of vlogger_jax "
                         f"({e})") from None
    return cls(one(motion, "motion") if need_motion else None, one(video, "video"),
               tuple(one(p, "sr") for p in sr))

  # --- properties of the loaded stages ---

  @property
  def resolution(self) -> int:
    """The output size of the last loaded stage."""
    return self.resolutions[-1]

  @property
  def resolutions(self) -> tuple[int, ...]:
    """The output size of each stage of the cascade: the base model's, then each SR stage's."""
    return (int(self.video.model.size),) + tuple(int(s.model.size) for s in self.sr)

  def sr_stages(self, options: Options) -> tuple[loading.Loaded, ...]:
    """The super-resolution stages that reach options.resolution (all of them by default)."""
    size = options.resolution or self.resolution
    return tuple(s for s in self.sr if s.model.size <= size)

  def output_resolution(self, options: Options) -> int:
    stages = self.sr_stages(options)
    return int(stages[-1].model.size) if stages else int(self.video.model.size)

  def motion_config(self, options: Options) -> windowed_sampler.SamplerConfig:
    return self.motion.model.sampler_config(**_overrides(
        sampler=options.motion_sampler, num_steps=options.motion_steps,
        guidance=options.motion_guidance, overlap=options.motion_overlap))

  def video_config(self, options: Options) -> windowed_sampler.SamplerConfig:
    return self.video.model.sampler_config(**_overrides(
        sampler=options.video_sampler, num_steps=options.video_steps, eta=options.video_eta,
        guidance=options.video_guidance, overlap=options.video_overlap))

  def sr_config(self, stage: loading.Loaded, options: Options) -> windowed_sampler.SamplerConfig:
    """An SR stage's sampler: its own sampler and steps, the base model's window and overlap."""
    base = self.video_config(options)
    return stage.model.sampler_config(window=base.window, overlap=base.overlap, **_overrides(
        sampler=options.sr_sampler, num_steps=options.sr_steps, eta=options.sr_eta))

  def check(self, options: Options) -> None:
    """Raises InputError for options these stages cannot honour."""
    if options.num_samples < 1:
      raise InputError(f"num_samples is {options.num_samples}; expected at least 1.")
    if options.resolution is not None and options.resolution not in self.resolutions:
      missing = ("" if self.sr else " (the base model; no super-resolution stage is loaded: "
                 "--sr)")
      raise InputError(f"resolution {options.resolution} cannot be reached: the loaded stages "
                       f"end at {self.resolution}²{missing}; expected one of "
                       f"{', '.join(map(str, self.resolutions))}.")
    if options.windows_per_chunk < 1:
      raise InputError(f"windows_per_chunk is {options.windows_per_chunk}; expected >= 1.")
    if not options.max_seconds > 0:
      raise InputError(f"max_seconds is {options.max_seconds}; expected a positive limit.")
    if options.sr_aug_level is not None and not 0.0 <= options.sr_aug_level <= 1.0:
      raise InputError(f"sr_aug_level is {options.sr_aug_level}; expected a level in [0, 1].")
    configs = [("video", self.video_config)]
    if self.motion is not None:
      configs.insert(0, ("motion", self.motion_config))
    configs += [(f"super-resolution {s.model.size}²", functools.partial(self.sr_config, s))
                for s in self.sr_stages(options)]
    for stage, make in configs:
      try:
        make(options).validate()
      except ValueError as e:
        raise InputError(f"{stage} sampling options: {e}") from None

  # --- inputs ---

  @staticmethod
  def speech(source, max_seconds: float = Options.max_seconds) -> np.ndarray:
    """16 kHz mono speech from a path or a [S] float array at 16 kHz, checked: not empty, not
    silent, at least one video frame long and at most `max_seconds`."""
    if not max_seconds > 0:
      raise InputError(f"max_seconds is {max_seconds}; expected a positive limit.")
    is_file = isinstance(source, (str, os.PathLike))
    name = f"audio file '{os.fspath(source)}'" if is_file else "the speech"
    try:
      # A file is decoded only a little past max_seconds (audio.load_audio), so hours of audio
      # are refused without being read.
      wave = (audio_lib.load_audio(source, allow_silent=True, max_seconds=max_seconds) if is_file
              else audio_lib.load_audio(np.asarray(source), sample_rate=contracts.SAMPLE_RATE,
                                        allow_silent=True, max_seconds=max_seconds))
    except audio_lib.AudioTooLong as e:
      raise InputError(f"{name} lasts {e.length}, longer than the limit of {max_seconds:g} s; "
                       "expected shorter speech, or raise the limit (--max_seconds).") from None
    except audio_lib.AudioError as e:
      raise InputError(str(e)) from None
    peak = float(np.abs(wave).max())
    if peak < audio_lib.SILENCE_PEAK:
      raise InputError(f"{name} is silent (peak amplitude {peak:.2g}); expected audible "
                       "speech.")
    seconds = wave.size / contracts.SAMPLE_RATE
    if audio_lib.num_frames(wave.size) < 1:
      raise InputError(f"the speech lasts {seconds * 1000:.0f} ms, shorter than one video "
                       f"frame; expected at least {1000 / contracts.FPS:.0f} ms.")
    return wave

  # --- stages ---

  def sample_keys(self, options: Options) -> jax.Array:
    """[N, 2]: sample i's key fold_in(PRNGKey(seed), i) (module doc)."""
    return windowed_sampler.example_keys(jax.random.PRNGKey(options.seed), options.num_samples)

  @functools.cached_property
  def _mel(self):
    return jax.jit(audio_lib.mel_features)

  def generate_motion(self, ref: reference_lib.Reference, wave: np.ndarray, options: Options,
                      keys: jax.Array | None = None, progress: Progress | None = None) -> tuple:
    """(params {expression [N, T, 64], head_pose [N, T, 9], body_keypoints [N, T, 75, 2]},
    normalised motion [N, T, 223]) for speech `wave` relative to the reference's pose."""
    if self.motion is None:
      raise InputError("no motion model is loaded; expected --motion (or the default weights) "
                       "to generate motion from speech.")
    keys = self.sample_keys(options) if keys is None else keys
    n = keys.shape[0]
    cfg = self.motion_config(options)
    mel = np.asarray(self._mel(jnp.asarray(wave)))
    length = mel.shape[0]
    padded = chunk_frames(length, cfg, options.windows_per_chunk)
    mel = _pad(np.broadcast_to(mel[None], (n,) + mel.shape), padded, mode="constant")
    model, params = self.motion.model, self.motion.params
    motion_keys = diffusion.fold_in(keys, 0)
    out = np.zeros((n, length, contracts.MOTION_DIM), np.float32)

    def run_chunk(piece, context, first):
      return (model.jitted_generate(params, piece["mel"], motion_keys, cfg, context[0], first),)

    def emit(frames, start):
      out[:, start:start + frames.shape[1]] = frames

    _chunked(run_chunk, {"mel": jnp.asarray(mel)}, length, cfg, options.windows_per_chunk,
             ((contracts.MOTION_DIM,),), n, emit, progress, "motion", _device(params))
    per = [model.to_parameters(params, m, ref.head_pose, ref.body_keypoints) for m in out]
    names = ("expression", "head_pose", "body_keypoints")
    return {k: np.stack([p[i] for p in per]).astype(np.float32)
            for i, k in enumerate(names)}, out

  def retarget(self, ref: reference_lib.Reference, driving: dict, num_samples: int) -> dict:
    """Per-frame parameters [N, T, ...] that move the reference as the `driving` parameters
    (expression [T, 64], head_pose [T, 9], body_keypoints [T, 75, 2], e.g. another clip's
    fitted parameters) move from their first frame: the driving motion as residuals of its first
    frame, applied to the reference's pose (as the motion model's output is)."""
    need = ("expression", "head_pose", "body_keypoints")
    for k in need:
      if k not in driving:
        raise InputError(f"driving parameters lack '{k}'; expected {', '.join(need)} per frame.")
    e, h, b = (np.asarray(driving[k], np.float32) for k in need)
    t = e.shape[0]
    if t < 1 or e.shape != (t, contracts.NUM_EXPRESSION) or h.shape != (
        t, contracts.HEAD_POSE_DIM) or b.shape != (t, contracts.NUM_KEYPOINTS, 2):
      raise InputError(f"driving parameters have shapes expression {e.shape}, head_pose "
                       f"{h.shape}, body_keypoints {b.shape}; expected [T, 64], [T, 9] and "
                       "[T, 75, 2] with T >= 1.")
    if not all(np.all(np.isfinite(a)) for a in (e, h, b)):
      raise InputError("driving parameters hold non-finite values; expected finite numbers.")
    motion = motion_lib.pack(e, h, b, h[0], b[0])
    out = motion_lib.unpack(motion, np.asarray(ref.head_pose, np.float32),
                            np.asarray(ref.body_keypoints, np.float32))
    rep = lambda a: np.broadcast_to(np.asarray(a, np.float32)[None], (num_samples,) + a.shape)
    return {k: rep(v) for k, v in zip(need, out)}

  def clip(self, ref: reference_lib.Reference, frame_params: dict) -> dict:
    """The video model's clip (contracts.CLIP_KEYS, batch N) from per-frame parameters."""
    n, t = frame_params["expression"].shape[:2]
    rep = lambda a: np.broadcast_to(np.asarray(a, np.float32)[None], (n,) + np.shape(a))
    out = {"shape": rep(ref.shape), "fov": rep(ref.fov)}
    out.update({k: np.asarray(frame_params[k], np.float32)
                for k in ("expression", "head_pose", "body_keypoints")})
    vis = frame_params.get("body_visibility")
    out["body_visibility"] = (np.asarray(vis, np.float32) if vis is not None else
                              np.broadcast_to(np.asarray(ref.body_visibility, np.float32),
                                              (n, t, contracts.NUM_KEYPOINTS)))
    for k in contracts.FRAME_KEYS:
      out[f"ref_{k}"] = rep(getattr(ref, k))
    return out

  @functools.cache
  def _controls_rgb(self, size: int):
    def draw(clip):
      lead = clip["expression"].shape[:2]
      per = lambda a: jnp.broadcast_to(a[:, None], lead + a.shape[1:])
      c = video_lib.frame_controls(self.head_model, per(clip["shape"]), per(clip["fov"]),
                                   *(clip[k] for k in contracts.FRAME_KEYS), size)
      return jnp.round(render.controls_rgb(c) * 255).astype(jnp.uint8)

    return jax.jit(draw)

  def generate_video(self, ref: reference_lib.Reference, clip: dict, options: Options,
                     keys: jax.Array | None = None, on_frames=None, on_controls=None,
                     progress: Progress | None = None) -> np.ndarray | None:
    """Frames [N, T, S, S, 3] uint8 of a clip (`clip`) at the output resolution, chunk by
    chunk, each chunk of base frames going up the super-resolution cascade; with `on_frames`,
    each chunk (uint8 [N, t, S, S, 3], start frame) goes there instead and None is returned.
    `on_controls` receives the chunk's rendered controls as RGB uint8 the same way."""
    keys = self.sample_keys(options) if keys is None else keys
    n = keys.shape[0]
    cfg = self.video_config(options)
    base = int(self.video.model.size)
    stages = self.sr_stages(options)
    sr_cfgs = [self.sr_config(s, options) for s in stages]
    size = self.output_resolution(options)
    length = clip["expression"].shape[1]
    padded = chunk_frames(length, cfg, options.windows_per_chunk)
    per_frame = {k: jnp.asarray(_pad(clip[k], padded)) for k in contracts.FRAME_KEYS}
    fixed = {k: jnp.asarray(v) for k, v in clip.items() if k not in contracts.FRAME_KEYS}
    ref_image = np.broadcast_to(ref.resized(base)[None], (n, base, base, 3))
    ref_image = to_pixels(jnp.asarray(ref_image))
    model, params = self.video.model, self.video.params
    video_keys = diffusion.fold_in(keys, 1)
    sr_keys = [diffusion.fold_in(keys, 2 + j) for j in range(len(stages))]
    frames = None if on_frames is not None else np.zeros((n, length, size, size, 3), np.uint8)

    def run_chunk(piece, contexts, first):
      chunk_clip = dict(fixed, **piece)
      outs = [model.jitted_generate(params, ref_image, chunk_clip, video_keys, cfg, contexts[0],
                                    first)]
      for j, stage in enumerate(stages):
        outs.append(stage.model.jitted_generate(stage.params, outs[-1], chunk_clip, sr_keys[j],
                                                sr_cfgs[j], contexts[j + 1], first,
                                                options.sr_aug_level))
      return outs

    def emit(x, start):
      u8 = np.round((np.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
      if on_controls is not None:
        piece = {k: v[:, start:start + u8.shape[1]] for k, v in per_frame.items()}
        on_controls(np.asarray(self._controls_rgb(size)(dict(fixed, **piece))), start)
      if on_frames is not None:
        on_frames(u8, start)
      else:
        frames[:, start:start + u8.shape[1]] = u8

    shapes = ((base, base, 3),) + tuple((s.model.size,) * 2 + (3,) for s in stages)
    _chunked(run_chunk, per_frame, length, cfg, options.windows_per_chunk, shapes, n, emit,
             progress, f"video {size}²", _device(params))
    return frames

  def generate(self, ref: reference_lib.Reference, speech=None, options: Options = Options(), *,
               driving: dict | None = None, keys: jax.Array | None = None, on_frames=None,
               on_controls=None, progress: Progress | None = None) -> Result:
    """A video of the reference person saying `speech` ([S] float32 at 16 kHz, or an audio
    file), or moving as the `driving` parameters; `options.num_samples` samples in one batch
    (or one per row of `keys` [N, 2])."""
    self.check(options)
    seconds = {}
    if keys is not None:
      keys = jnp.asarray(keys)
      windowed_sampler.check_keys(keys, keys.shape[0])
    n = options.num_samples if keys is None else keys.shape[0]
    keys = self.sample_keys(dataclasses.replace(options, num_samples=n)) if keys is None else keys
    t0 = time.perf_counter()
    if driving is not None:
      params = self.retarget(ref, driving, n)
      motion = None
      length = params["expression"].shape[1]
      wave = None if speech is None else self.speech(speech, options.max_seconds)
    else:
      if speech is None:
        raise InputError("no speech was given; expected audio, text, or driving parameters.")
      wave = self.speech(speech, options.max_seconds)
      params, motion = self.generate_motion(ref, wave, options, keys, progress)
      length = params["expression"].shape[1]
    seconds["motion"] = time.perf_counter() - t0
    if wave is None:
      wave = np.zeros(audio_lib.num_samples_for_frames(length), np.float32)
    else:
      wave = wave[:audio_lib.num_samples_for_frames(length)]
    clip = self.clip(ref, params)
    t0 = time.perf_counter()
    frames = self.generate_video(ref, clip, options, keys, on_frames, on_controls, progress)
    seconds["video"] = time.perf_counter() - t0
    params = dict(clip)
    return Result(frames=frames, audio=wave, params=params, motion=motion, seconds=seconds)

  def write_videos(self, ref: reference_lib.Reference, speech, options: Options, paths, *,
                   audio: np.ndarray, controls_path: str | None = None,
                   driving: dict | None = None, progress: Progress | None = None) -> Result:
    """`generate`, its frames streamed as they come into H.264/AAC mp4s: sample i into
    `paths[i]` and, with `controls_path`, sample 0 beside its rendered controls, each with
    `audio` [S] (16 kHz, the speech the frames cover) muxed in. Memory stays that of one chunk
    of windows, and an error or Ctrl-C leaves none of the files (video_io.VideoWriter)."""
    size = self.output_resolution(options)
    writers, pending = [], {}

    def on_controls(controls, start):
      del start
      pending["controls"] = controls[0]

    def on_frames(frames, start):
      del start
      for w, f in zip(writers, frames):
        w.write(f)
      if controls_path:
        writers[-1].write(np.concatenate([frames[0], pending.pop("controls")], axis=2))

    try:
      for path in paths:
        writers.append(video_io.VideoWriter(path, (size, size), audio=audio))
      if controls_path:
        writers.append(video_io.VideoWriter(controls_path, (size, 2 * size), audio=audio))
      result = self.generate(ref, speech, options, driving=driving, on_frames=on_frames,
                             on_controls=on_controls if controls_path else None,
                             progress=progress)
      if progress is not None:
        progress("encode", 0, 1)
      for w in writers:
        w.close()
      if progress is not None:
        progress("encode", 1, 1)
    except BaseException:
      for w in writers:
        w.abort()
      raise
    return result
