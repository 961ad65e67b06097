"""One utterance (or the voice list) from libespeak-ng, in a child process of vlogger_jax.speech.

libespeak-ng keeps synthesis state in C statics that survive between utterances and even
espeak_Terminate (the pitch-flutter phase in wavegen.c, amplitude and cycle counters), so in one
process the same text comes out a few samples different every time. A fresh process per utterance
starts from the same state, so speech.synthesize is deterministic, and a crash in the C library
cannot take the caller down. This file uses only the standard library and is run as a script,
`python -I -S espeak_worker.py MODE LIBRARY DATA [VOICE RATE PITCH]`, so it starts in ~30 ms:

* MODE "speak": the UTF-8 text on stdin; stdout is one JSON line {"sample_rate": int, "events":
  [[kind, sample, label, text_position, length], ...]} (kind 1 a word, 7 a phoneme), then the
  samples as native-endian int16. PITCH -1 keeps the voice's own.
* MODE "voices": stdout is a JSON list of voice names that select a voice.

Exit status 2: no such voice; 3: the library or its data failed; 4: synthesis failed; the reason
is the last line on stderr.
"""

import ctypes
import json
import sys

# speak_lib.h, ESPEAK_API_REVISION 12.
AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
INITIALIZE_DONT_EXIT = 0x8000  # Return -1 when the voice data is missing, instead of exit().
CHARS_UTF8 = 1
POS_CHARACTER = 1
EE_OK = 0
RATE, PITCH = 1, 3  # espeak_PARAMETER values.
EVENT_LIST_TERMINATED, EVENT_WORD, EVENT_PHONEME = 0, 1, 7


class EventId(ctypes.Union):
  """The `id` union of espeak_EVENT: 8 bytes, pointer-aligned."""
  _fields_ = [("number", ctypes.c_int),      # WORD and SENTENCE events: the word's number.
              ("name", ctypes.c_char_p),     # MARK and PLAY events.
              ("string", ctypes.c_char * 8)]  # PHONEME events: the mnemonic, NUL-ended if short.


class Event(ctypes.Structure):
  """espeak_EVENT: 40 bytes on x86-64 and arm64, with `id` at offset 32 after user_data."""
  _fields_ = [("type", ctypes.c_int),
              ("unique_identifier", ctypes.c_uint),
              ("text_position", ctypes.c_int),   # 1-based, in characters of the text.
              ("length", ctypes.c_int),          # WORD events: the word's length in characters.
              ("audio_position", ctypes.c_int),  # Milliseconds, truncated.
              ("sample", ctypes.c_int),          # The same time in samples at the library's rate.
              ("user_data", ctypes.c_void_p),
              ("id", EventId)]


class Voice(ctypes.Structure):
  """espeak_VOICE."""
  _fields_ = [("name", ctypes.c_char_p),
              ("languages", ctypes.c_void_p),  # (priority byte, NUL-ended name) pairs, then NUL.
              ("identifier", ctypes.c_char_p),
              ("gender", ctypes.c_ubyte),
              ("age", ctypes.c_ubyte),
              ("variant", ctypes.c_ubyte),
              ("xx1", ctypes.c_ubyte),
              ("score", ctypes.c_int),
              ("spare", ctypes.c_void_p)]


SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                 ctypes.POINTER(Event))


def _fail(status: int, message: str):
  sys.stderr.write(message + "\n")
  sys.exit(status)


def _load(library_path: str, data_path: str):
  """The library with its signatures declared, initialised; -> (lib, sample_rate)."""
  try:
    lib = ctypes.CDLL(library_path)
  except OSError as e:
    _fail(3, f"cannot load {library_path}: {e}")
  signatures = {
      "espeak_Initialize": ([ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int],
                            ctypes.c_int),
      "espeak_SetSynthCallback": ([SynthCallback], None),
      "espeak_SetVoiceByName": ([ctypes.c_char_p], ctypes.c_int),
      "espeak_SetVoiceByProperties": ([ctypes.POINTER(Voice)], ctypes.c_int),
      "espeak_SetParameter": ([ctypes.c_int, ctypes.c_int, ctypes.c_int], ctypes.c_int),
      "espeak_Synth": ([ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                        ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint),
                        ctypes.c_void_p], ctypes.c_int),
      "espeak_Synchronize": ([], ctypes.c_int),
      "espeak_ListVoices": ([ctypes.POINTER(Voice)], ctypes.POINTER(ctypes.POINTER(Voice))),
  }
  for name, (argtypes, restype) in signatures.items():
    function = getattr(lib, name)
    function.argtypes, function.restype = argtypes, restype
  # buflength 0: the default 60 ms per callback. path: the espeak-ng-data folder itself.
  rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(),
                               INITIALIZE_PHONEME_EVENTS | INITIALIZE_DONT_EXIT)
  if rate <= 0:
    _fail(3, f"espeak_Initialize failed with the voice data in {data_path}")
  # espeak-ng seeds its own random generator (the noise of Klatt voices and of some variants, e.g.
  # "+f2") from the clock, so without a fixed seed such voices change from one second to the next.
  if hasattr(lib, "espeak_ng_SetRandSeed"):
    lib.espeak_ng_SetRandSeed.argtypes, lib.espeak_ng_SetRandSeed.restype = [ctypes.c_long], None
    lib.espeak_ng_SetRandSeed(0)
  return lib, rate


def _set_voice(lib, voice: bytes) -> bool:
  """Selects a voice as the espeak-ng program does: by name or file, else by language."""
  if lib.espeak_SetVoiceByName(voice) == EE_OK:
    return True
  spec = Voice()
  spec.languages = ctypes.cast(ctypes.c_char_p(voice), ctypes.c_void_p).value
  return lib.espeak_SetVoiceByProperties(ctypes.byref(spec)) == EE_OK


def speak(lib, sample_rate: int, voice: str, rate: int, pitch: int) -> None:
  chunks, events, failures = [], [], []

  def on_synth(wav, count, event_list):
    try:
      if wav and count > 0:
        chunks.append(ctypes.string_at(wav, count * ctypes.sizeof(ctypes.c_short)))
      i = 0
      while event_list[i].type != EVENT_LIST_TERMINATED:
        event = event_list[i]
        if event.type == EVENT_PHONEME:
          label = event.id.string.split(b"\0", 1)[0].decode("utf-8", "replace")
          events.append([EVENT_PHONEME, event.sample, label, 0, 0])
        elif event.type == EVENT_WORD:
          events.append([EVENT_WORD, event.sample, "", event.text_position, event.length])
        i += 1
      return 0
    except Exception as e:  # pylint: disable=broad-except  (must not unwind through C)
      failures.append(repr(e))
      return 1  # Abort synthesis.

  callback = SynthCallback(on_synth)
  lib.espeak_SetSynthCallback(callback)
  if not _set_voice(lib, voice.encode("utf-8")):
    _fail(2, f"no voice {voice!r}")
  lib.espeak_SetParameter(RATE, rate, 0)
  if pitch >= 0:
    lib.espeak_SetParameter(PITCH, pitch, 0)
  text = sys.stdin.buffer.read()
  status = lib.espeak_Synth(text, len(text) + 1, 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
  lib.espeak_Synchronize()
  if failures or status != EE_OK:
    _fail(4, f"espeak_Synth failed (status {status}; {'; '.join(failures) or 'no exception'})")
  out = sys.stdout.buffer
  out.write(json.dumps({"sample_rate": sample_rate, "events": events}).encode() + b"\n")
  out.write(b"".join(chunks))
  out.flush()


def voices(lib) -> None:
  names = set()
  table = lib.espeak_ListVoices(None)
  i = 0
  while table[i]:
    voice = table[i].contents
    # The first language, after its priority byte, selects the voice; else its file name does.
    first = ctypes.string_at(voice.languages + 1)
    names.add((first if first and _set_voice(lib, first) else voice.identifier).decode())
    i += 1
  sys.stdout.write(json.dumps(sorted(names)) + "\n")


def main(argv) -> None:
  mode, library_path, data_path = argv[:3]
  lib, sample_rate = _load(library_path, data_path)
  if mode == "voices":
    voices(lib)
  else:
    voice, rate, pitch = argv[3], int(argv[4]), int(argv[5])
    speak(lib, sample_rate, voice, rate, pitch)


if __name__ == "__main__":
  main(sys.argv[1:])
