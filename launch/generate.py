r"""Image + speech -> an mp4 of that person talking (paper Fig. 2).

  python launch/generate.py --image=synthetic:3 --text="Hello, I am a synthetic person." \
      --out=hello.mp4
  python launch/generate.py --image=ref.npz --audio=speech.wav --out=talk.mp4 --num_samples=2
  python launch/generate.py --image=synthetic:3 --driving_params=clip_params.npz --out=reenact.mp4
  python launch/generate.py --image=photo.png --driving_params=clips/train/talk-0000.npz --out=r.mp4

--image: 'synthetic:N' (held-out synthetic identity N), a reference file (.npz with the image and
its parameters, e.g. from --save_reference), or an image file with --params. Speech: --audio (any
file ffmpeg decodes) or --text (spoken by espeak-ng, or by --tts_command). Without --motion and
--video the shipped default weights are used (vlogger_jax/assets/weights). The mp4 is H.264 at
24 fps with the speech as AAC; it is written to a temporary name and renamed at the end, so an
interrupted run (Ctrl-C) leaves no partial file. docs/generation.md has the details.
"""

import os

from absl import flags
import numpy as np

from vlogger_jax import audio as audio_lib
from vlogger_jax import cli
from vlogger_jax import contracts
from vlogger_jax import fileio
from vlogger_jax import speech as speech_lib
from vlogger_jax import video_io
from vlogger_jax.inference import flags as gen_flags
from vlogger_jax.inference import pipeline as pipeline_lib
from vlogger_jax.inference import progress as progress_lib
from vlogger_jax.inference import reference as reference_lib
from vlogger_jax.inference.errors import InputError

_IMAGE = flags.DEFINE_string("image", None, "synthetic:N, a reference .npz, or an image file "
                             "(with --params).")
_PARAMS = flags.DEFINE_string("params", None, "Parameters file (.npz) fitted on --image.")
_AUDIO = flags.DEFINE_string("audio", None, "Speech: an audio file.")
_TEXT = flags.DEFINE_string("text", None, "Speech: text to synthesize.")
_DRIVING = flags.DEFINE_string("driving_params", None, "Reenactment: per-frame parameters (.npz "
                               "with expression, head_pose, body_keypoints; e.g. --save_params "
                               "or a clip of launch/prepare_videos.py, whose audio is kept) "
                               "instead of speech.")
_OUT = flags.DEFINE_string("out", None, "Output video (.mp4); with --num_samples N > 1, "
                           "<stem>_<i>.mp4 for each sample.")
_RESOLUTION = flags.DEFINE_integer("resolution", None, "Output size (128, 256, 512); default: "
                                   "the last loaded stage's.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "Samples, generated as one batch.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_MAX_SECONDS = flags.DEFINE_float("max_seconds", 600.0, "Longest speech accepted, in seconds; "
                                  "an audio file is decoded only this far (and 1 s more).")
_VOICE = flags.DEFINE_string("voice", "en-us", "espeak-ng voice for --text.")
_RATE = flags.DEFINE_integer("rate", 160, "Speaking rate for --text, words per minute.")
_TTS_COMMAND = flags.DEFINE_string("tts_command", None, "Another synthesizer for --text: a "
                                   "command with {text_file} and {wav} (and {voice}, {rate}).")
_SAVE_PARAMS = flags.DEFINE_string("save_params", None, "Also write the per-frame parameters "
                                   "(.npz, [T, ...]; <stem>_<i>.npz per sample), which "
                                   "--driving_params reads.")
_CONTROLS_VIDEO = flags.DEFINE_string("controls_video", None, "Also write a video of the result "
                                      "beside its rendered controls (.mp4).")
_SAVE_REFERENCE = flags.DEFINE_string("save_reference", None, "Also write the reference (.npz).")


def _outputs(out: str, num: int) -> list[str]:
  if not out.endswith(".mp4"):
    raise InputError(f"--out '{out}' does not end in .mp4; expected a path such as video.mp4.")
  stem = out[:-len(".mp4")]
  return [out] if num == 1 else [f"{stem}_{i}.mp4" for i in range(num)]


def _per_sample(path: str | None, num: int) -> list[str]:
  """A side output's files: `path`, or <stem>_<i><ext> for each of `num` > 1 samples."""
  if not path:
    return []
  stem, ext = os.path.splitext(path)
  return [path] if num == 1 else [f"{stem}_{i}{ext}" for i in range(num)]


def _check_writable(path: str, flag: str) -> None:
  reason = fileio.unwritable_reason(path)
  if reason:
    raise InputError(f"{flag} '{path}': {reason}; expected a file name in an existing folder "
                     "you may write into.")


def _driving(path: str) -> dict:
  return reference_lib.read_npz(path, "--driving_params", "a .npz of per-frame parameters "
                                "(e.g. written by --save_params)")


def _driving_audio(samples) -> np.ndarray:
  try:
    return audio_lib.load_audio(np.asarray(samples), sample_rate=contracts.SAMPLE_RATE,
                                allow_silent=True)
  except ValueError as e:
    raise InputError(f"--driving_params '{_DRIVING.value}' holds audio that cannot be used "
                     f"({e}); expected 16 kHz mono samples, as launch/prepare_videos.py writes.") \
        from None


def _speech(bars) -> np.ndarray | None:
  given = [f for f in (_AUDIO, _TEXT) if f.value is not None]
  if len(given) > 1:
    raise InputError("both --audio and --text were given; expected one source of speech.")
  if not given:
    if _DRIVING.value is None:
      raise InputError("no speech was given; expected --audio=FILE or --text=\"...\" (or "
                       "--driving_params=FILE for reenactment).")
    return None
  if _AUDIO.value is not None:
    return pipeline_lib.Pipeline.speech(_AUDIO.value, _MAX_SECONDS.value)
  bars.start("speech")
  try:
    spoken = speech_lib.synthesize(_TEXT.value, voice=_VOICE.value, rate=_RATE.value,
                                   engine="command" if _TTS_COMMAND.value else "auto",
                                   command=_TTS_COMMAND.value)
  except (ValueError, speech_lib.SpeechError) as e:   # AudioError is a ValueError; a bad
    raise InputError(f"--text: {e}") from None       # --voice or --rate is one too
  bars("speech", 1, 1)
  return pipeline_lib.Pipeline.speech(spoken.audio, _MAX_SECONDS.value)


def run() -> int:
  if _IMAGE.value is None or _OUT.value is None:
    raise InputError("--image and --out are required; e.g. --image=synthetic:3 "
                     "--text=\"Hello.\" --out=hello.mp4.")
  outs = _outputs(_OUT.value, _NUM_SAMPLES.value)
  for path in outs:
    _check_writable(path, "--out")
  for flag in (_SAVE_PARAMS, _CONTROLS_VIDEO, _SAVE_REFERENCE):
    if flag.value:
      _check_writable(flag.value, f"--{flag.name}")
  options = gen_flags.options(num_samples=_NUM_SAMPLES.value, seed=_SEED.value,
                              resolution=_RESOLUTION.value, max_seconds=_MAX_SECONDS.value)
  bars = progress_lib.Bars()
  driving = _driving(_DRIVING.value) if _DRIVING.value else None
  wave = _speech(bars)  # before the weights load: bad or overlong speech fails at once
  pipe = gen_flags.load_pipeline(need_motion=driving is None)
  pipe.check(options)
  ref = reference_lib.parse(_IMAGE.value, _PARAMS.value, pipe.resolution)
  if driving is not None:
    length = pipe.retarget(ref, driving, 1)["expression"].shape[1]
    need = audio_lib.num_samples_for_frames(length)
    if wave is None and "audio" in driving:
      # A prepared clip (launch/prepare_videos.py) carries its own speech: the video keeps it.
      wave = _driving_audio(driving["audio"])
    wave = (np.zeros(need, np.float32) if wave is None else
            np.pad(wave[:need], (0, max(0, need - wave.size))))
  else:
    length = audio_lib.num_frames(wave.size)
    wave = wave[:audio_lib.num_samples_for_frames(length)]
  size = pipe.output_resolution(options)
  result = pipe.write_videos(ref, wave if driving is None else None, options, outs, audio=wave,
                             controls_path=_CONTROLS_VIDEO.value, driving=driving,
                             progress=bars)
  for i, path in enumerate(_per_sample(_SAVE_PARAMS.value, options.num_samples)):
    # One sample's parameters, per frame [T, ...]: what --driving_params reads back.
    fileio.save_npz(path, **{k: np.asarray(v)[i] for k, v in result.params.items()})
  if _SAVE_REFERENCE.value:
    ref.save(_SAVE_REFERENCE.value)
  secs = result.num_frames / contracts.FPS
  timing = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
  for p in outs:
    print(f"wrote {p}: {result.num_frames} frames ({secs:.1f} s) at {size}x{size}, 24 fps, "
          f"with audio ({ref.name}; {timing})")
  if _CONTROLS_VIDEO.value:
    print(f"wrote {_CONTROLS_VIDEO.value}: the result beside its controls")
  return 0


main = cli.entry(run, errors=(InputError, video_io.VideoError), interrupted='no video was written.')


if __name__ == "__main__":
  cli.run(main)
