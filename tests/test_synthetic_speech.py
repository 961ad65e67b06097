"""Tests for the synthetic talkers' speech: espeak-ng sentences, visemes, recording conditions."""

import time

import numpy as np
import pytest

from vlogger_jax import head as head_lib
from vlogger_jax import motion_eval
from vlogger_jax import speech as speech_lib
from vlogger_jax.data import acoustics
from vlogger_jax.data import pipelines
from vlogger_jax.data import sentences
from vlogger_jax.data import synthetic
from vlogger_jax.data import visemes

SR = 16000
FRAMES = 120  # 5 s: two or three sentences
OPEN_VOWELS = ("a", "aa", "A:", "A", "V", "0", "a#")


@pytest.fixture(scope="module")
def model():
  return head_lib.load_default()


@pytest.fixture(scope="module")
def talks():
  return {s: synthetic.clip_speech(s, FRAMES) for s in (0, 1, 2, synthetic.HELD_OUT_SEEDS)}


@pytest.fixture(scope="module")
def plans(model):
  return {s: synthetic.plan_clip(s, FRAMES, 32, model) for s in (0, 1, 2)}


def _power(x, a, b):
  seg = x[int(a * SR):int(b * SR)].astype(np.float64)
  return float(np.mean(seg ** 2)) if seg.size else 0.0


def test_phoneme_times_line_up_with_the_audio(talks):
  for talk in talks.values():
    x = talk.clean
    speaking = [(a, b) for lab, a, b in talk.phonemes if not visemes.is_pause(lab)]
    speech_power = np.mean([_power(x, a, b) for a, b in speaking])
    # Every vowel holds energy inside its interval; every pause (its inner part) is silent.
    for lab, a, b in talk.phonemes:
      if visemes.is_vowel(lab) and b - a >= 0.05:
        assert _power(x, a, b) > 0.2 * speech_power, (lab, a, b)
      if visemes.is_pause(lab) and b - a >= 0.06:
        assert _power(x, a + 0.015, b - 0.015) < 0.005 * speech_power, (lab, a, b)
    # Nearly all the energy lies inside the reported non-pause intervals.
    inside = sum(_power(x, a, b) * (b - a) for a, b in speaking)
    assert inside > 0.98 * float(np.sum(x.astype(np.float64) ** 2)) / SR
    # Shifting the reported times by 80 ms breaks the alignment: the test can fail.
    shifted = [(lab, a + 0.08, b + 0.08) for lab, a, b in talk.phonemes]
    gaps = [(a, b) for lab, a, b in shifted if visemes.is_pause(lab) and b - a >= 0.06]
    assert max(_power(x, a + 0.015, b - 0.015) for a, b in gaps) > 0.005 * speech_power


def test_bilabials_close_open_vowels_open_silence_closes(plans, talks, model):
  opens = []
  for seed, plan in plans.items():
    opening = motion_eval.mouth_opening(model, plan.shape, plan.expression)
    phonemes = talks[seed].phonemes
    bilabials = [(a, b) for lab, a, b in phonemes if visemes.is_bilabial(lab)]
    assert len(bilabials) >= 3
    assert motion_eval.bilabial_closure(opening, bilabials) == 1.0
    frame = lambda t: min(int(t * synthetic.FPS), FRAMES - 1)
    # The widest frame of each stressed open vowel (its middle may already close for a /p b m/).
    opens += [opening[frame(a):frame(b) + 1].max() for lab, a, b in phonemes
              if visemes.split_label(lab) == ("'", visemes.split_label(lab)[1])
              and visemes.split_label(lab)[1] in OPEN_VOWELS and b - a >= 0.08]
    pauses = [(a, b) for lab, a, b in [("_", -1.0, phonemes[0][1])] + phonemes
              if visemes.is_pause(lab) and b - a >= 0.3]
    assert pauses
    for a, b in pauses:  # the middle of every long silence has the mouth shut
      assert opening[frame(max(a, 0.0) + 0.5 * (b - max(a, 0.0)))] < motion_eval.LIPS_CLOSED_MM
    # A human range of speech: the widest opening is 10-25 mm.
    assert 10.0 < opening.max() < 25.0
  assert len(opens) >= 3 and min(opens) > 8.0, opens  # stressed open vowels open the jaw >= 8 mm


def _onsets(phonemes):
  """Starts of speech after a pause of >= 0.25 s (the clip's start counts as one)."""
  out = [phonemes[0][1]] if phonemes[0][1] >= 0.25 else []
  for prev, cur in zip(phonemes, phonemes[1:]):
    if visemes.is_pause(prev[0]) and prev[2] - prev[1] >= 0.25 and not visemes.is_pause(cur[0]) \
        and not visemes.is_bilabial(cur[0]):
      out.append(cur[1])
  return out


def test_the_mouth_moves_ahead_of_the_sound(talks):
  step = 0.002
  for talk in talks.values():
    duration = talk.audio.size / SR
    t = np.arange(0, duration, step)
    jaw = visemes.articulation(talk.phonemes, t, duration)[:, 0]
    onsets = _onsets(talk.phonemes)
    assert onsets
    for onset in onsets:
      # The mouth starts to open (10 % of the opening 30 ms into the sound) 50-150 ms early.
      ref = jaw[int((onset + 0.03) / step)]
      i = int(onset / step)
      while i > 0 and jaw[i] > 0.1 * ref:
        i -= 1
      assert 0.05 <= onset - i * step <= 0.15, (onset, onset - i * step)
    # Without anticipation or lead, the same curve starts moving later.
    late = visemes.articulation(talk.phonemes, t, duration, anticipation_s=0.02, lead_s=0.0)[:, 0]
    k = int(onsets[-1] / step)
    assert jaw[k - 40:k].sum() > 2 * late[k - 40:k].sum()


def test_noisy_voices_are_deterministic_across_seconds():
  # espeak-ng seeds the noise of some variants from the clock; the worker fixes the seed.
  first = speech_lib.synthesize("Five purple pebbles.", voice="en-gb-scotland+f2", rate=150)
  time.sleep(1.1)
  again = speech_lib.synthesize("Five purple pebbles.", voice="en-gb-scotland+f2", rate=150)
  np.testing.assert_array_equal(first.audio, again.audio)


def test_speech_is_deterministic_and_held_out_clips_are_unheard(talks):
  again = synthetic.clip_speech(1, FRAMES)
  np.testing.assert_array_equal(again.audio, talks[1].audio)
  assert again.phonemes == talks[1].phonemes and again.text == talks[1].text
  assert talks[0].text != talks[1].text
  train_accents, train_variants = sentences.all_voices(held_out=False)
  test_accents, test_variants = sentences.all_voices(held_out=True)
  assert train_accents == test_accents and not set(train_variants) & set(test_variants)
  rng = np.random.default_rng(0)
  train = {sentences.sentence(rng) for _ in range(3000)}
  test = {sentences.sentence(rng, held_out=True) for _ in range(300)}
  assert len(train) > 2000 and len(test) > 150 and not train & test
  held = talks[synthetic.HELD_OUT_SEEDS]
  accent, variant = held.voice.name.split("+")
  assert accent in test_accents and variant in test_variants
  for seed in (0, 1, 2):
    accent, variant = talks[seed].voice.name.split("+")
    assert accent in train_accents and variant in train_variants


def test_the_viseme_table_knows_every_english_phoneme():
  rng = np.random.default_rng(3)
  for i, accent in enumerate(sentences.all_voices(False)[0]):
    text = " ".join(sentences.sentence(rng, held_out=bool(i % 2)) for _ in range(3))
    out = speech_lib.synthesize(text, voice=accent, rate=170)
    unknown = sorted({lab for lab, _, _ in out.phonemes if not visemes.known(lab)})
    assert not unknown, (accent, unknown)


def test_recording_conditions_vary_per_clip_and_are_deterministic(talks):
  conditions = [t.conditions for t in talks.values()]
  assert len({str(sorted(c.items())) for c in conditions}) == len(conditions)
  clean = talks[0].clean
  a, info = acoustics.augment(np.random.default_rng(5), clean)
  b, _ = acoustics.augment(np.random.default_rng(5), clean)
  np.testing.assert_array_equal(a, b)
  assert a.shape == clean.shape and a.dtype == np.float32 and np.abs(a).max() <= 1.0
  assert 10 ** (-20.5 / 20) < np.abs(a).max() < 10 ** (-0.9 / 20)
  assert not np.allclose(a / np.abs(a).max(), clean / np.abs(clean).max(), atol=1e-2)
  # Every kind of noise is unit variance; reverberation adds a tail after the speech ends.
  for kind in acoustics.NOISES:
    assert abs(acoustics._noise(np.random.default_rng(0), 16000, kind).std() - 1) < 1e-6
  impulse = np.zeros(8000)
  impulse[100] = 1.0
  wet = acoustics._reverb(np.random.default_rng(1), impulse)
  assert np.abs(wet[2000:4000]).max() > 1e-4


def test_without_the_espeak_library_the_generator_says_so(monkeypatch):
  silent = speech_lib.Speech(audio=np.full(1600, 0.1, np.float32), phonemes=[], words=[],
                             engine="espeak-program")
  monkeypatch.setattr(speech_lib, "synthesize", lambda *a, **k: silent)
  with pytest.raises(speech_lib.SpeechError, match="pip install espeakng-loader"):
    synthetic.clip_speech(0, 24)


def test_bilabial_intervals_are_recomputed_from_the_seed(talks, plans):
  plan = plans[1]
  got = synthetic.bilabial_intervals(plan.clip_id, FRAMES, plan.audio)
  assert got == [(a, b) for lab, a, b in talks[1].phonemes if visemes.is_bilabial(lab)]
  assert synthetic.bilabial_intervals("my-clip", FRAMES, plan.audio) is None
  with pytest.raises(ValueError, match="rebuild it"):
    synthetic.bilabial_intervals(plans[2].clip_id, FRAMES, plan.audio)
  assert np.isnan(motion_eval.bilabial_closure(np.zeros(FRAMES), [(99.0, 99.1)]))
  assert motion_eval.bilabial_closure(np.full(FRAMES, 5.0), [(1.0, 1.1)]) == 0.0


def test_the_tiny_dataset_is_built_on_this_speech(synthetic_tiny):
  # The TFDS builder's test records are the held-out seeds' clips: the same audio as clip_speech
  # recomputes (what launch/eval_motion.py relies on), spoken by held-out voices.
  _, path = synthetic_tiny
  records = pipelines.open_records(path, "test")
  assert len(records)
  for i in range(len(records)):
    rec = records[i]
    clip_id = rec["id"].decode() if isinstance(rec["id"], bytes) else rec["id"]
    seed = int(clip_id.rsplit("-", 1)[1])
    assert seed >= synthetic.HELD_OUT_SEEDS
    frames = len(rec["expression"])
    assert synthetic.bilabial_intervals(rec["id"], frames, rec["audio"]) is not None
    voice = synthetic.clip_speech(seed, frames).voice.name.split("+")
    assert voice[1] in sentences.all_voices(held_out=True)[1]
