"""Tests for vlogger_jax.speech: the espeak-ng library from the wheel, the espeak-ng program, and
command templates, all run for real."""

import shlex
import shutil
import sys

import numpy as np
import pytest

from vlogger_jax import audio
from vlogger_jax import speech

HAS_PROGRAM = shutil.which("espeak-ng") is not None
SENTENCE = "Hello there. This sentence checks the speech synthesizer."

# A stand-in synthesizer for command templates: writes a 440 Hz sine to argv[1] with the wave
# module, one tenth of a second per word of the text file (argv[2], or stdin when there is none).
_SINE_SCRIPT = """\
import math, struct, sys, wave
text = open(sys.argv[2], encoding="utf-8").read() if len(sys.argv) > 2 else sys.stdin.read()
n = 1600 * len(text.split())
with wave.open(sys.argv[1], "wb") as f:
  f.setnchannels(1); f.setsampwidth(2); f.setframerate(16000)
  f.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 16000)))
                         for i in range(n)))
"""


@pytest.fixture(name="sine_command")
def _sine_command(tmp_path):
  script = tmp_path / "sine.py"
  script.write_text(_SINE_SCRIPT)
  return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"


def _hide_wheel(monkeypatch):
  monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # `import` now raises ImportError.


def _bare(label):
  return label.lstrip("',")  # Drop espeak-ng's stress marks.


# ---------------------------------------------------------------------------------------------
# The library engine.


def test_library_speaks_with_phoneme_and_word_timing():
  s = speech.synthesize(SENTENCE)
  assert s.engine == "espeak-library"
  assert s.audio.dtype == np.float32 and s.audio.ndim == 1
  assert 1.5 < s.duration < 8.0  # Nine words at 160 words per minute is about three seconds.
  assert 0.05 < np.abs(s.audio).max() <= 1.0
  assert audio.mel_features(s.audio).shape == (audio.num_frames(s.audio.size), 256)
  starts = np.array([start for _, start, _ in s.phonemes])
  ends = np.array([end for _, _, end in s.phonemes])
  assert len(s.phonemes) > 20 and np.all(np.diff(starts) >= 0) and np.all(ends >= starts)
  np.testing.assert_array_equal(ends[:-1], starts[1:])  # Contiguous.
  assert starts[0] >= 0 and ends[-1] <= s.duration + 1e-9
  assert [w for w, _, _ in s.words] == ["Hello", "there", "This", "sentence", "checks", "the",
                                        "speech", "synthesizer"]
  for (_, start, end), (_, next_start, _) in zip(s.words, s.words[1:] + [("", s.duration, 0)]):
    assert 0 <= start < end <= next_start <= s.duration


def test_library_phonemes_of_hello_world():
  s = speech.synthesize("hello world")
  spoken = [_bare(p) for p, _, _ in s.phonemes if not p.startswith("_")]
  assert spoken == ["h", "@", "l", "oU", "w", "3:", "l", "d"]
  hello, world = s.words
  assert hello[0] == "hello" and world[0] == "world"
  assert hello[2] == world[1]  # "hello" ends where the w of "world" starts.
  # Non-ASCII text: word positions are in characters.
  assert [w for w, _, _ in speech.synthesize("café naïve world").words] == ["café", "naïve",
                                                                           "world"]


def test_library_is_deterministic():
  first = speech.synthesize(SENTENCE)
  speech.synthesize("Something else, to move any state the synthesizer keeps.", voice="en-gb",
                    rate=300)
  second = speech.synthesize(SENTENCE)
  np.testing.assert_array_equal(first.audio, second.audio)
  assert first.phonemes == second.phonemes and first.words == second.words


def test_voice_rate_and_pitch_change_the_speech():
  base = speech.synthesize("hello world, how are you today")
  slow = speech.synthesize("hello world, how are you today", rate=100)
  fast = speech.synthesize("hello world, how are you today", rate=400)
  assert fast.duration < base.duration < slow.duration
  assert slow.phonemes[-1][2] > fast.phonemes[-1][2]
  british = speech.synthesize("hello world, how are you today", voice="en-gb")
  assert british.audio.size != base.audio.size or not np.array_equal(british.audio, base.audio)
  high = speech.synthesize("hello world, how are you today", pitch=90)
  assert high.audio.size != base.audio.size or not np.array_equal(high.audio, base.audio)
  assert speech.synthesize("hello", voice="en-us+f3").duration > 0.2  # A variant.


def test_voices_lists_selectable_voices():
  names = speech.voices()
  assert names == sorted(names) and {"en-us", "en-gb", "de", "fr-fr"} <= set(names)


# ---------------------------------------------------------------------------------------------
# The espeak-ng program, when the wheel is not importable.


@pytest.mark.skipif(not HAS_PROGRAM, reason="the espeak-ng program is not on PATH")
def test_program_fallback_speaks_without_timing(monkeypatch):
  _hide_wheel(monkeypatch)
  s = speech.synthesize(SENTENCE, engine="espeak")
  assert s.engine == "espeak-program" and s.phonemes == [] and s.words == []
  assert 1.5 < s.duration < 8.0 and 0.05 < np.abs(s.audio).max() <= 1.0
  np.testing.assert_array_equal(s.audio, speech.synthesize(SENTENCE).audio)
  assert speech.synthesize("hello world", rate=400).duration < s.duration
  assert "en-us" in speech.voices()
  with pytest.raises(speech.SpeechError, match="no voice 'xx-no-such-voice'|'xx-no-such-voice'"):
    speech.synthesize("hello", voice="xx-no-such-voice")


def test_no_engine_says_how_to_get_one(tmp_path, monkeypatch):
  _hide_wheel(monkeypatch)
  monkeypatch.setenv("PATH", str(tmp_path))  # A PATH with nothing on it.
  for call in (lambda: speech.synthesize("hello"), speech.voices):
    with pytest.raises(speech.SpeechError) as info:
      call()
    message = str(info.value)
    assert "pip install espeakng-loader" in message and "apt-get install espeak-ng" in message
    assert "command=" in message and message.count(". ") == 0


# ---------------------------------------------------------------------------------------------
# Command templates.


def test_command_template_writes_the_audio(sine_command):
  s = speech.synthesize("one two three four five", command=f"{sine_command} {{wav}} {{text_file}}")
  assert s.engine == "command" and s.phonemes == [] and s.words == []
  assert s.duration == pytest.approx(0.5) and np.abs(s.audio).max() == pytest.approx(0.244, 0.01)
  # Through the shell: redirection works, and placeholders arrive quoted, as single words.
  s = speech.synthesize("one two", engine="command",
                        command=f"{sine_command} {{wav}} < {{text_file}}")
  assert s.duration == pytest.approx(0.2)
  s = speech.synthesize("one", voice="it's a voice", rate=200,
                        command=f"test {{voice}} = \"it's a voice\" && test {{rate}} = 200 && "
                                f"{sine_command} {{wav}} {{text_file}}")
  assert s.duration == pytest.approx(0.1)


def test_command_template_errors(sine_command):
  with pytest.raises(ValueError, match=r"has no \{wav\}"):
    speech.synthesize("hello", command=f"{sine_command} out.wav {{text_file}}")
  with pytest.raises(ValueError, match=r"unknown placeholders \['model'\]"):
    speech.synthesize("hello", command=f"{sine_command} {{wav}} {{model}}")
  with pytest.raises(ValueError, match="malformed"):
    speech.synthesize("hello", command=f"{sine_command} {{wav")
  with pytest.raises(ValueError, match="needs command="):
    speech.synthesize("hello", engine="command")
  with pytest.raises(ValueError, match="pitch"):
    speech.synthesize("hello", command=f"{sine_command} {{wav}}", pitch=60)
  with pytest.raises(ValueError, match="only for engine='command'"):
    speech.synthesize("hello", engine="espeak", command=f"{sine_command} {{wav}}")
  with pytest.raises(speech.SpeechError,
                     match=r"failed with exit status 3 \(the model file is missing\)\.$"):
    speech.synthesize("hello", command="echo starting >&2; echo the model file is missing >&2; "
                                       "exit 3 # {wav}")
  with pytest.raises(speech.SpeechError, match=r"wrote nothing to \{wav\}"):
    speech.synthesize("hello", command="true {wav}")
  with pytest.raises(speech.SpeechError, match="not usable audio"):
    speech.synthesize("hello", command="echo not audio > {wav}")


# ---------------------------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_text_is_rejected(text):
  with pytest.raises(audio.AudioError, match="empty text"):
    speech.synthesize(text)


@pytest.mark.parametrize("text", ["...", "?!", " , - "])
def test_text_with_nothing_speakable_is_rejected(text):
  with pytest.raises(audio.AudioError, match="nothing to speak"):
    speech.synthesize(text)


def test_bad_arguments_are_rejected():
  with pytest.raises(speech.SpeechError, match=r"no voice 'xx-no-such-voice'.*speech\.voices\(\)"):
    speech.synthesize("hello", voice="xx-no-such-voice")
  for rate in (79, 451, 160.0, True):
    with pytest.raises(ValueError, match=r"outside 80\.\.450"):
      speech.synthesize("hello", rate=rate)
  with pytest.raises(ValueError, match=r"pitch 101 is outside 0\.\.100"):
    speech.synthesize("hello", pitch=101)
  with pytest.raises(ValueError, match="unknown engine 'festival'"):
    speech.synthesize("hello", engine="festival")
  with pytest.raises(ValueError, match="not a voice name"):
    speech.synthesize("hello", voice=" ")
  with pytest.raises(audio.AudioError, match="not text"):
    speech.synthesize(b"hello")
  with pytest.raises(audio.AudioError, match="NUL"):
    speech.synthesize("hello\0world")
