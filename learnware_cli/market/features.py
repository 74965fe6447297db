"""Market features: columns of different learnwares that describe the same quantity, given one identity.

Every package's semantic specification describes its input columns
(``Input.Description``: column index -> text). Those texts are what a
stranger knows about a column, so they are what identifies it across
learnwares. The vocabulary is derived from the index each time it is needed
(nothing to keep in sync with the stored learnwares):

1. a description is *normalised*: Unicode NFKC, lower case, every run of
   characters other than letters and digits becomes one space;
2. columns whose normalised descriptions are equal are one feature;
3. a description that matches no feature exactly joins one that is equal
   without spaces ("week day" / "weekday"), else the closest existing one
   when their rapidfuzz ``token_sort_ratio`` is at least ``FUZZY_THRESHOLD``
   (word order, plurals: "temp celsius" / "celsius temp", "departure hours");
   else it starts a feature of its own. Abbreviations ("temp" /
   "temperature") are not guessed: developers who want them matched write
   the same description.

Learnwares are read in id order and columns in index order, so a feature's
id (its first normalised description) is stable while earlier learnwares stay.
Columns without a description have no identity and are counted apart.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Optional

FUZZY_THRESHOLD = 92.0  # rapidfuzz token_sort_ratio, 0..100: near-identical wording only
_NOT_WORD = re.compile(r"[^0-9a-z]+")


def normalise(text) -> Optional[str]:
    """'Temperature (°C)' -> 'temperature c'; None for a missing or empty description."""
    if not isinstance(text, str):
        return None
    folded = _NOT_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()
    return folded or None


@dataclass
class MarketFeature:
    """One market feature: its id (a normalised description), the spellings seen, and who reads it."""

    id: str
    spellings: Counter = field(default_factory=Counter)
    columns: list = field(default_factory=list)  # (learnware id, column index)

    @property
    def name(self) -> str:
        """The most common original spelling (ties: the first seen)."""
        return self.spellings.most_common(1)[0][0]

    @property
    def learnwares(self) -> list:
        return sorted({learnware for learnware, _ in self.columns})

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "learnwares": len(self.learnwares),
            "columns": len(self.columns),
            "spellings": sorted(self.spellings),
            "used_by": self.learnwares,
        }


@dataclass
class FeatureVocabulary:
    """The market's features, and for each learnware the feature of each of its columns (None: undescribed)."""

    features: dict = field(default_factory=dict)  # id -> MarketFeature, in first-seen order
    by_learnware: dict = field(default_factory=dict)  # learnware id -> [feature id or None per column]
    compact: dict = field(default_factory=dict)  # id without spaces -> id: a dict look-up, not a scan

    def add(self, key: str) -> MarketFeature:
        """The feature with id key, made (and indexed) if new."""
        if key not in self.features:
            self.features[key] = MarketFeature(key)
            self.compact.setdefault(key.replace(" ", ""), key)
        return self.features[key]

    def of(self, learnware_id: str) -> list:
        return self.by_learnware.get(learnware_id, [])

    def undescribed_columns(self) -> int:
        return sum(1 for ids in self.by_learnware.values() for f in ids if f is None)


def column_descriptions(semantic: dict) -> list:
    """The Input.Description texts of a semantic spec, one per column (None where missing)."""
    inputs = semantic.get("Input") if isinstance(semantic, dict) else None
    if not isinstance(inputs, dict):
        return []
    dimension = inputs.get("Dimension")
    described = inputs.get("Description") if isinstance(inputs.get("Description"), dict) else {}
    if not isinstance(dimension, int) or isinstance(dimension, bool) or dimension < 0:
        return []
    return [described.get(str(column)) for column in range(dimension)]


def build_vocabulary(entries: Iterable[dict], threshold: float = FUZZY_THRESHOLD) -> FeatureVocabulary:
    """The feature vocabulary of index entries (each with "id" and "semantic"), see the module docstring."""
    vocabulary = FeatureVocabulary()
    for entry in sorted(entries, key=lambda e: str(e.get("id", ""))):
        learnware_id = str(entry.get("id", ""))
        ids = []
        for column, text in enumerate(column_descriptions(entry.get("semantic") or {})):
            key = _known(normalise(text), vocabulary, threshold)
            if key is None:
                ids.append(None)
                continue
            feature = vocabulary.add(key)
            feature.spellings[text.strip()] += 1
            feature.columns.append((learnware_id, column))
            ids.append(key)
        vocabulary.by_learnware[learnware_id] = ids
    return vocabulary


def _known(key: Optional[str], vocabulary: FeatureVocabulary, threshold: float) -> Optional[str]:
    """The feature id a normalised description belongs to: the same text, the same text without
    spaces ("weekday" / "week day"), else the closest wording above threshold; itself when none is."""
    if key is None or key in vocabulary.features or not vocabulary.features:
        return key
    same_without_spaces = vocabulary.compact.get(key.replace(" ", ""))
    if same_without_spaces is not None:
        return same_without_spaces
    from rapidfuzz import fuzz, process

    match = process.extractOne(key, list(vocabulary.features), scorer=fuzz.token_sort_ratio, score_cutoff=threshold)
    return match[0] if match else key


def features_of(semantic: dict, vocabulary: FeatureVocabulary, threshold: float = FUZZY_THRESHOLD) -> list:
    """The market feature of each input column a semantic spec describes (None: undescribed, or new to the market)."""
    ids = [_known(normalise(text), vocabulary, threshold) for text in column_descriptions(semantic)]
    return [key if key in vocabulary.features else None for key in ids]
