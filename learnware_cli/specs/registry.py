"""Specification kinds by the reference package's type names, and loading a spec file by its "type".

    spec_class("RKMETableSpecification")  -> the class that implements it
    load_spec("rkme.json") / load_spec(obj, source=...)  -> a Specification

The built-in kinds are imported on first use (the table RKME imports JAX), so
importing this module stays cheap. A new kind: a module that defines the class
and calls ``register(cls, *aliases)``, and its type names in ``_BUILTIN``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Optional, Union

from learnware_cli.errors import SpecError
from learnware_cli.specs.base import read_json

DEFAULT_TYPE = "RKMETableSpecification"  # a spec file without a "type" key (as lw wrote before it had one)

# type name -> module that registers its class when imported
_BUILTIN = {
    "RKMETableSpecification": "learnware_cli.specs.table",
    "RKMEStatSpecification": "learnware_cli.specs.table",  # the reference's older name for the same layout
    "RKMEImageSpecification": "learnware_cli.specs.image",
    "RKMETextSpecification": "learnware_cli.specs.text",
}
_CLASSES: dict[str, type] = {}


def register(cls: type, *aliases: str) -> type:
    """Make cls the class for its ``type_name`` and for each alias; returns cls (usable as a decorator)."""
    for name in (cls.type_name, *aliases):
        _CLASSES[name] = cls
    return cls


def known_types() -> tuple[str, ...]:
    """Every type name a spec file may carry, sorted."""
    return tuple(sorted(set(_BUILTIN) | set(_CLASSES)))


def spec_class(type_name: str) -> type:
    """The class implementing type_name; an unknown name is a SpecError naming the known ones."""
    if isinstance(type_name, str):
        if type_name not in _CLASSES and type_name in _BUILTIN:
            importlib.import_module(_BUILTIN[type_name])
        if type_name in _CLASSES:
            return _CLASSES[type_name]
    raise SpecError(f"unknown specification type {type_name!r} (known: {', '.join(known_types())})")


def load_spec(path_or_obj: Union[str, Path, dict, Any], source: Optional[str] = None):
    """A specification from a JSON file (a str or path) or an already parsed JSON document, dispatched on its "type".

    source names it in error messages (default: the path, or "spec").
    Raises InputError for a missing file, SpecError for anything else wrong.
    """
    if isinstance(path_or_obj, (str, os.PathLike)):
        obj, source = read_json(path_or_obj), source or str(path_or_obj)
    else:  # a parsed document (anything but an object is an error below)
        obj, source = path_or_obj, source or "spec"
    if not isinstance(obj, dict):
        raise SpecError(f"{source}: expected a JSON object")
    kind = obj.get("type", DEFAULT_TYPE)
    try:
        cls = spec_class(kind)
    except SpecError as exc:
        raise SpecError(f"{source}: {exc.message}") from None
    return cls.from_json_dict(obj, source=source)
