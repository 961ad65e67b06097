"""Exported samplers: the generation's device programs as `jax.export` artifacts, and a loader
that runs a whole generation from them without the model code (docs/generation.md).

    exported.export(pipeline.Pipeline.load(...), pipeline.Options(...), "out/")   # writes:
      motion_w4.jax      mel chunk -> normalised motion (guided, windowed, one chunk of windows)
      controls_w16.jax   per-frame parameters of one video window -> its controls [.., 22]
      video_w4.jax       one base video chunk, continuing its context frames (outpainting)
      sr256_w4.jax ...   one chunk of each super-resolution stage, continuing its context
      params_*.npz       each model's parameters as a flat list of leaves (inputs, not constants)
      manifest.json      files, shapes, dtypes, platforms, versions, the sampler settings baked in

    gen = exported.load("out/")          # imports jax, numpy and foundation modules only
    frames = gen.generate(ref, wave=speech, seed=0)      # or mel=..., or frame_params=...

Every artifact has a symbolic batch `b` and a fixed length: one chunk of `windows_per_chunk`
windows (`_w4` in its name), as Pipeline's `_chunked` runs them; the loader chunks a sequence of
any length the same way (the next chunk's context is the last `overlap` frames that this chunk
made, its windows numbered on) and derives the keys as Pipeline does, so its frames are the
pipeline's. The loader always runs whole chunks of the artifact's length: windows past the end
see padded inputs and are cut off, and they never reach the frames before them.

The exporting half (`export`) takes a loaded Pipeline and only calls its models' `generate`; the
loading half imports no model code (vlogger_jax.models, vlogger_jax.nn, flax), so this module
imports no pipeline or model module at its top.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import vlogger_jax
from vlogger_jax import audio as audio_lib
from vlogger_jax import contracts
from vlogger_jax import fileio
from vlogger_jax import motion as motion_lib

MANIFEST = "manifest.json"
FORMAT = 1
PLATFORMS = ("cpu", "cuda", "tpu")


class ExportError(ValueError):
  """A folder of exported samplers that cannot be loaded or used, in one sentence."""


# --- shared by both halves ---

def _num_windows(length: int, window: int, overlap: int) -> int:
  # windowed_sampler.num_windows (not imported: that module brings flax through diffusion).
  return 1 if length <= window else 1 + -(-(length - window) // (window - overlap))


def chunk_plan(length: int, window: int, overlap: int, windows_per_chunk: int) -> tuple:
  """(chunks, frames per chunk, stride of chunks) of `length` frames in chunks of
  `windows_per_chunk` windows."""
  stride = window - overlap
  chunks = -(-_num_windows(length, window, overlap) // windows_per_chunk)
  return chunks, (windows_per_chunk - 1) * stride + window, windows_per_chunk * stride


def sample_keys(seed: int, num_samples: int) -> jax.Array:
  """[N, 2]: sample i's key fold_in(PRNGKey(seed), i), as Pipeline.sample_keys."""
  key = jax.random.PRNGKey(seed)
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(np.arange(num_samples, dtype=np.uint32))


def stream_keys(keys: jax.Array, stream: int) -> jax.Array:
  """Each key folded with `stream` (motion 0, video 1, SR stage j 2 + j), as Pipeline."""
  return jax.vmap(lambda k: jax.random.fold_in(k, stream))(keys)


def _pad(a: np.ndarray, frames: int, mode: str = "edge") -> np.ndarray:
  pad = [(0, 0)] * a.ndim
  pad[1] = (0, max(0, frames - a.shape[1]))
  return np.pad(a, pad, mode=mode)


# --- exporting ---

def _spec_json(args, names) -> list:
  """Each input leaf's name (argument, then its path), shape (symbolic dims as strings), dtype."""
  out = []
  for arg, name in zip(args, names):
    for path, a in jax.tree_util.tree_leaves_with_path(arg):
      out.append({"name": name + jax.tree_util.keystr(path),
                  "shape": [str(d) for d in a.shape], "dtype": str(a.dtype)})
  return out


def _save_params(path: str, params) -> list[str]:
  """A flat .npz of the leaves of `params` (leaf_00000, ...; bfloat16 stored as float32 and cast
  back on loading); returns the leaves' paths in order."""
  leaves = jax.tree_util.tree_leaves_with_path(params)
  arrays = {}
  for i, (_, a) in enumerate(leaves):
    a = np.asarray(a)
    arrays[f"leaf_{i:05d}"] = a.astype(np.float32) if a.dtype.name == "bfloat16" else a
  fileio.save_npz(path, **arrays)
  return [jax.tree_util.keystr(p) for p, _ in leaves]


def lowerable_platforms(fn, args, platforms=PLATFORMS) -> list[str]:
  """The platforms of `platforms` for which `fn` (jitted) lowers with these abstract `args`."""
  ok = []
  for p in platforms:
    try:
      jax.export.export(fn, platforms=(p,))(*args)
      ok.append(p)
    except Exception:  # pylint: disable=broad-except  (a platform this jax cannot lower for)
      pass
  return ok


def export(pipe, options, folder: str, platforms=PLATFORMS, log=print) -> dict:
  """Writes the artifacts of a loaded Pipeline `pipe` with pipeline.Options `options` (sampler
  settings, windows_per_chunk, sr_aug_level) into `folder`; returns the manifest. Each artifact
  is lowered for those of `platforms` that this jax lowers it for (at least one)."""
  unknown = [p for p in platforms if p not in PLATFORMS]
  if unknown or not platforms:
    # jax lowers for 'gpu' too, but such an artifact then refuses to run on a 'cuda' device.
    raise ExportError(f"platform '{unknown[0] if unknown else ''}' is not one of "
                      f"{', '.join(PLATFORMS)}; expected those names (an NVIDIA GPU is 'cuda').")
  pipe.check(options)
  os.makedirs(folder, exist_ok=True)
  k = int(options.windows_per_chunk)
  b, = jax.export.symbolic_shape("b")
  f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  keys_spec = jax.ShapeDtypeStruct((b, 2), jnp.uint32)
  first_spec = jax.ShapeDtypeStruct((), jnp.int32)
  abstract = lambda leaves: [jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype)
                             for a in leaves]
  manifest = {"format": FORMAT, "windows_per_chunk": k, "artifacts": {},
              "versions": {"jax": jax.__version__, "jaxlib": jax.lib.__version__,
                           "vlogger_jax": vlogger_jax.__version__},
              "seed_streams": {"motion": 0, "video": 1, "sr": "2 + stage index"}}

  def write(name, fn, args, names, settings, params_file=None):
    t0 = time.perf_counter()
    fn = jax.jit(fn)
    try:   # all of them at once; only when that fails, each alone to find those that lower
      exp, ok = jax.export.export(fn, platforms=tuple(platforms))(*args), list(platforms)
    except Exception:  # pylint: disable=broad-except
      ok = lowerable_platforms(fn, args, platforms)
      if not ok:
        raise ExportError(f"artifact '{name}' lowers for none of the platforms "
                          f"{', '.join(platforms)}; expected at least one that this jax "
                          "supports.") from None
      exp = jax.export.export(fn, platforms=tuple(ok))(*args)
    path = os.path.join(folder, f"{name}.jax")
    with open(path + ".tmp", "wb") as f:
      f.write(exp.serialize())
    os.replace(path + ".tmp", path)
    manifest["artifacts"][name] = {
        "file": os.path.basename(path), "platforms": ok, "params": params_file,
        "inputs": _spec_json(args[1:] if params_file else args, names),
        "outputs": [{"shape": [str(d) for d in a.shape], "dtype": str(a.dtype)}
                    for a in exp.out_avals],
        "settings": settings, "export_seconds": round(time.perf_counter() - t0, 2)}
    log(f"exported {name} for {', '.join(ok)} in {time.perf_counter() - t0:.1f} s")

  def settings(cfg, **extra):
    out = {"sampler": cfg.sampler, "steps": cfg.num_steps, "guidance": cfg.guidance,
           "eta": cfg.eta, "window": cfg.window, "overlap": cfg.overlap,
           "windows_per_chunk": k, "chunk_frames": (k - 1) * (cfg.window - cfg.overlap)
           + cfg.window}
    out.update(extra)
    return out

  def stage_params(name, params):
    leaves, treedef = jax.tree.flatten(params)
    file = f"params_{name}.npz"
    manifest.setdefault("params", {})[file] = _save_params(os.path.join(folder, file), params)
    return leaves, treedef, file

  if pipe.motion is not None:
    model = pipe.motion.model
    cfg = pipe.motion_config(options)
    leaves, treedef, file = stage_params("motion", pipe.motion.params)
    s = settings(cfg, absolute=bool(model.config.data.absolute))
    length = s["chunk_frames"]
    write(f"motion_w{k}", lambda lv, mel, keys, context, first: model.generate(
        jax.tree.unflatten(treedef, lv), mel, keys, cfg, context, first),
        (abstract(leaves), f32(b, length, contracts.MEL_BINS), keys_spec,
         f32(b, cfg.overlap, contracts.MOTION_DIM), first_spec),
        ("mel", "keys", "context", "first_window"), s, file)

  video = pipe.video.model
  cfg = pipe.video_config(options)
  size = int(video.size)
  s = settings(cfg, size=size)
  length = s["chunk_frames"]
  clip_spec = {key: f32(b, *shape) for key, shape in contracts.clip_shapes(length).items()}
  window_spec = [f32(b, *contracts.frame_shapes(cfg.window)[key]) for key in contracts.FRAME_KEYS]
  head_model = video.head_model
  # The controls of one window, rendered as the video model renders them inside its windows.
  # Imported here, not at the top: the loading half of this module must not bring model code.
  from vlogger_jax.models import video as video_lib  # pylint: disable=g-import-not-at-top
  write(f"controls_w{cfg.window}", lambda shape, fov, *frames: video_lib.example_controls(
      head_model, shape, fov, list(frames), size),
      (f32(b, contracts.NUM_SHAPE), f32(b), *window_spec),
      ("shape", "fov") + contracts.FRAME_KEYS, {"window": cfg.window, "size": size})
  leaves, treedef, file = stage_params("video", pipe.video.params)
  write(f"video_w{k}", lambda lv, ref, clip, keys, context, first: video.generate(
      jax.tree.unflatten(treedef, lv), ref, clip, keys, cfg, context, first),
      (abstract(leaves), f32(b, size, size, 3), clip_spec, keys_spec,
       f32(b, cfg.overlap, size, size, 3), first_spec),
      ("ref_image", "clip", "keys", "context", "first_window"), s, file)
  sr_names = []
  low = size
  for stage in pipe.sr_stages(options):
    scfg = pipe.sr_config(stage, options)
    out = int(stage.model.size)
    level = (float(stage.model.config.sampling.aug_level) if options.sr_aug_level is None
             else float(options.sr_aug_level))
    leaves, treedef, file = stage_params(f"sr{out}", stage.params)
    sr_clip = {key: clip_spec[key] for key in ("shape", "fov") + contracts.FRAME_KEYS}
    name = f"sr{out}_w{k}"

    def sr_fn(lv, lo, clip, keys, context, first, model=stage.model, cfg=scfg, td=treedef,
              level=level):
      return model.generate(jax.tree.unflatten(td, lv), lo, clip, keys, cfg, context, first,
                            level)
    write(name, sr_fn, (abstract(leaves), f32(b, length, low, low, 3), sr_clip, keys_spec,
                        f32(b, scfg.overlap, out, out, 3), first_spec),
          ("low", "clip", "keys", "context", "first_window"),
          settings(scfg, size=out, low_size=low, aug_level=level), file)
    sr_names.append(name)
    low = out
  manifest["motion"] = f"motion_w{k}" if pipe.motion is not None else None
  manifest["controls"] = f"controls_w{cfg.window}"
  manifest["video"] = f"video_w{k}"
  manifest["sr"] = sr_names
  if pipe.motion is not None:
    manifest["motion_stats"] = {"mean": "['stats']['mean']", "std": "['stats']['std']"}
  fileio.write_json(os.path.join(folder, MANIFEST), manifest)
  return manifest


# --- loading ---

class _Artifact:
  """One deserialized artifact, jitted once, with its parameters (None for controls)."""

  def __init__(self, folder: str, entry: dict, params: list | None):
    path = os.path.join(folder, entry["file"])
    try:
      with open(path, "rb") as f:
        self.exported = jax.export.deserialize(bytearray(f.read()))
    except OSError as e:
      raise ExportError(f"artifact '{path}' cannot be read ({e.strerror}); expected the file "
                        "that the manifest names.") from None
    self.entry = entry
    self.settings = entry["settings"]
    # Each leaf in the dtype the artifact was lowered for (the .npz keeps bfloat16 as float32).
    self.params = None if params is None else [
        p.astype(a.dtype) for p, a in zip(params, self.exported.in_avals)]
    self._call = jax.jit(self.exported.call)

  def __call__(self, *inputs):
    if self.params is None:
      return self._call(*inputs)
    return self._call(self.params, *inputs)


def _read_params(folder: str, file: str, names: list[str]) -> list:
  arrays = fileio.read_npz(os.path.join(folder, file))
  if len(arrays) != len(names):
    raise ExportError(f"parameters file '{file}' holds {len(arrays)} arrays; expected "
                      f"{len(names)}, as the manifest lists.")
  return [jnp.asarray(arrays[f"leaf_{i:05d}"]) for i in range(len(names))]


class Exported:
  """A folder of exported samplers: `generate` from a reference and mel, speech or per-frame
  parameters, with Pipeline's chunking and keys."""

  def __init__(self, folder: str):
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
      raise ExportError(f"'{folder}' has no {MANIFEST}; expected a folder written by "
                        "launch/export.py.")
    with open(path) as f:
      self.manifest = m = json.load(f)
    if m.get("format") != FORMAT:
      raise ExportError(f"'{path}' has format {m.get('format')}; expected {FORMAT}.")
    self.folder = folder
    params = {file: _read_params(folder, file, names) for file, names in m["params"].items()}
    art = lambda name: _Artifact(folder, m["artifacts"][name],
                                 params.get(m["artifacts"][name]["params"]))
    self.motion = art(m["motion"]) if m.get("motion") else None
    self.controls_fn = art(m["controls"])
    self.video = art(m["video"])
    self.sr = [art(name) for name in m["sr"]]
    if self.motion is not None:
      names = m["params"][self.motion.entry["params"]]
      leaves = params[self.motion.entry["params"]]
      self.stats = motion_lib.Stats(
          np.asarray(leaves[names.index(m["motion_stats"]["mean"])]),
          np.asarray(leaves[names.index(m["motion_stats"]["std"])]))
    self.size = int(self.sr[-1].settings["size"] if self.sr else self.video.settings["size"])
    self.base_size = int(self.video.settings["size"])
    self._mel = jax.jit(audio_lib.mel_features)

  # --- stages ---

  def _chunks(self, run, inputs: dict, length: int, s: dict, shapes: tuple, n: int) -> list:
    """Runs `run(piece, contexts, first)` -> one array per shape over `length` frames in the
    artifact's chunks (`s`: its settings); returns each output [n, length, ...] as numpy."""
    chunks, chunk_len, step = chunk_plan(length, s["window"], s["overlap"],
                                         s["windows_per_chunk"])
    o, k = s["overlap"], s["windows_per_chunk"]
    # Committed like the later chunks' contexts (outputs of the previous call), so that all
    # chunks share one compilation (jit keys its cache on whether arguments are committed).
    contexts = jax.device_put(tuple(jnp.zeros((n, o) + tuple(shape), jnp.float32)
                                    for shape in shapes), jax.devices()[0])
    outs = [np.zeros((n, length) + tuple(shape), np.float32) for shape in shapes]
    for c in range(chunks):
      start = c * step
      piece = {name: a[:, start:start + chunk_len] for name, a in inputs.items()}
      got = run(piece, contexts, jnp.asarray(c * k, jnp.int32))
      contexts = tuple(g[:, step:step + o] for g in got)
      keep = step if c < chunks - 1 else length - start   # the last chunk keeps the rest
      for out, g in zip(outs, got):
        out[:, start:start + keep] = np.asarray(g[:, :keep])
    return outs

  def generate_motion(self, ref: dict, mel: np.ndarray, keys: jax.Array) -> tuple:
    """(per-frame parameters {expression, head_pose, body_keypoints} [N, T, ...], normalised
    motion [N, T, 223]) from mel [T, 256], relative to the reference's pose."""
    if self.motion is None:
      raise ExportError(f"'{self.folder}' has no motion artifact; expected per-frame "
                        "parameters (frame_params) instead of speech.")
    n, length = keys.shape[0], mel.shape[0]
    s = self.motion.settings
    chunks, chunk_len, step = chunk_plan(length, s["window"], s["overlap"],
                                         s["windows_per_chunk"])
    mel = _pad(np.broadcast_to(np.asarray(mel, np.float32)[None], (n,) + mel.shape),
               (chunks - 1) * step + chunk_len, mode="constant")
    motion_keys = stream_keys(keys, 0)
    out, = self._chunks(lambda p, c, f: (self.motion(p["mel"], motion_keys, c[0], f),),
                        {"mel": jnp.asarray(mel)}, length, s, ((contracts.MOTION_DIM,),), n)
    names = ("expression", "head_pose", "body_keypoints")
    per = [motion_lib.unpack(self.stats.denormalize(m), np.asarray(ref["head_pose"], np.float32),
                             np.asarray(ref["body_keypoints"], np.float32), s["absolute"])
           for m in out]
    return {k: np.stack([p[i] for p in per]).astype(np.float32)
            for i, k in enumerate(names)}, out

  def clip(self, ref: dict, frame_params: dict) -> dict:
    """The video models' clip (contracts.CLIP_KEYS, batch N) of per-frame parameters [N, T, ...],
    as Pipeline.clip."""
    n, t = np.shape(frame_params["expression"])[:2]
    rep = lambda a: np.broadcast_to(np.asarray(a, np.float32)[None], (n,) + np.shape(a))
    out = {"shape": rep(ref["shape"]), "fov": rep(ref["fov"])}
    out.update({k: np.asarray(frame_params[k], np.float32)
                for k in ("expression", "head_pose", "body_keypoints")})
    vis = frame_params.get("body_visibility")
    out["body_visibility"] = (np.asarray(vis, np.float32) if vis is not None else
                              np.broadcast_to(np.asarray(ref["body_visibility"], np.float32),
                                              (n, t, contracts.NUM_KEYPOINTS)))
    for k in contracts.FRAME_KEYS:
      out[f"ref_{k}"] = rep(ref[k])
    return out

  def controls(self, clip: dict) -> np.ndarray:
    """Controls [N, T, S, S, 22] of a clip at the base size, one window of frames per call."""
    w = int(self.controls_fn.settings["window"])
    length = clip["expression"].shape[1]
    frames = -(-length // w) * w
    per = {k: _pad(np.asarray(clip[k], np.float32), frames) for k in contracts.FRAME_KEYS}
    outs = [np.asarray(self.controls_fn(np.asarray(clip["shape"], np.float32),
                                        np.asarray(clip["fov"], np.float32),
                                        *(per[k][:, i:i + w] for k in contracts.FRAME_KEYS)))
            for i in range(0, frames, w)]
    return np.concatenate(outs, axis=1)[:, :length]

  def generate_video(self, ref_image: np.ndarray, clip: dict, keys: jax.Array) -> np.ndarray:
    """Frames [N, T, S, S, 3] uint8 at the last stage's size of a clip, the reference image
    [s, s, 3] uint8 at the base size; each chunk of base frames goes up the cascade."""
    n = keys.shape[0]
    base = self.base_size
    if np.shape(ref_image) != (base, base, 3):
      raise ExportError(f"ref_image has shape {np.shape(ref_image)}; expected [{base}, {base}, "
                        "3] uint8, the base model's size.")
    s = self.video.settings
    length = clip["expression"].shape[1]
    chunks, chunk_len, step = chunk_plan(length, s["window"], s["overlap"],
                                         s["windows_per_chunk"])
    padded = (chunks - 1) * step + chunk_len
    per_frame = {k: jnp.asarray(_pad(np.asarray(clip[k], np.float32), padded))
                 for k in contracts.FRAME_KEYS}
    fixed = {k: jnp.asarray(v, jnp.float32) for k, v in clip.items()
             if k not in contracts.FRAME_KEYS}
    ref = jnp.asarray(np.broadcast_to(np.asarray(ref_image)[None], (n, base, base, 3)))
    ref = ref.astype(jnp.float32) / 127.5 - 1.0
    video_keys = stream_keys(keys, 1)
    sr_keys = [stream_keys(keys, 2 + j) for j in range(len(self.sr))]
    sr_clip = lambda c: {k: c[k] for k in ("shape", "fov") + contracts.FRAME_KEYS}

    def run(piece, contexts, first):
      chunk_clip = dict(fixed, **piece)
      outs = [self.video(ref, chunk_clip, video_keys, contexts[0], first)]
      for j, stage in enumerate(self.sr):
        outs.append(stage(outs[-1], sr_clip(chunk_clip), sr_keys[j], contexts[j + 1], first))
      return outs

    shapes = ((base, base, 3),) + tuple((int(a.settings["size"]),) * 2 + (3,) for a in self.sr)
    x = self._chunks(run, per_frame, length, s, shapes, n)[-1]
    return np.round((np.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)

  def generate(self, ref, *, mel=None, wave=None, frame_params=None, seed: int = 0,
               num_samples: int = 1) -> dict:
    """A whole generation: {'frames' [N, T, S, S, 3] uint8, 'params' (the clip), 'motion'
    (normalised [N, T, 223], None when driven)}. `ref`: a dict (or an object with the
    attributes) image [s, s, 3] uint8 at the base size, shape [64], fov [], expression [64],
    head_pose [9], body_keypoints [75, 2], body_visibility [75]. Give one of `mel` [T, 256],
    `wave` [S] float32 at 16 kHz, or `frame_params` (absolute per-frame parameters [N, T, ...],
    e.g. Pipeline.retarget's)."""
    ref = ref if isinstance(ref, dict) else {k: getattr(ref, k) for k in (
        "image", "shape", "fov") + contracts.FRAME_KEYS}
    given = [name for name, v in (("mel", mel), ("wave", wave), ("frame_params", frame_params))
             if v is not None]
    if len(given) != 1:
      raise ExportError(f"generate was given {', '.join(given) or 'no input'}; expected exactly "
                        "one of mel, wave or frame_params.")
    if num_samples < 1:
      raise ExportError(f"num_samples is {num_samples}; expected at least 1.")
    keys = sample_keys(seed, num_samples)
    motion = None
    if frame_params is None:
      if wave is not None:
        mel = np.asarray(self._mel(jnp.asarray(wave, jnp.float32)))
      frame_params, motion = self.generate_motion(ref, np.asarray(mel, np.float32), keys)
    clip = self.clip(ref, frame_params)
    image = np.asarray(ref["image"])
    return {"frames": self.generate_video(image, clip, keys), "params": clip, "motion": motion}


def load(folder: str) -> Exported:
  """The exported samplers in `folder` (written by `export` / launch/export.py)."""
  return Exported(folder)
