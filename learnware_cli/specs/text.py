"""The text RKME (``RKMETextSpecification``) as a ``Specification``, embedded offline.

A text specification is a table RKME (``learnware_cli.rkme.RKMESpec``: reduced
set z (K, d), weights beta, gamma) fitted on sentence embeddings, plus which
embedder made them. Two text specifications are comparable only when the same
embedder with the same parameters made both, so the island key is
``("text:" + embedder_id, d, gamma)`` where ``embedder_id`` is the embedder's
name and a short hash of its params (``embedders.embedder_id``).

JSON layout: the reference package's (``learnware.specification.regular.text``):
the table keys ``type`` ("RKMETextSpecification"), ``gamma``, ``num_points``,
``z``, ``beta`` (and ``cuda_idx``, ``device`` as lw writes for tables) plus the
reference's ``language`` (a list of language codes, ``[]`` when unknown), and
lw's own key alongside them, which the reference's loader ignores::

    "embedder": {"name": "lw-hashed-ngrams-v1", "params": {...}, "dim": 256}

A file without ``embedder`` was written by the reference package, whose text
specifications embed with its multilingual MiniLM sentence-transformer
(``REFERENCE_EMBEDDER``): it loads as that embedder, so it lands in an island
of its own and is never compared with lw's built-in embeddings.

Text probes (for checking a submitted model) cannot be drawn from the spec --
a text model takes strings, not embeddings -- so ``probe_inputs`` raises
NotImplementedError; the market tries text models on its own probe sentences
(``market_template/probes/text.txt``).
Importing this module imports JAX (through ``learnware_cli.rkme``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional, Sequence

import numpy as np

from learnware_cli.errors import InputError, SpecError
from learnware_cli.rkme.spec import DEFAULT_GAMMA, DEFAULT_K, DEFAULT_STEPS, RKMESpec, SpecStack, fit_rkme, mmd2, mmd2_to_many
from learnware_cli.specs.base import IslandKey, StackArrays, read_json
from learnware_cli.specs.embedders import ST_PREFIX, Embedder, embedder_id, get_embedder
from learnware_cli.specs.registry import register

TEXT_TYPE = "RKMETextSpecification"
TEXT_KIND_PREFIX = "text:"
# what the reference package's RKMETextSpecification embeds with (learnware/specification/regular/text/rkme.py)
REFERENCE_EMBEDDER = "sentence-transformers:paraphrase-multilingual-MiniLM-L12-v2 (reference)"
_TABLE_KEYS = ("type", "gamma", "num_points", "z", "beta", "cuda_idx", "device")
_TEXT_KEYS = ("language", "embedder")


@dataclass(frozen=True)
class EmbedderInfo:
    """Which embedder made a text specification's points: name, params (JSON-able), output dimension."""

    name: str
    params: dict = field(default_factory=dict)
    dim: Optional[int] = None

    @property
    def id(self) -> str:
        """name#<8-hex hash of params>: equal exactly when the embedders are the same function."""
        return embedder_id(self.name, self.params)

    def to_json_dict(self) -> dict:
        return {"name": self.name, "params": self.params, "dim": self.dim}

    @classmethod
    def of(cls, embedder: Embedder) -> "EmbedderInfo":
        return cls(name=str(embedder.name), params=dict(embedder.params), dim=int(embedder.dim))

    def build(self) -> Embedder:
        """The embedder again, to embed other texts comparably (a registered one: the built-in).

        A sentence-transformers model cannot be rebuilt from its record (lw does not
        know where it lies, and never downloads): an InputError says so.
        """
        if self.name == REFERENCE_EMBEDDER or self.name.startswith(ST_PREFIX):
            raise InputError(
                f"this specification was embedded with {self.name}; lw cannot rebuild that model from the record "
                f"(load the same model from disk with '{ST_PREFIX}<path>')"
            )
        model = get_embedder(self.name, **self.params)
        if embedder_id(model.name, model.params) != self.id:
            raise InputError(f"embedder {self.name} built from {self.params} records other params ({model.params})")
        return model


@dataclass
class TextSpecification:
    """A table RKME on sentence embeddings, with the embedder that made them and the texts' languages.

    Implements ``learnware_cli.specs.Specification`` (registered as ``RKMETextSpecification``).
    ``z``, ``beta``, ``gamma``, ``num_points``, ``dim`` and ``size`` are the RKME's.
    """

    type_name: ClassVar[str] = TEXT_TYPE
    data_type: ClassVar[str] = "Text"

    rkme: RKMESpec
    embedder: EmbedderInfo
    language: list = field(default_factory=list)
    extra: dict = field(default_factory=dict, repr=False)

    # ---- the RKME's attributes, for code written against RKMESpec

    @property
    def z(self) -> np.ndarray:
        return self.rkme.z

    @property
    def beta(self) -> np.ndarray:
        return self.rkme.beta

    @property
    def gamma(self) -> float:
        return self.rkme.gamma

    @property
    def num_points(self) -> int:
        return self.rkme.num_points

    @property
    def dim(self) -> int:
        return self.rkme.dim

    @property
    def size(self) -> int:
        return self.rkme.size

    # ---- JSON

    def to_json_dict(self) -> dict:
        """The reference's text layout (the table keys plus ``language``) and lw's ``embedder``."""
        obj = self.rkme.to_json_dict()
        obj["type"] = TEXT_TYPE
        obj["language"] = list(self.language)
        obj["embedder"] = self.embedder.to_json_dict()
        return obj

    @classmethod
    def from_json_dict(cls, obj: dict, source: str = "spec") -> "TextSpecification":
        """Parse and validate; any defect is a one-line SpecError starting with source."""
        if not isinstance(obj, dict):
            raise SpecError(f"{source}: expected a JSON object")
        kind = obj.get("type")
        if kind != TEXT_TYPE:
            raise SpecError(f"{source}: unsupported specification type {kind!r} (expected {TEXT_TYPE})")
        table = {k: v for k, v in obj.items() if k not in _TEXT_KEYS}
        table["type"] = "RKMETableSpecification"
        rkme = RKMESpec.from_json_dict(table, source=source)
        rkme.extra = {}
        language = obj.get("language", [])
        if language is None:
            language = []
        if not isinstance(language, list) or not all(isinstance(code, str) for code in language):
            raise SpecError(f"{source}: language must be a list of language codes (strings)")
        embedder = _parse_embedder(obj.get("embedder"), rkme.dim, source)
        extra = {k: v for k, v in obj.items() if k not in _TABLE_KEYS + _TEXT_KEYS}
        return cls(rkme=rkme, embedder=embedder, language=list(language), extra=extra)

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_json_dict(), separators=(",", ":")))

    @classmethod
    def load(cls, path) -> "TextSpecification":
        return cls.from_json_dict(read_json(path), source=str(Path(path)))

    # ---- the Specification interface

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        K: Optional[int] = None,
        gamma: float = DEFAULT_GAMMA,
        seed: int = 0,
        embedder: "str | Embedder | None" = None,
        embedder_params: Optional[dict] = None,
        steps: int = DEFAULT_STEPS,
        language: Optional[Sequence[str]] = None,
        k: Optional[int] = None,
        **rkme_params: Any,
    ) -> "TextSpecification":
        """Embed texts and fit a table RKME of K points on them.

        ``embedder``: a name (default ``lw-hashed-ngrams-v1``) with ``embedder_params``,
        or an Embedder; to be comparable with a specification ``s``, pass
        ``s.embedder.build()``.

        ``k`` is accepted as another name for ``K`` (the table spec's spelling).
        Blank documents are dropped; none left is an InputError. ``language``:
        language codes to record (lw detects none itself; default ``[]``, which
        the reference's search treats as "any"). Further keyword arguments go to ``fit_rkme``.
        """
        if K is not None and k is not None and K != k:
            raise InputError(f"K={K} and k={k} disagree (give one)")
        size = K if K is not None else (k if k is not None else DEFAULT_K)
        model = get_embedder(embedder, **(embedder_params or {}))
        docs = _documents(texts)
        points = model.embed(docs)
        if points.shape != (len(docs), model.dim):
            raise InputError(f"embedder {model.name} returned shape {points.shape}, expected ({len(docs)}, {model.dim})")
        rkme = fit_rkme(points, k=int(size), gamma=gamma, steps=steps, seed=seed, **rkme_params)
        codes = [] if language is None else _language_codes(language)
        return cls(rkme=rkme, embedder=EmbedderInfo.of(model), language=codes)

    def island_key(self) -> IslandKey:
        """("text:" + embedder id, embedding dimension, gamma): only specs of one embedder compare."""
        return IslandKey(TEXT_KIND_PREFIX + self.embedder.id, self.dim, float(self.gamma))

    def stack_arrays(self) -> StackArrays:
        """The RKME's (z (K, d), beta (K,)), float64."""
        return self.rkme.stack_arrays()

    @classmethod
    def make_stack(cls, zs: np.ndarray, betas: np.ndarray, gamma: float = DEFAULT_GAMMA, **params: Any) -> SpecStack:
        """zs (M, K, d), betas (M, K) of one island -> a SpecStack (``SpecStack.from_arrays``; same keywords)."""
        return SpecStack.from_arrays(np.asarray(zs), np.asarray(betas), gamma, **params)

    def _same_island(self, other: "TextSpecification") -> None:
        if not isinstance(other, TextSpecification):
            raise SpecError(f"cannot compare a {TEXT_TYPE} with a {getattr(other, 'type_name', type(other).__name__)}")
        if other.embedder.id != self.embedder.id:
            raise SpecError(
                f"text specifications embedded differently ({self.embedder.name} [{self.embedder.id}] vs "
                f"{other.embedder.name} [{other.embedder.id}]) cannot be compared"
            )

    def mmd2(self, other: "TextSpecification") -> float:
        """MMD^2 to another text specification of the same embedder (and dimension, gamma)."""
        self._same_island(other)
        return mmd2(self.rkme, other.rkme)

    def inner_product(self, other: "TextSpecification") -> float:
        """<self, other> in the RKHS of the embeddings (same embedder only)."""
        self._same_island(other)
        return self.rkme.inner_product(other.rkme)

    def mmd2_to_stack(self, stack: SpecStack) -> np.ndarray:
        """MMD^2 to every spec of a stack (built by ``make_stack`` from specs of this island), float64 (M,)."""
        return mmd2_to_many(self.rkme, stack)

    def probe_inputs(self, n: int, **limits: Any):
        """Not available for text: the points are embeddings, which cannot be turned back into sentences.

        Raises NotImplementedError (the interface's signal); the market then tries
        text models on its own probe sentences (``market_template/probes/text.txt``).
        """
        raise NotImplementedError(
            "a text specification cannot generate probe texts (its points are embeddings, not sentences); "
            "use the market's probe sentences (probes/text.txt)"
        )

    probe_texts = probe_inputs

    def summary(self) -> dict:
        """What ``lw show --json`` reports: the table's fields plus embedder and language."""
        return {
            "type": self.type_name,
            "K": self.size,
            "dim": self.dim,
            "gamma": self.gamma,
            "num_points": self.num_points,
            "embedder": self.embedder.name,
            "embedder_id": self.embedder.id,
            "language": list(self.language),
        }

    def describe(self) -> str:
        """One line: size, embedder, dimension, gamma, documents fitted on."""
        langs = f", language {'/'.join(self.language)}" if self.language else ""
        return (
            f"text, K={self.size}, embedder {self.embedder.name} (d={self.dim}), gamma={self.gamma:g}, "
            f"fitted on {self.num_points} documents{langs}"
        )


def _parse_embedder(raw, dim: int, source: str) -> EmbedderInfo:
    if raw is None:  # the reference package's file: its MiniLM embeddings
        return EmbedderInfo(name=REFERENCE_EMBEDDER, params={}, dim=dim)
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: embedder must be an object with name, params and dim")
    name, params, edim = raw.get("name"), raw.get("params", {}), raw.get("dim", dim)
    if not isinstance(name, str) or not name.strip():
        raise SpecError(f"{source}: embedder.name must be a non-empty string")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise SpecError(f"{source}: embedder.params must be an object")
    try:
        json.dumps(params, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{source}: embedder.params must be plain JSON ({exc})") from None
    if isinstance(edim, bool) or not isinstance(edim, int):
        raise SpecError(f"{source}: embedder.dim must be an integer, got {edim!r}")
    if edim != dim:
        raise SpecError(f"{source}: embedder.dim is {edim} but z has {dim} columns")
    return EmbedderInfo(name=name, params=params, dim=edim)


def _documents(texts) -> list[str]:
    from learnware_cli.specs.embedders import check_documents

    docs = [doc for doc in check_documents(texts) if doc.strip()]
    if not docs:
        raise InputError("no text to fit a specification on (no non-blank document)")
    return docs


def _language_codes(language) -> list[str]:
    if isinstance(language, str):
        language = [language]
    codes = list(language)
    if not all(isinstance(code, str) and code.strip() for code in codes):
        raise InputError("language must be a list of language codes such as ['en']")
    return [code.strip() for code in codes]


register(TextSpecification)

__all__ = ["REFERENCE_EMBEDDER", "TEXT_TYPE", "EmbedderInfo", "TextSpecification"]
