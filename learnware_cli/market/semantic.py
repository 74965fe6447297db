"""Semantic specifications in the Beimingwu layout: validate, normalise, build.

A semantic specification is the human-facing half of a learnware (what data,
what task, which library, licence, name, and what each input and output
column means). The layout and vocabulary follow the reference ``learnware``
package so that packages move between markets unchanged::

    {"Data": {"Values": ["Table"], "Type": "Class"},
     "Task": {"Values": ["Classification"], "Type": "Class"},
     "Library": {"Values": ["Scikit-learn"], "Type": "Class"},
     "Scenario": {"Values": ["Business"], "Type": "Tag"},
     "License": {"Values": ["MIT"], "Type": "Class"},
     "Name": {"Values": "my model", "Type": "String"},
     "Description": {"Values": "...", "Type": "String"},
     "Input": {"Dimension": 7, "Description": {"0": "age", ...},
               "Features": {"0": "age_years", ...}},
     "Output": {"Dimension": 2, "Description": {"0": "no", "1": "yes"}}}

``Input.Features`` (optional, this market's extension) maps column numbers
to explicit market feature ids for developers who want to be exact instead
of relying on description matching (see market/features.py). The reference
``learnware`` checker (EasySemanticChecker) reads only the Input keys it
knows (Dimension, Description), so reference tools accept a package that
carries it.

Output.Dimension means, as in the reference checker:

* Regression: the number of output columns the model predicts (1 for a
  plain regressor);
* Classification: the number of classes (at least 2). The model may then
  predict labels in [0, Dimension) (output_shape (1,)) or a score/probability
  matrix with one column per class (output_shape (Dimension,)).

Every defect raises ``RejectedError("semantic", ...)`` with one line naming
the field and the bad value.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from typing import Iterable, Mapping, Optional, Sequence, Union

from learnware_cli.errors import RejectedError
from learnware_cli.market.features import normalise

CHECK = "semantic"

VOCABULARY: dict = {
    "Data": {"type": "Class", "values": ["Table", "Image", "Text"]},
    "Task": {
        "type": "Class",
        "values": [
            "Classification",
            "Regression",
            "Feature Extraction",
            "Segmentation",
            "Object Detection",
            "Others",
        ],
    },
    "Library": {"type": "Class", "values": ["Scikit-learn", "PyTorch", "TensorFlow", "Others"]},
    "Scenario": {
        "type": "Tag",
        "values": [
            "Business",
            "Financial",
            "Health",
            "Politics",
            "Computer",
            "Internet",
            "Traffic",
            "Nature",
            "Fashion",
            "Industry",
            "Agriculture",
            "Education",
            "Entertainment",
            "Architecture",
            "Others",
        ],
    },
    "License": {
        "type": "Class",
        "values": [
            "MIT",
            "Apache-2.0",
            "BSD-2-Clause",
            "BSD-3-Clause",
            "GPL-2.0",
            "GPL-3.0",
            "LGPL-2.1",
            "LGPL-3.0",
            "AGPL-3.0",
            "ECL-2.0",
            "AFL-3.0",
            "CC-BY-4.0",
            "CC-BY-SA-4.0",
            "Others",
        ],
    },
}

# Free-text keys: Name must be non-empty, Description may be empty.
STRING_KEYS = {"Name": True, "Description": False}
# Keys newer reference versions may carry; kept when well-formed, never required.
OPTIONAL_KEYS = {"Model": ["Base Model", "Fine-tuned Model", "PEFT Model", "Others"]}
DIMENSION_KEYS = ("Input", "Output")
TASKS_WITH_OUTPUT = ("Classification", "Regression")

MAX_NAME_CHARS = 200
MAX_DESCRIPTION_CHARS = 20_000
MAX_DIMENSION = 1_000_000
MAX_COLUMN_DESCRIPTION_CHARS = 2_000
MAX_FEATURE_ID_CHARS = MAX_COLUMN_DESCRIPTION_CHARS  # an Input.Features id is capped like a description
FEATURES_KEY = "Features"  # Input.Features: column number -> explicit market feature id
_DIGITS = re.compile(f"[0-9]{{1,{len(str(MAX_DIMENSION))}}}")


def _reject(message: str):
    raise RejectedError(CHECK, message)


def _show(value) -> str:
    """repr() of a value, shortened so the error stays on one line."""
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 80 else text[:77] + "..."


def _canonical(key: str, value, allowed: Sequence[str]) -> str:
    """Map a value onto the vocabulary, ignoring case and surrounding blanks.

    Accepting 'classification' for 'Classification' costs nothing and spares
    users a round trip; anything else is an error that lists the choices.
    """
    if isinstance(value, str):
        folded = " ".join(value.split()).casefold()
        for choice in allowed:
            if choice.casefold() == folded:
                return choice
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, allowed, n=1)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
    _reject(f"{key} value {_show(value)} is not one of: {', '.join(allowed)}{hint}")


def _values_field(obj: Mapping, key: str):
    entry = obj.get(key)
    if entry is None:
        _reject(f"missing field {key!r}")
    if not isinstance(entry, Mapping):
        _reject(f"{key} must be an object with 'Values' and 'Type', got {_show(entry)}")
    if "Values" not in entry:
        _reject(f"{key} has no 'Values'")
    return entry


def _check_type(key: str, entry: Mapping, expected: str) -> None:
    declared = entry.get("Type", expected)
    if not isinstance(declared, str) or declared.casefold() != expected.casefold():
        _reject(f"{key} Type must be {expected!r}, got {_show(declared)}")


def _as_list(key: str, values) -> list:
    if isinstance(values, str):
        return [values]
    if isinstance(values, (list, tuple)):
        return list(values)
    _reject(f"{key} Values must be a list of strings, got {_show(values)}")


def _validate_class(key: str, obj: Mapping, allowed: Sequence[str]) -> dict:
    entry = _values_field(obj, key)
    _check_type(key, entry, "Class")
    values = _as_list(key, entry["Values"])
    if len(values) != 1:
        _reject(f"{key} takes exactly one value, got {len(values)}: {_show(values)}")
    return {"Values": [_canonical(key, values[0], allowed)], "Type": "Class"}


def _validate_tag(key: str, obj: Mapping, allowed: Sequence[str]) -> dict:
    entry = _values_field(obj, key)
    _check_type(key, entry, "Tag")
    values = _as_list(key, entry["Values"])
    if not values:
        _reject(f"{key} needs at least one value from: {', '.join(allowed)}")
    out: list[str] = []
    for value in values:
        canonical = _canonical(key, value, allowed)
        if canonical not in out:
            out.append(canonical)
    return {"Values": out, "Type": "Tag"}


def _validate_string(key: str, obj: Mapping, required: bool) -> dict:
    if key not in obj and not required:
        return {"Values": "", "Type": "String"}
    entry = _values_field(obj, key)
    _check_type(key, entry, "String")
    value = entry["Values"]
    if not isinstance(value, str):
        _reject(f"{key} must be a string, got {_show(value)}")
    value = value.strip()
    limit = MAX_NAME_CHARS if key == "Name" else MAX_DESCRIPTION_CHARS
    if required and not value:
        _reject(f"{key} must not be empty")
    if len(value) > limit:
        _reject(f"{key} is {len(value)} characters long, the limit is {limit}")
    if key == "Name" and any(ch in value for ch in "\r\n\t\x00"):
        _reject(f"Name must be a single line, got {_show(value)}")
    return {"Values": value, "Type": "String"}


def _dimension(key: str, value) -> int:
    """A positive int (7.0 and "7" accepted) up to MAX_DIMENSION; anything else is a rejection.

    Strings must be ASCII digits short enough to convert: str.isdigit() also
    accepts '²', which int() refuses, and a 5000-digit string would exceed
    Python's int conversion limit; both raised ValueError out of the check.
    """
    if isinstance(value, bool):
        _reject(f"{key} Dimension must be a positive integer, got {_show(value)}")
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        value = int(value)
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        value = int(value.strip())
    if not isinstance(value, int) or value < 1 or value > MAX_DIMENSION:
        _reject(f"{key} Dimension must be a positive integer, got {_show(value)}")
    return value


def _column_number(key: str, field: str, k, dim: int) -> int:
    """The column index a Description/Features key names, in [0, dim)."""
    try:
        index = int(str(k).strip())
    except ValueError:
        _reject(f"{key} {field} key {_show(k)} is not a column number")
    if not 0 <= index < dim:
        _reject(f"{key} {field} key {_show(k)} is outside [0, {dim})")
    return index


def _column_descriptions(key: str, raw, dim: int) -> dict:
    """{"0": "age", ...}: keys are column indices in [0, dim), values strings."""
    if raw is None:
        return {}
    if isinstance(raw, (list, tuple)):
        raw = {str(i): v for i, v in enumerate(raw)}
    if not isinstance(raw, Mapping):
        _reject(f"{key} Description must map column numbers to strings, got {_show(raw)}")
    out: dict[str, str] = {}
    for k, v in raw.items():
        index = _column_number(key, "Description", k, dim)
        if not isinstance(v, str):
            _reject(f"{key} Description for column {index} must be a string, got {_show(v)}")
        if len(v) > MAX_COLUMN_DESCRIPTION_CHARS:
            _reject(f"{key} Description for column {index} is longer than {MAX_COLUMN_DESCRIPTION_CHARS} characters")
        out[str(index)] = v
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def _column_feature_ids(key: str, raw, dim: int) -> dict:
    """Input.Features, {"0": "temp_c", ...}: keys column indices in [0, dim), values non-empty ids (trimmed).

    An id must hold a letter or digit: it is compared after the same
    normalisation as descriptions (features.normalise), where "--" is nothing.
    """
    if isinstance(raw, (list, tuple)):
        raw = {str(i): v for i, v in enumerate(raw)}
    if not isinstance(raw, Mapping):
        _reject(f"{key} {FEATURES_KEY} must map column numbers to feature id strings, got {_show(raw)}")
    out: dict[str, str] = {}
    for k, v in raw.items():
        index = _column_number(key, FEATURES_KEY, k, dim)
        if not isinstance(v, str) or not v.strip():
            _reject(f"{key} {FEATURES_KEY} id for column {index} must be a non-empty string, got {_show(v)}")
        v = v.strip()
        if len(v) > MAX_FEATURE_ID_CHARS:
            _reject(f"{key} {FEATURES_KEY} id for column {index} is longer than {MAX_FEATURE_ID_CHARS} characters")
        if any(ch in v for ch in "\r\n\t\x00"):
            _reject(f"{key} {FEATURES_KEY} id for column {index} must be a single line, got {_show(v)}")
        if normalise(v) is None:
            _reject(f"{key} {FEATURES_KEY} id for column {index} has no letter or digit: {_show(v)}")
        out[str(index)] = v
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def _validate_dimension_block(key: str, obj: Mapping) -> Optional[dict]:
    block = obj.get(key)
    if block is None:
        return None
    if not isinstance(block, Mapping):
        _reject(f"{key} must be an object with 'Dimension' and 'Description', got {_show(block)}")
    if "Dimension" not in block:
        _reject(f"{key} has no 'Dimension'")
    dim = _dimension(key, block["Dimension"])
    out = {"Dimension": dim, "Description": _column_descriptions(key, block.get("Description"), dim)}
    if key == "Input" and block.get(FEATURES_KEY) is not None:
        features = _column_feature_ids(key, block[FEATURES_KEY], dim)
        if features:  # an empty mapping declares nothing: left out, as before the key existed
            out[FEATURES_KEY] = features
    return out


def _validate_optional(key: str, obj: Mapping, allowed: Sequence[str]) -> dict:
    entry = _values_field(obj, key)
    values = _as_list(key, entry["Values"])
    return {"Values": [_canonical(key, v, allowed) for v in values], "Type": "Optional"}


def validate_semantic(obj, vocabulary: Mapping = VOCABULARY) -> dict:
    """Check a semantic specification and return a normalised copy.

    Normalising (canonical spelling, de-duplicated tags, trimmed strings,
    integer dimensions, sorted column descriptions) means the market stores
    and searches one spelling per value. Unknown top-level keys are refused
    so that a typo ('Senario') is reported instead of silently ignored.
    """
    if not isinstance(obj, Mapping):
        _reject(f"semantic specification must be a JSON object, got {type(obj).__name__}")
    known = set(vocabulary) | set(STRING_KEYS) | set(DIMENSION_KEYS) | set(OPTIONAL_KEYS)
    unknown = [k for k in obj if k not in known]
    if unknown:
        _reject(f"unknown field {_show(unknown[0])} (expected: {', '.join(sorted(known))})")
    out: dict = {}
    for key, rule in vocabulary.items():
        if rule["type"] == "Class":
            out[key] = _validate_class(key, obj, rule["values"])
        elif rule["type"] == "Tag":
            out[key] = _validate_tag(key, obj, rule["values"])
        else:  # a vocabulary of the caller's making with a type we do not know
            raise ValueError(f"vocabulary entry {key!r} has unknown type {rule['type']!r}")
    for key, required in STRING_KEYS.items():
        out[key] = _validate_string(key, obj, required)
    for key, allowed in OPTIONAL_KEYS.items():
        if key in obj:
            out[key] = _validate_optional(key, obj, allowed)
    for key in DIMENSION_KEYS:
        block = _validate_dimension_block(key, obj)
        if block is not None:
            out[key] = block
    _check_blocks_required(out)
    return copy.deepcopy(out)


def _first(out: dict, key: str) -> Optional[str]:
    entry = out.get(key)
    return entry["Values"][0] if entry else None


def _check_blocks_required(out: dict) -> None:
    """Table data needs Input; classification/regression need Output (as the reference)."""
    if _first(out, "Data") == "Table" and "Input" not in out:
        _reject("Input (with Dimension) is required for Table data")
    task = _first(out, "Task")
    if task in TASKS_WITH_OUTPUT:
        if "Output" not in out:
            _reject(f"Output (with Dimension) is required for {task}")
        if task == "Classification" and out["Output"]["Dimension"] < 2:
            _reject(
                f"Output Dimension for Classification is the number of classes and must be at least 2, "
                f"got {out['Output']['Dimension']}"
            )


def build_semantic(
    name: str,
    description: str,
    data: str,
    task: str,
    library: str,
    scenarios: Union[str, Iterable[str]],
    license: str,
    input_dim: int,
    output_dim: Optional[int],
    input_desc: Union[Mapping, Sequence[str], None] = None,
    output_desc: Union[Mapping, Sequence[str], None] = None,
    input_features: Union[Mapping, Sequence[str], None] = None,
) -> dict:
    """Build (and validate) a semantic specification from command-line flags.

    output_dim: Regression -> number of output columns; Classification ->
    number of classes. None leaves Output out (only valid for other tasks).
    input_desc/output_desc: column descriptions, a list in column order or a
    {"index": text} mapping.
    input_features: explicit market feature ids (Input.Features), a list with
    one id per input column in order, or a {"index": id} mapping for some.
    """
    if input_features and not isinstance(input_features, Mapping):
        if isinstance(input_features, str):
            _reject("input_features must be a list of feature ids or a mapping, not one string")
        if input_dim is not None and len(input_features) != input_dim:
            _reject(f"{len(input_features)} feature id(s) given for {input_dim} input column(s): give one per column, in order")
    if isinstance(scenarios, str):
        scenarios = [s for s in (part.strip() for part in scenarios.split(",")) if s]
    obj: dict = {
        "Data": {"Values": [data], "Type": "Class"},
        "Task": {"Values": [task], "Type": "Class"},
        "Library": {"Values": [library], "Type": "Class"},
        "Scenario": {"Values": list(scenarios), "Type": "Tag"},
        "License": {"Values": [license], "Type": "Class"},
        "Name": {"Values": name, "Type": "String"},
        # the reference checker refuses an empty Description
        "Description": {"Values": description or name, "Type": "String"},
    }
    if str(data).strip().lower() in ("table", "image"):
        # learnware 0.4's EasySemanticChecker requires Model = Others for table and image learnwares
        obj["Model"] = {"Values": ["Others"], "Type": "Optional"}
    if input_dim is not None:
        obj["Input"] = {"Dimension": input_dim, "Description": input_desc or {}}
        if input_features:
            obj["Input"][FEATURES_KEY] = input_features
    if output_dim is not None:
        obj["Output"] = {"Dimension": output_dim, "Description": output_desc or {}}
    return validate_semantic(obj)


def semantic_value(semantic: Mapping, key: str) -> Optional[str]:
    """The single value of a Class key (e.g. 'Task'), or None when absent."""
    entry = semantic.get(key)
    if not entry:
        return None
    values = entry.get("Values")
    return values[0] if isinstance(values, list) and values else None
