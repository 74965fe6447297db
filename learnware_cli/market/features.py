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
   and they contain the same numbers ("sensor 10" never joins "sensor 1")
   (word order, plurals: "temp celsius" / "celsius temp", "departure hours");
   else it starts a feature of its own. Abbreviations ("temp" /
   "temperature") are not guessed: developers who want them matched write
   the same description, or the same explicit id.

Explicit ids. A developer who wants to be exact names a column's feature in
``Input.Features`` (column index -> id, validated in semantic.py). Such a
column is the feature ``normalise(id)`` by exact match only: no
space-folding, no fuzzy match (the developer was explicit, so "temp_c" and
"temp_k" stay apart however alike they look). The id takes precedence over
the column's description, whose text is still recorded as one of the
feature's spellings (the id itself is, when the column has none). Ids and
descriptions share one namespace: a feature first made by an id is an
existing feature like any other, so a later *description* may join it
exactly, without spaces or fuzzily (rule 3), while an id never joins a
feature by anything but equality.

Learnwares are read in id order and columns in index order, so a feature's
id (its first normalised description or explicit id) is stable while earlier
learnwares stay. Columns with neither a description nor an explicit id have
no identity and are counted apart.
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
    explicit_columns: int = 0  # of columns, those that named this feature by an explicit id (Input.Features)

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
            "explicit_columns": self.explicit_columns,
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


def _input_block(semantic) -> tuple:
    """(Input block, its dimension) of a semantic spec; (None, 0) when unusable."""
    inputs = semantic.get("Input") if isinstance(semantic, dict) else None
    if not isinstance(inputs, dict):
        return None, 0
    dimension = inputs.get("Dimension")
    if not isinstance(dimension, int) or isinstance(dimension, bool) or dimension < 0:
        return None, 0
    return inputs, dimension


def _texts(inputs: dict, key: str, dimension: int) -> list:
    """inputs[key] (column number -> text) as one string or None per column."""
    mapping = inputs.get(key) if isinstance(inputs.get(key), dict) else {}
    texts = [mapping.get(str(column)) for column in range(dimension)]
    return [text if isinstance(text, str) else None for text in texts]


def column_descriptions(semantic: dict) -> list:
    """The Input.Description texts of a semantic spec, one per column (None where missing)."""
    inputs, dimension = _input_block(semantic)
    return _texts(inputs, "Description", dimension) if inputs is not None else []


def column_feature_keys(semantic: dict) -> list:
    """(explicit id or None, description or None) per input column: Input.Features and Input.Description."""
    inputs, dimension = _input_block(semantic)
    if inputs is None:
        return []
    return list(zip(_texts(inputs, "Features", dimension), _texts(inputs, "Description", dimension)))


def build_vocabulary(entries: Iterable[dict], threshold: float = FUZZY_THRESHOLD) -> FeatureVocabulary:
    """The feature vocabulary of index entries (each with "id" and "semantic"), see the module docstring."""
    vocabulary = FeatureVocabulary()
    for entry in sorted(entries, key=lambda e: str(e.get("id", ""))):
        learnware_id = str(entry.get("id", ""))
        ids = []
        for column, (explicit, text) in enumerate(column_feature_keys(entry.get("semantic") or {})):
            key = normalise(explicit)
            if key is None:  # no usable explicit id: the description rules
                key = _known(normalise(text), vocabulary, threshold)
            if key is None:
                ids.append(None)
                continue
            feature = vocabulary.add(key)
            spelling = text.strip() if normalise(text) is not None else explicit.strip()
            feature.spellings[spelling] += 1
            feature.columns.append((learnware_id, column))
            feature.explicit_columns += normalise(explicit) is not None
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

    numbers = _numbers(key)
    candidates = [f for f in vocabulary.features if _numbers(f) == numbers]  # "sensor 10" is not "sensor 1"
    match = process.extractOne(key, candidates, scorer=fuzz.token_sort_ratio, score_cutoff=threshold) if candidates else None
    return match[0] if match else key


_DIGITS = re.compile(r"[0-9]+")


def _numbers(key: str) -> list:
    """The numbers in a normalised description, sorted: descriptions that differ in one are different features."""
    return sorted(_DIGITS.findall(key))


def features_of(semantic: dict, vocabulary: FeatureVocabulary, threshold: float = FUZZY_THRESHOLD) -> list:
    """The market feature of each input column a semantic spec describes (None: undescribed, or new to the market).

    A column with an explicit id (Input.Features) is that feature or nothing (exact match only);
    one without is matched by its description, as in build_vocabulary.
    """
    ids = []
    for explicit, text in column_feature_keys(semantic):
        key = normalise(explicit)
        ids.append(key if key is not None else _known(normalise(text), vocabulary, threshold))
    return [key if key in vocabulary.features else None for key in ids]
