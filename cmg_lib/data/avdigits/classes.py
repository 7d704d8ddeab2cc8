"""The event classes of AV-Digits format 3: two-word numbers ("forty-two"), and the extractors' word vocabulary.

A class is a number 21..99 that is not a multiple of ten (72 possible): it is *said* as two words (a tens word and a
unit word), *written* as two handwritten digits side by side, and *named* in a sentence. The first ``n`` classes
are taken in diagonal order (tens index t, unit index (t + d) mod 9 for d = 0, 1, ...), so every tens word and every
unit digit occurs about equally often whatever ``n``; 28 (AVE's class count) is the default.

The frozen audio extractor is trained on a different task: recognising *isolated* words (the 28 number words
"zero".."nineteen", "twenty".."ninety", six other words, or noise) spoken by voices no downstream split uses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_CLASSES = 28
MIN_CLASSES = 20
UNIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEEN_WORDS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
              "nineteen")
TENS_WORDS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")   # tens digit 2..9
OFFSCREEN_WORDS = ("hmm", "okay", "yes", "hello", "well", "right")
# Audio vocabulary: every word the banks hold; the extractor's task is to tell them (and noise) apart.
WORDS = UNIT_WORDS + TEEN_WORDS + TENS_WORDS + OFFSCREEN_WORDS
NOISE_WORD = len(WORDS)                 # extractor class of a segment without speech
MAX_CLASSES = len(TENS_WORDS) * 9


def word_id(word: str) -> int:
    return WORDS.index(word)


@dataclass(frozen=True)
class ClassSet:
    """The first ``count`` two-word numbers in diagonal order; arrays are indexed by class id."""

    count: int = DEFAULT_CLASSES

    def __post_init__(self):
        if not MIN_CLASSES <= int(self.count) <= MAX_CLASSES:
            raise ValueError(f"classes must be between {MIN_CLASSES} and {MAX_CLASSES}, got {self.count}")

    @property
    def numbers(self) -> np.ndarray:
        pairs = [(t, (t + d) % 9 + 1) for d in range(9) for t in range(len(TENS_WORDS))]
        return np.asarray([(t + 2) * 10 + u for t, u in pairs[: self.count]], np.int64)

    @property
    def tens_digit(self) -> np.ndarray:
        return self.numbers // 10

    @property
    def unit_digit(self) -> np.ndarray:
        return self.numbers % 10

    @property
    def tens_word(self) -> np.ndarray:
        """Vocabulary id (``WORDS``) of each class's first spoken word."""
        return np.asarray([word_id(TENS_WORDS[t - 2]) for t in self.tens_digit], np.int64)

    @property
    def unit_word(self) -> np.ndarray:
        return np.asarray([word_id(UNIT_WORDS[u]) for u in self.unit_digit], np.int64)

    @property
    def spoken(self) -> list[str]:
        """Each class as said and written in sentences: 'forty two'."""
        return [f"{TENS_WORDS[t - 2]} {UNIT_WORDS[u]}" for t, u in zip(self.tens_digit, self.unit_digit)]

    @property
    def names(self) -> list[str]:
        return [s.replace(" ", "-") for s in self.spoken]
