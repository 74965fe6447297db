"""Semantic search over learnware entries, with the reference's rules.

- Class keys (Data, Task, Library, License): the learnware's value must be one
  the user asked for.
- Tag keys (Scenario): the two value sets must intersect.
- Keys the user leaves empty are ignored.
- Name text: learnwares whose name or description contains it (case-insensitive)
  come first, all with score 1; only when none does, fuzzy matches of the name
  and description above a threshold, ranked by score.
"""

from __future__ import annotations

from typing import Iterable, Optional

from learnware_cli.errors import InputError

FUZZY_THRESHOLD = 70.0
TEXT_KEYS = ("Name", "Description")


def parse_tag_filters(pairs: Iterable[str], vocabulary: Optional[dict] = None) -> dict[str, list[str]]:
    """["Task=Classification", "Scenario=Business,Health"] -> {"Task": [...], "Scenario": [...]}.

    Keys are matched case-insensitively against the vocabulary when one is given,
    so a typo is an error rather than a filter that silently matches nothing.
    """
    query: dict[str, list[str]] = {}
    known = {k.lower(): k for k in (vocabulary or {})}
    for pair in pairs:
        if "=" not in pair:
            raise InputError(f"tag filter {pair!r} must look like Key=Value (e.g. Task=Classification)")
        key, _, value = pair.partition("=")
        key = key.strip()
        if known:
            if key.lower() not in known:
                raise InputError(f"unknown tag key {key!r}; known keys: {', '.join(sorted(known.values()))}")
            key = known[key.lower()]
            allowed = {v.lower(): v for v in vocabulary[key].get("values", [])}
        else:
            allowed = {}
        for item in (v.strip() for v in value.split(",")):
            if not item:
                continue
            if allowed:
                if item.lower() not in allowed:
                    raise InputError(f"{key} value {item!r} is not one of: {', '.join(allowed.values())}")
                item = allowed[item.lower()]
            query.setdefault(key, []).append(item)
    return query


def values_of(semantic: dict, key: str) -> list[str]:
    """The values of a semantic key as a list (Class/Tag lists; a String as one item; [] if absent)."""
    values = semantic.get(key, {}).get("Values", [])
    if isinstance(values, str):
        return [values] if values else []
    return list(values or [])


def tags_match(semantic: dict, query: dict[str, list[str]], vocabulary: Optional[dict] = None) -> bool:
    """True when the entry passes every non-empty Class/Tag filter of the query."""
    for key, wanted in query.items():
        if not wanted:
            continue
        have = set(values_of(semantic, key))
        kind = (vocabulary or {}).get(key, {}).get("type") or semantic.get(key, {}).get("Type", "Class")
        if kind == "Tag":
            if not have & set(wanted):
                return False
        elif not have or not have <= set(wanted):
            return False
    return True


def text_scores(entries: list, text: Optional[str], haystacks=None) -> list[tuple]:
    """Rank entries by how well their Name/Description match text; see module docstring.

    haystacks(entry) -> the lower-cased texts to match (default: an entry dict's Name and Description Values).
    """
    if not text:
        return [(e, 1.0) for e in entries]
    needle = text.strip().lower()
    haystacks = haystacks or _entry_haystacks
    exact = [(e, 1.0) for e in entries if any(needle in h for h in haystacks(e))]
    if exact:
        return exact
    from rapidfuzz import fuzz

    scored = []
    for entry in entries:
        score = max((fuzz.partial_ratio(needle, h) for h in haystacks(entry) if h), default=0.0)
        if score >= FUZZY_THRESHOLD:
            scored.append((entry, score / 100.0))
    scored.sort(key=lambda pair: -pair[1])
    return scored


def _entry_haystacks(entry: dict) -> list[str]:
    semantic = entry.get("semantic", {})
    return [str(semantic.get(k, {}).get("Values", "") or "").lower() for k in TEXT_KEYS]


def semantic_search(
    entries: list[dict], query: dict[str, list[str]], text: Optional[str] = None, vocabulary: Optional[dict] = None
) -> list[tuple[dict, float]]:
    """Entries passing the tag filters, then ranked by text match: [(entry, score in [0, 1])]."""
    kept = [e for e in entries if tags_match(e.get("semantic", {}), query, vocabulary)]
    return text_scores(kept, text)
