"""The specification interface: what every kind of statistical specification offers.

A learnware market holds specifications of several kinds (the reference
package's ``RKMETableSpecification`` today; image, text and heterogeneous
ones later). Everything downstream -- package checks, the search cache, the
search itself, ``lw show`` -- talks to a specification only through the
small contract below, so that a new kind is one new file that implements it
and one line in ``registry._BUILTIN``, not edits in six places.

The contract (``Specification``), for a class ``S`` and an instance ``s``:

- ``S.type_name``: the reference package's type name, written as the
  ``"type"`` key of the JSON file (e.g. ``"RKMETableSpecification"``).
- ``S.from_json_dict(obj, source)`` -> ``S``: parse and validate the reference
  JSON layout; any defect is a one-line ``SpecError`` that starts with
  ``source``. ``s.to_json_dict()`` is its inverse (``json.dumps`` of it is
  the file's content).
- ``S.fit(data, **params)`` -> ``S``: fit a specification to data.
- ``s.island_key()`` -> ``IslandKey``: what must match for two
  specifications to be comparable (kind, input dimension, kernel width);
  compare two keys with ``same_island``.
- ``s.stack_arrays()`` -> ``StackArrays``: the arrays a market search stacks
  for this specification (z (K, d), beta (K,)); the search cache stores them,
  zero-padded, together with the self inner products the stack computes.
- ``s.inner_product(other)`` -> float: <s, other> in the RKHS (what a
  mixture over a few specifications of the island is solved from);
- ``s.mmd2(other)`` -> float: MMD^2 to another specification of its island;
  ``s.mmd2_to_stack(stack)`` -> float64 (M,): MMD^2 to every specification
  of a stack, in one batched call.
- ``S.data_type``: the semantic ``Data`` value its learnwares have ("Table",
  "Image", "Text"; ``data_type_of`` reads it, or derives it from the kind).
- ``S.make_stack(zs, betas, gamma)``: the object ``mmd2_to_stack`` takes, built from
  stacked ``stack_arrays`` (zs (M, K, D), betas (M, K), zero-padded), with
  ``self_products`` (M,) float64 (the table's is ``rkme.spec.SpecStack``;
  kinds without a gamma ignore it).
- ``s.probe_inputs(n, **limits)``: model inputs drawn from the specification
  for the market to test a model with (table rows, images); a kind whose
  inputs cannot be drawn from its specification (text) raises
  NotImplementedError and the market uses its own probes.
- ``s.summary()`` -> dict (what ``lw show --json`` prints under ``"rkme"``,
  its ``"type"`` being ``type_name``) and ``s.describe()`` -> str (the one
  line ``lw show`` prints).

This module imports neither JAX nor NumPy: the registry and the interface are
cheap to import; an implementation's numerics load when it is first used.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

from learnware_cli.errors import InputError, SpecError

GAMMA_REL_TOL = 1e-9  # kernel widths this close are the same kernel


class IslandKey(NamedTuple):
    """What two specifications must share to be compared: (kind, input dimension, kernel width gamma)."""

    kind: str
    dim: int
    gamma: float


def same_island(a: IslandKey, b: IslandKey, rel_tol: float = GAMMA_REL_TOL) -> bool:
    """True when a and b name the same island: kind and dimension equal, gamma equal within rel_tol."""
    return a.kind == b.kind and a.dim == b.dim and math.isclose(a.gamma, b.gamma, rel_tol=rel_tol)


class StackArrays(NamedTuple):
    """The arrays a search stacks for one specification: z (K, d) points and beta (K,) weights."""

    z: Any
    beta: Any


@runtime_checkable
class Specification(Protocol):
    """A statistical specification of one kind; see the module docstring for the contract."""

    type_name: ClassVar[str]

    @classmethod
    def from_json_dict(cls, obj: dict, source: str = "spec") -> "Specification": ...

    def to_json_dict(self) -> dict: ...

    @classmethod
    def fit(cls, data, **params) -> "Specification": ...

    def island_key(self) -> IslandKey: ...

    def stack_arrays(self) -> StackArrays: ...

    def inner_product(self, other: "Specification") -> float: ...

    def mmd2(self, other: "Specification") -> float: ...

    def mmd2_to_stack(self, stack) -> Any: ...

    def summary(self) -> dict: ...

    def describe(self) -> str: ...


DATA_TYPES = {"table": "Table", "image": "Image", "text": "Text"}  # island kind (before any ":") -> semantic Data


def data_type_of(spec) -> str:
    """The semantic Data value a specification describes ("Table", "Image", "Text"): its class's
    ``data_type`` when it has one, else read from its island kind."""
    declared = getattr(spec, "data_type", None)
    if isinstance(declared, str):
        return declared
    return DATA_TYPES.get(spec.island_key().kind.split(":", 1)[0], "Table")


def read_json(path) -> Any:
    """The parsed JSON document of a specification file; a missing file is an InputError, any other defect a SpecError."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read ({exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (ValueError, RecursionError) as exc:  # an integer over Python's 4300-digit limit; deep nesting
        raise SpecError(f"{path}: unreadable JSON ({exc})") from None
