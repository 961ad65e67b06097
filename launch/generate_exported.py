r"""Generates an mp4 from exported samplers (launch/export.py), without the model code.

  python launch/generate.py --image=synthetic:3 --text="Hello." --out=hello.mp4 \
      --save_reference=ref.npz                              # any reference file will do
  python launch/generate_exported.py --exported=exported/ --reference=ref.npz \
      --audio=speech.wav --out=hello_exported.mp4
  python launch/generate_exported.py --exported=exported/ --reference=ref.npz \
      --frame_params=params.npz --out=reenact.mp4           # e.g. generate.py --save_params

This process imports jax, numpy, PIL, the mel front-end and the file helpers, and neither
vlogger_jax.models, vlogger_jax.nn nor flax: what it runs is in the artifacts.
--frame_params are absolute per-frame parameters of the reference person ([T, ...] expression,
head_pose, body_keypoints, optionally body_visibility), not retargeted.
"""


from absl import flags
import numpy as np
from PIL import Image

from vlogger_jax import audio as audio_lib
from vlogger_jax import cli
from vlogger_jax import contracts
from vlogger_jax import fileio
from vlogger_jax import video_io
from vlogger_jax.inference import exported

_EXPORTED = flags.DEFINE_string("exported", None, "Folder written by launch/export.py.")
_REFERENCE = flags.DEFINE_string("reference", None, "Reference file (.npz with the image and "
                                 "its parameters, e.g. generate.py --save_reference).")
_AUDIO = flags.DEFINE_string("audio", None, "Speech: an audio file.")
_FRAME_PARAMS = flags.DEFINE_string("frame_params", None, "Per-frame parameters (.npz) instead "
                                    "of speech.")
_OUT = flags.DEFINE_string("out", None, "Output video (.mp4).")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed (sample 0 of generate.py's seed).")
_MAX_SECONDS = flags.DEFINE_float("max_seconds", 600.0, "Longest speech accepted, in seconds.")

_REF_KEYS = ("image", "shape", "fov") + contracts.FRAME_KEYS


def _reference(path: str, size: int) -> dict:
  data = fileio.read_npz(path)
  missing = [k for k in _REF_KEYS if k not in data]
  if missing:
    raise ValueError(f"--reference '{path}' lacks '{missing[0]}'; expected a reference file "
                     f"with {', '.join(_REF_KEYS)}.")
  ref = {k: np.asarray(data[k]) for k in _REF_KEYS}
  image = ref["image"]
  if image.shape[:2] != (size, size):   # as Reference.resized
    im = Image.fromarray(image).resize((size, size), Image.Resampling.BOX
                                       if image.shape[0] > size else Image.Resampling.BICUBIC)
    ref["image"] = np.asarray(im)
  return ref


def run() -> int:
  if not _EXPORTED.value or not _REFERENCE.value or not _OUT.value:
    raise ValueError("--exported, --reference and --out are required; e.g. --exported=exported/ "
                     "--reference=ref.npz --audio=speech.wav --out=talk.mp4.")
  if (_AUDIO.value is None) == (_FRAME_PARAMS.value is None):
    raise ValueError("expected exactly one of --audio and --frame_params.")
  gen = exported.load(_EXPORTED.value)
  ref = _reference(_REFERENCE.value, gen.base_size)
  if _AUDIO.value is not None:
    wave = audio_lib.load_audio(_AUDIO.value, max_seconds=_MAX_SECONDS.value)
    result = gen.generate(ref, wave=wave, seed=_SEED.value)   # the mel of all of it, as
    length = audio_lib.num_frames(wave.size)                   # generate.py's; the mp4 keeps
    wave = wave[:audio_lib.num_samples_for_frames(length)]     # the speech the frames cover
  else:
    data = fileio.read_npz(_FRAME_PARAMS.value)
    params = {k: np.asarray(data[k], np.float32)[None] for k in contracts.FRAME_KEYS
              if k in data}
    if "expression" not in params:
      raise ValueError(f"--frame_params '{_FRAME_PARAMS.value}' lacks 'expression'; expected "
                       "per-frame expression, head_pose and body_keypoints [T, ...].")
    length = params["expression"].shape[1]
    wave = np.zeros(audio_lib.num_samples_for_frames(length), np.float32)
    result = gen.generate(ref, frame_params=params, seed=_SEED.value)
  frames = result["frames"][0]
  video_io.write_video(_OUT.value, frames, audio=wave)
  print(f"wrote {_OUT.value}: {frames.shape[0]} frames at {gen.size}x{gen.size}, 24 fps")
  return 0


# ExportError, AudioError and NpzError are ValueErrors.
main = cli.entry(run, errors=(ValueError, OSError, video_io.VideoError))


if __name__ == "__main__":
  cli.run(main)
