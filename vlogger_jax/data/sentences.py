"""English sentences and espeak-ng voices for the synthetic talkers, drawn from a seed.

The sentences come from a small grammar (templates over word lists kept in this file, so nothing
is downloaded): statements, questions, commands and reported speech with names, places, numbers
and adjectives, chosen so that every viseme of data/visemes.py is frequent (bilabials, labiodentals,
rounded and spread vowels). The voices are espeak-ng's English accents, each with one of its
voice variants, a base pitch and a rate.

Held-out split: a clip is either a training clip or a held-out one (`held_out`, the builders' test
seeds). Held-out clips speak sentences from templates and words that training clips never use
(every fifth word of each list and the last templates are reserved), so no held-out sentence can
occur in training, and they speak with voice variants (the speakers) reserved for them, in the
same eight English accents (a dialect changes how phonemes are realised, which a model learns from
examples; the test is new speakers and new sentences); pitch and rate share their ranges.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

# Every fifth word (index % 5 == 4) of each list is reserved for held-out sentences.
_RESERVE_EVERY = 5

_WORDS = {
    "name": "Peter Mary Bob Emma Martin Sophie Paul Fiona Victor Ruth Ben Olivia Frank Molly "
            "David Beth Hugo Vera Tom Maya Philip Laura Sam Monica Oliver Bella Steve June "
            "Walter Ivy Max Nora Felix Amber Louis Rosa Mike Wendy Simon Eva",
    "noun": "book window garden bottle mirror pebble moon river basket bicycle lamp piano "
            "violin umbrella ferry muffin ribbon map pumpkin boat feather marble photo puppy "
            "bubble table coffee apple wheel flower mountain voice bridge office valley pillow "
            "bamboo balloon fountain village morning",
    "plural": "books windows apples pebbles boats photos flowers bottles maps balloons movies "
              "rivers muffins puppies beaches coins shoes bubbles leaves boxes",
    "adjective": "blue purple smooth bright big warm soft quiet bumpy empty famous friendly "
                 "brave humble heavy old polite brown shiny velvet wooden yellow mild playful "
                 "obvious funny proud simple vivid frozen",
    "verb_past": "bought moved found pushed painted opened borrowed fixed brought filled "
                 "folded washed wrapped carried packed picked dropped covered measured "
                 "polished loved mentioned removed buried followed",
    "verb": "buy move find push paint open borrow fix bring fill fold wash wrap carry pack "
            "pick drop cover measure polish love mention remove bury follow",
    "adverb": "quickly slowly before maybe happily often softly early proudly calmly "
              "frankly boldly",
    "place": "the museum|the harbour|the market|the farm|the beach|the movie theatre|the "
             "bakery|the shop|the park|the school|the forest|the cave|the bus stop|the "
             "temple|the palace",
    "time": "on Monday|in the evening|every morning|before lunch|at five o'clock|last summer|"
            "after the movie|in February|by the weekend|tomorrow",
    "number": "two four five seven nine eleven twelve fifteen twenty ninety",
}
_TEMPLATES = (
    "{name} {verb_past} the {adjective} {noun} {time}.",
    "Did {name} {verb} the {noun} at {place}?",
    "Please {verb} the {adjective} {plural} {adverb}.",
    "{name} and {name} {verb_past} {number} {plural} at {place}.",
    "The {noun} by the {noun} looks {adjective} {time}.",
    "Why would {name} {verb} a {adjective} {noun}?",
    "I think {name} {verb_past} my {noun} {adverb}.",
    "We moved the {adjective} {noun} to {place} {time}.",
    "My brother {verb_past} {number} {adjective} {plural} for {name}.",
    "Maybe the {noun} is {adjective}, but the {noun} is {adjective}.",
    "{name} said, \"Bring me the {adjective} {noun}, please.\"",
    "Every {noun} in {place} was {adjective} and {adjective}.",
    "How many {plural} did you {verb} {time}?",
    "Before {time}, {name} {verb_past} a {noun} from {place}.",
    "The {adjective} {noun} fell off the {noun} {adverb}.",
    "Oh, you {verb_past} the {plural} {adverb}!",
    "Bob will {verb} {number} {plural}, and Mary will {verb} the {noun}.",
    "Look at the {adjective} {noun} near {place}.",
    "{name} often {verb_past} {plural} with a {adjective} {noun}.",
    # Reserved for held-out sentences.
    "Could you {verb} the {noun} before {name} comes back?",
    "The {plural} from {place} were {adjective}, said {name}.",
    "Nobody {verb_past} the {adjective} {noun} {time}.",
    "If {name} {verb_past} the {noun}, we would be {adjective}.",
)
_HELD_OUT_TEMPLATES = 4

# espeak-ng's English accents (their phonemes are the ones data/visemes.py maps), spoken on both
# sides of the split, and human-sounding voice variants (the speakers), the last ten of which are
# reserved for held-out clips: a held-out voice is a speaker never heard, in a known dialect.
_ACCENTS = ("en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-029",
            "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "f1", "f2", "f3", "klatt", "klatt2", "klatt3",
             "adam", "Alex", "Andy", "Annie", "anika", "aunty", "belinda", "benjamin", "caleb",
             "david", "ed", "edward", "grandma", "grandpa", "ian", "john", "linda", "max",
             "paul", "quincy", "rob", "robert", "shelby", "steph", "travis", "victor",
             "m6", "m7", "m8", "f4", "f5", "klatt4", "Andrea", "michel", "norbert", "zac")
_HELD_OUT_VARIANTS = 10
PITCH_RANGE = (25, 75)   # espeak-ng's base pitch (50 is the voice's own)
RATE_RANGE = (130, 210)  # words per minute


@dataclasses.dataclass(frozen=True)
class Voice:
  """An espeak-ng voice: `name` ("en-gb+f3": accent + variant), base pitch 0..100, rate in wpm."""
  name: str
  pitch: int
  rate: int


def _split(items, held_out_count: int, held_out: bool):
  return items[-held_out_count:] if held_out else items[:-held_out_count]


def _words(kind: str, held_out: bool) -> list[str]:
  """The entries of a word list on one side of the split (places and times are phrases)."""
  items = _WORDS[kind].split("|" if "|" in _WORDS[kind] else None)
  return [w for i, w in enumerate(items) if (i % _RESERVE_EVERY == _RESERVE_EVERY - 1) == held_out]


def sentence(rng: np.random.Generator, held_out: bool = False) -> str:
  """One random sentence of the training (or held-out) side of the grammar."""
  template = _TEMPLATES[rng.integers(len(_TEMPLATES) - _HELD_OUT_TEMPLATES)] if not held_out \
      else _TEMPLATES[len(_TEMPLATES) - _HELD_OUT_TEMPLATES + rng.integers(_HELD_OUT_TEMPLATES)]
  out, rest = [], template
  while "{" in rest:
    head, _, tail = rest.partition("{")
    kind, _, rest = tail.partition("}")
    words = _words(kind, held_out)
    out += [head, words[rng.integers(len(words))]]
  text = re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", "".join(out + [rest]))
  return text[0].upper() + text[1:]


def voice(rng: np.random.Generator, held_out: bool = False) -> Voice:
  """A random voice (accent, variant, pitch, rate) of the training (or held-out) side."""
  accents = _ACCENTS
  variants = _split(_VARIANTS, _HELD_OUT_VARIANTS, held_out)
  name = f"{accents[rng.integers(len(accents))]}+{variants[rng.integers(len(variants))]}"
  return Voice(name=name, pitch=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
               rate=int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1)))


def all_voices(held_out: bool) -> tuple[list[str], list[str]]:
  """(accents, variants) of one side of the split (the accents are shared): for tests and docs."""
  return list(_ACCENTS), list(_split(_VARIANTS, _HELD_OUT_VARIANTS, held_out))
