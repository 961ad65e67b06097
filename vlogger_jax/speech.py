"""Text to 16 kHz speech, with the time of every phoneme and word.

Engines (docs/audio.md has the longer version):

* "espeak": espeak-ng. Its library from the `espeakng-loader` wheel (libespeak-ng and its voice
  data, so `pip install` is enough), driven through ctypes in synchronous mode in a fresh child
  process per call (espeak_worker.py says why); its phoneme and word events give the timing.
  Without the wheel, the `espeak-ng` program on PATH, which gives no timing (empty phoneme and
  word lists).
* "command": any synthesizer the user has, from a command template such as
  "piper --model en.onnx --output_file {wav} < {text_file}"; no timing.
* "auto": "command" when a command is given, else "espeak".

The same text, voice, rate and pitch give bit-identical audio from the espeak engines.
"""

import dataclasses
import json
import os
import shlex
import shutil
import string
import subprocess
import sys
import tempfile

import numpy as np

from vlogger_jax import audio

SAMPLE_RATE = audio.SAMPLE_RATE
DEFAULT_VOICE = "en-us"
DEFAULT_RATE = 160  # Words per minute.
MIN_RATE, MAX_RATE = 80, 450  # espeakRATE_MINIMUM and espeakRATE_MAXIMUM.
MIN_PITCH, MAX_PITCH = 0, 100  # espeak-ng's base pitch scale; 50 is the voice's own.
ENGINES = ("auto", "espeak", "command")
COMMAND_PLACEHOLDERS = ("text_file", "wav", "voice", "rate")

_NO_ENGINE = ("`pip install espeakng-loader` (espeak-ng's library and voices), or install the "
              "espeak-ng program (`apt-get install espeak-ng` on Debian/Ubuntu, `brew install "
              "espeak-ng` on macOS), or pass a command template such as "
              "command='synth --out {wav} < {text_file}'")
_SEE_VOICES = "see speech.voices() for the voices there are"


class SpeechError(RuntimeError):
  """No speech synthesizer is available, or the one asked for failed."""


@dataclasses.dataclass(frozen=True)
class Speech:
  """Synthesized speech and its timing.

  audio: [S] float32 in [-1, 1] at SAMPLE_RATE = 16 kHz.
  phonemes: (phoneme, start_s, end_s) in time order, covering the speech without gaps from the first
    phoneme on; each ends where the next starts and the last at the end of the audio. Phonemes are
    espeak-ng's mnemonics ('h', '@', 'l', "'oU"): a leading ' or , marks primary or secondary
    stress, and '_' or '_:' is a pause. Empty when the engine gives no timing.
  words: (word, start_s, end_s) per spoken word, the word as written in the text ("12" for
    "twelve"), ending where its last phoneme ends. Empty when the engine gives no timing.
  engine: the engine that spoke: "espeak-library", "espeak-program" or "command".
  """
  audio: np.ndarray
  phonemes: list[tuple[str, float, float]]
  words: list[tuple[str, float, float]]
  engine: str

  @property
  def duration(self) -> float:
    """Length of the audio in seconds."""
    return self.audio.size / SAMPLE_RATE


def synthesize(text: str, *, engine: str = "auto", voice: str = DEFAULT_VOICE,
               rate: int = DEFAULT_RATE, pitch: int | None = None,
               command: str | None = None) -> Speech:
  """Speech for `text`: -> Speech (16 kHz float32 audio, phoneme and word times in seconds).

  engine: "auto" ("command" when `command` is given, else "espeak"), "espeak" (the library from the
    espeakng-loader wheel, else the espeak-ng program on PATH) or "command".
  voice: an espeak-ng voice, e.g. "en-us", "en-gb", "de", or with a variant, "en-us+f3" (voices()
    lists them); passed to a command template as {voice}.
  rate: speaking rate in words per minute, 80..450; passed to a command template as {rate}.
  pitch: espeak-ng base pitch 0..100 (50 is the voice's own); None keeps the voice's own.
  command: a command template for engine="command"; see docs/audio.md. It runs through `sh -c` in a
    temporary folder, with {text_file} (a UTF-8 file holding the text), {wav} (the audio file the
    command must write, any format ffmpeg reads), {voice} and {rate} replaced by shell-quoted values
    (so do not quote them again); `{{` and `}}` are literal braces.
  Raises audio.AudioError for text with nothing to speak, ValueError for a bad argument, and
  SpeechError when no engine is available or the engine fails (an unknown voice, a failing command).
  """
  _check_text(text)
  if engine not in ENGINES:
    raise ValueError(f"synthesize: unknown engine {engine!r}; expected one of {ENGINES}.")
  if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) \
      or not MIN_RATE <= rate <= MAX_RATE:
    raise ValueError(f"synthesize: rate {rate!r} is outside {MIN_RATE}..{MAX_RATE}; expected "
                     f"words per minute, e.g. {DEFAULT_RATE}.")
  if pitch is not None and (isinstance(pitch, bool) or not isinstance(pitch, (int, np.integer))
                            or not MIN_PITCH <= pitch <= MAX_PITCH):
    raise ValueError(f"synthesize: pitch {pitch!r} is outside {MIN_PITCH}..{MAX_PITCH}; expected "
                     "espeak-ng's base pitch (50 is the voice's own), or None.")
  if not isinstance(voice, str) or not voice.strip():
    raise ValueError(f"synthesize: voice {voice!r} is not a voice name; expected e.g. "
                     f"{DEFAULT_VOICE!r} ({_SEE_VOICES}).")
  if engine == "auto":
    engine = "command" if command is not None else "espeak"
  if engine == "command":
    if command is None:
      raise ValueError("synthesize: engine='command' needs command='...', a template that writes "
                       "{wav}, e.g. 'piper --model en.onnx --output_file {wav} < {text_file}'.")
    if pitch is not None:
      raise ValueError("synthesize: pitch is espeak-ng's setting and a command template has no "
                       "{pitch}; leave pitch=None with engine='command'.")
    speech = _speak_command(text, command, voice, int(rate))
  else:
    if command is not None:
      raise ValueError(f"synthesize: command is only for engine='command' or 'auto'; got "
                       f"engine={engine!r}.")
    library, pitch = _library(), None if pitch is None else int(pitch)
    if isinstance(library, tuple):
      speech = _speak_library(library, text, voice, int(rate), pitch)
    elif shutil.which("espeak-ng") is not None:
      speech = _speak_program(text, voice, int(rate), pitch)
    else:
      raise SpeechError(f"synthesize found no speech synthesizer ({library}, and espeak-ng is "
                        f"not on PATH); {_NO_ENGINE}.")
  if speech.audio.size == 0 or float(np.abs(speech.audio).max()) < audio.SILENCE_PEAK:
    raise audio.AudioError(f"synthesize produced only silence for {text[:60]!r}; expected text "
                           "with speakable words.")
  return speech


def voices() -> list[str]:
  """The espeak-ng voices, by language ("en-us", "en-gb", "de", ...): -> sorted list of names.

  From the wheel's library when it is installed, else from `espeak-ng --voices`. A voice takes a
  variant after '+', e.g. "en-us+f3" (`espeak-ng --voices=variant` lists them).
  """
  library = _library()
  if isinstance(library, tuple):
    return json.loads(_run_worker(library, "voices")[0])
  executable = shutil.which("espeak-ng")
  if executable is None:
    raise SpeechError(f"voices found no espeak-ng ({library}, and espeak-ng is not on "
                      f"PATH); {_NO_ENGINE}.")
  proc = subprocess.run([executable, "--voices"], capture_output=True, text=True, check=False,
                        stdin=subprocess.DEVNULL)
  if proc.returncode != 0:
    raise SpeechError(f"`espeak-ng --voices` failed ({_last_line(proc.stderr)}); expected the "
                      "espeak-ng program to list its voices.")
  # Columns: Pty Language Age/Gender VoiceName File Other Languages; the first line is the header.
  names = {line.split()[1] for line in proc.stdout.splitlines()[1:] if len(line.split()) > 1}
  return sorted(names)


# ---------------------------------------------------------------------------------------------
# The espeak-ng library (from the espeakng-loader wheel), in a child process.

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "espeak_worker.py")
_EVENT_WORD, _EVENT_PHONEME = 1, 7  # espeakEVENT_WORD and espeakEVENT_PHONEME.


def _library():
  """(library path, voice data path) from the espeakng-loader wheel; or why not, as a str."""
  try:
    import espeakng_loader  # pylint: disable=g-import-not-at-top  (optional at run time)
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
  except ImportError:
    return "the espeakng-loader wheel is not installed"
  except (RuntimeError, OSError) as e:
    return f"the espeakng-loader wheel is broken: {e}"


def _run_worker(paths, mode: str, *args, text: str = "") -> tuple[bytes, str]:
  """Runs espeak_worker.py in a fresh interpreter: -> (stdout, stderr); SpeechError on failure."""
  # -I -S: no site-packages or environment, so it starts fast and imports only the standard
  # library. A fresh process per call is what makes the library deterministic (espeak_worker.py).
  command = [sys.executable, "-I", "-S", _WORKER, mode, *paths, *map(str, args)]
  proc = subprocess.run(command, input=text.encode("utf-8"), capture_output=True, check=False)
  stderr = proc.stderr.decode("utf-8", "replace")
  if proc.returncode == 2:
    raise SpeechError(f"espeak-ng has no voice {args[0]!r}; {_SEE_VOICES}.")
  if proc.returncode != 0:
    raise SpeechError(f"espeak-ng's library failed (exit status {proc.returncode}: "
                      f"{_last_line(stderr)}); reinstall it with `pip install --force-reinstall "
                      "espeakng-loader`.")
  return proc.stdout, stderr


def _speak_library(paths, text: str, voice: str, rate: int, pitch: int | None) -> Speech:
  """libespeak-ng speaks in synchronous mode; its phoneme and word events give the timing."""
  out, stderr = _run_worker(paths, "speak", voice, rate, -1 if pitch is None else pitch,
                            text=text)
  header, _, data = out.partition(b"\n")
  try:
    info = json.loads(header)
  except ValueError:
    raise SpeechError("espeak-ng's library gave no readable result; expected a JSON header "
                      "line.") from None
  samples = np.frombuffer(data[:len(data) // 2 * 2], np.int16)
  phonemes, words = _timing(text, info["events"], samples.size, int(info["sample_rate"]))
  if not words or samples.size == 0:
    if stderr.strip():  # E.g. a voice whose dictionary the wheel lacks.
      raise SpeechError(f"espeak-ng spoke nothing with voice {voice!r} ({_last_line(stderr)}); "
                        "expected a voice with its dictionary.")
    raise audio.AudioError(f"synthesize found nothing to speak in {text[:60]!r}; expected text "
                           "with speakable words.")
  wave = audio.load_audio(samples, sample_rate=int(info["sample_rate"]), allow_silent=True)
  return Speech(audio=wave, phonemes=phonemes, words=words, engine="espeak-library")


def _timing(text: str, events, num_samples: int, rate: int):
  """Phoneme and word times in seconds from the library's events (times in samples at `rate`).

  A word runs from its first phoneme's start to its last's end (pauses excluded), so words and
  phonemes agree; the word event itself comes up to ~10 ms before the first phoneme.
  """
  starts = [(sample, label) for kind, sample, label, _, _ in events
            if kind == _EVENT_PHONEME and sample < num_samples]
  phonemes = []
  for i, (sample, label) in enumerate(starts):
    end = starts[i + 1][0] if i + 1 < len(starts) else num_samples
    phonemes.append((label, sample / rate, max(end, sample) / rate))
  marks = [(sample, position, length) for kind, sample, _, position, length in events
           if kind == _EVENT_WORD]
  words = []
  for i, (sample, position, length) in enumerate(marks):
    until = marks[i + 1][0] if i + 1 < len(marks) else num_samples + 1
    own = [(start, end) for label, start, end in phonemes
           if sample / rate <= start < until / rate and not label.startswith("_")]
    first = max(position - 1, 0)
    words.append((text[first:first + length], own[0][0] if own else sample / rate,
                  own[-1][1] if own else sample / rate))
  return phonemes, words


# ---------------------------------------------------------------------------------------------
# The espeak-ng program and command templates.


def _speak_program(text: str, voice: str, rate: int, pitch: int | None) -> Speech:
  """espeak-ng from PATH writes a wav in a temporary folder; it gives no phoneme timing."""
  with tempfile.TemporaryDirectory(prefix="vlogger_tts_") as tmp:
    text_path, wav_path = os.path.join(tmp, "text.txt"), os.path.join(tmp, "speech.wav")
    with open(text_path, "w", encoding="utf-8") as f:
      f.write(text)
    # Text goes through a file, not argv, so that long text or text starting with '-' is safe.
    command = [shutil.which("espeak-ng"), "-b", "1", "-v", voice, "-s", str(rate)]
    command += [] if pitch is None else ["-p", str(pitch)]
    command += ["-w", wav_path, "-f", text_path]
    proc = subprocess.run(command, capture_output=True, text=True, errors="replace", check=False,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0 or not os.path.isfile(wav_path) or os.path.getsize(wav_path) == 0:
      raise SpeechError(f"espeak-ng could not speak with voice {voice!r} "
                        f"({_last_line(proc.stderr)}); {_SEE_VOICES}.")
    wave = audio.load_audio(wav_path, allow_silent=True)
  return Speech(audio=wave, phonemes=[], words=[], engine="espeak-program")


def _speak_command(text: str, template: str, voice: str, rate: int) -> Speech:
  """Runs a command template through `sh -c` in a temporary folder and loads the {wav} it wrote."""
  try:
    fields = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
  except ValueError as e:
    raise ValueError(f"synthesize: command template {template!r} is malformed ({e}); write "
                     "literal braces as {{ and }}.") from None
  unknown = sorted(fields - set(COMMAND_PLACEHOLDERS))
  if unknown:
    raise ValueError(f"synthesize: command template {template!r} has unknown placeholders "
                     f"{unknown}; expected only {{text_file}}, {{wav}}, {{voice}} and {{rate}}.")
  if "wav" not in fields:
    raise ValueError(f"synthesize: command template {template!r} has no {{wav}}; expected the "
                     "command to write its audio to {wav}, e.g. '... --output_file {wav}'.")
  with tempfile.TemporaryDirectory(prefix="vlogger_tts_") as tmp:
    text_path, wav_path = os.path.join(tmp, "text.txt"), os.path.join(tmp, "speech.wav")
    with open(text_path, "w", encoding="utf-8") as f:
      f.write(text)
    line = template.format(text_file=shlex.quote(text_path), wav=shlex.quote(wav_path),
                           voice=shlex.quote(voice), rate=shlex.quote(str(rate)))
    # Through the shell, so that templates may redirect (< {text_file}) and pipe; every value
    # put in is quoted, so paths and voices are single words.
    proc = subprocess.run(["sh", "-c", line], cwd=tmp, capture_output=True, text=True,
                          errors="replace", check=False, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
      raise SpeechError(f"The speech command {template!r} failed with exit status "
                        f"{proc.returncode} ({_last_line(proc.stderr)}).")
    if not os.path.isfile(wav_path) or os.path.getsize(wav_path) == 0:
      raise SpeechError(f"The speech command {template!r} wrote nothing to {{wav}} "
                        f"({_last_line(proc.stderr)}); expected it to write an audio file there.")
    try:
      wave = audio.load_audio(wav_path, allow_silent=True)
    except audio.AudioError as e:
      raise SpeechError(f"The speech command {template!r} wrote {{wav}} but it is not usable "
                        f"audio ({str(e).rstrip('.')}).") from None
  return Speech(audio=wave, phonemes=[], words=[], engine="command")


def _check_text(text) -> None:
  if not isinstance(text, str):
    raise audio.AudioError(f"synthesize got {type(text).__name__}, not text; expected a str of "
                           "words to speak.")
  if not text.strip():
    raise audio.AudioError("synthesize got empty text; expected at least one word to speak.")
  if "\0" in text:
    raise audio.AudioError("synthesize got text with a NUL character; expected plain text.")


def _last_line(stderr: str) -> str:
  """The last non-empty line of a program's stderr, shortened: one phrase for an error message."""
  lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
  return lines[-1][:160] if lines else "no message on stderr"
