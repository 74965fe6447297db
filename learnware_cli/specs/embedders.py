"""Sentence embedders for the text specification: one built-in and offline, one plug-in.

A text specification (``learnware_cli.specs.text``) is a table RKME fitted on
sentence embeddings, so two text specifications are comparable only when the
same embedder, with the same parameters, produced both. An ``Embedder`` is:

- ``name``: the registry name (``"lw-hashed-ngrams-v1"``);
- ``params``: a JSON-able dict of everything that changes its output;
- ``dim``: the output dimension;
- ``embed(texts: list[str]) -> float64 (n, dim)``.

``embedder_id(name, params)`` is the name plus a short hash of the params; it
is what a text specification's island key carries.

``get_embedder("lw-hashed-ngrams-v1", dim=128)`` builds a registered embedder by
name; ``get_embedder("sentence-transformers:/path/to/model")`` loads a model the
user already has on disk (never downloads). ``register_embedder(name, factory)``
adds a kind.

The built-in embedder, ``lw-hashed-ngrams-v1``
----------------------------------------------

Deterministic, dependency-free (NumPy and the standard library), no model
file, nothing downloaded. For each document:

1. Unicode NFKC normalisation, then ``str.casefold``; words are the runs of
   letters and digits (``[^\\W_]+``, Unicode-aware).
2. Three feature groups: word unigrams, word bigrams (adjacent words), and the
   character 3-, 4- and 5-grams of each word padded as ``<word>`` (n-grams never
   cross a word boundary, so they capture morphology and spelling variants).
3. Each word and character n-gram, prefixed by its group, is hashed with keyed
   BLAKE2b (never Python's salted ``hash()``) to 64 bits (a bigram: SplitMix64
   of its two words' hashes): the low ``buckets_log2`` (22) bits pick a bucket
   of a sparse space, the top bit a sign (signed feature hashing: collisions
   cancel in expectation instead of piling up).
4. Per document and group, the signed counts of each bucket get sublinear term
   frequency ``sign(c) (1 + ln |c|)``; each group is L2-normalised and scaled by
   its weight (words 1.0, bigrams 0.5, characters 1.0), so that many short
   character n-grams do not drown the words.
5. The sparse vector is projected to ``dim`` (default 256) by a fixed sparse
   random projection: bucket b's column has ``nnz`` (4) entries ``+-1/sqrt(nnz)``
   at rows and signs from SplitMix64 of (seed, b) -- an Achlioptas-style sparse
   Johnson-Lindenstrauss map, computed for the buckets in use on the fly, so no
   matrix is stored. The result is L2-normalised (an empty document, one with
   no letter or digit, is the zero vector). (An L2 normalisation of the sparse
   vector before the projection would change nothing after this one.)

A document's vector depends on that document alone.

Reproducibility: hashing and projection are integer arithmetic; the sums are
fixed-order IEEE additions (``np.bincount``, column-by-column row norms; no
BLAS, no SIMD reductions); the one transcendental, ``1 + ln c`` for integer
counts, comes from a table built with ``math.log``. So the bytes are the same
across processes, ``PYTHONHASHSEED`` values, batch sizes and orders; the
tests pin the SHA-256 of the vectors of a fixed set of documents, so a machine
or NumPy version that computed other bytes would fail them. Changing the
algorithm or a default means a new name (``-v2``): published specifications
name the embedder that made them.

Measured on a 2-core CPU shared with other work (load about 4):
10 000 templated sentences of 9 words embed in 0.4 s on a fresh embedder and
0.25 s once its word cache is warm; 10 000 documents of 12.5 words drawn from
a 20 000-word random vocabulary (every word new, hardly any shared n-gram) in
1.05 s / 0.46 s. Cosine similarity: lexical paraphrases (re-ordered or lightly
reworded sentences) 0.6-0.96; unrelated sentences 0.03 +- 0.09 (max 0.25 over
eight), the 60 varied probe sentences of ``market_template/probes/text.txt``
0.08 +- 0.09 (shared function words). Three templated topics (cooking,
football, finance; 100 sentences each): mean cosine 0.26 within a topic, 0.13
across, 1-nearest-neighbour topic accuracy 100 %; a text RKME (K=50, gamma 0.1)
of 300 sentences of a topic has MMD^2 about 1.5e-3 to 200 held-out sentences of
the same topic and 4-5e-2 to those of another (about 30 times more).

Limits: a bag of n-grams knows no synonyms ("car" and "automobile" are
unrelated to it), and is only as multilingual as shared spellings are; text
without spaces (Chinese, Japanese) becomes a few long "words" whose character
n-grams carry the signal.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import unicodedata
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from learnware_cli.errors import InputError

HASHED_NGRAMS = "lw-hashed-ngrams-v1"
DEFAULT_EMBEDDER = HASHED_NGRAMS
ST_PREFIX = "sentence-transformers:"


@runtime_checkable
class Embedder(Protocol):
    """Turns documents into fixed-size vectors; see the module docstring."""

    name: str
    params: dict
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def params_digest(params: dict) -> str:
    """A short, stable hash (8 hex digits) of a JSON-able params dict (canonical JSON, sorted keys)."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:8]


def embedder_id(name: str, params: dict) -> str:
    """``name#<params hash>``: equal exactly when the embedder's output is the same function of its input."""
    return f"{name}#{params_digest(params)}"


# --------------------------------------------------------------------------- registry

_FACTORIES: dict[str, Callable[..., Embedder]] = {}


def register_embedder(name: str, factory: Callable[..., Embedder]) -> None:
    """Make ``get_embedder(name, **params)`` call ``factory(**params)``."""
    _FACTORIES[name] = factory


def known_embedders() -> tuple[str, ...]:
    """The registered names, plus the plug-in form ``sentence-transformers:<path>``."""
    return tuple(sorted(_FACTORIES)) + (ST_PREFIX + "<local path>",)


def get_embedder(spec: "str | Embedder | None" = None, **params: Any) -> Embedder:
    """An embedder from a name (default the built-in one) and its params, or an Embedder passed through.

    ``"sentence-transformers:<path>"`` loads a local model (see ``SentenceTransformerEmbedder``).
    An unknown name is a one-line InputError naming the known ones.
    """
    if spec is None:
        spec = DEFAULT_EMBEDDER
    if not isinstance(spec, str):
        if isinstance(spec, Embedder):
            if params:
                raise InputError("embedder params cannot be given with an embedder object")
            return spec
        raise InputError(f"embedder must be a name or an Embedder, got {type(spec).__name__}")
    if spec.startswith(ST_PREFIX):
        return SentenceTransformerEmbedder(spec[len(ST_PREFIX):], **params)
    factory = _FACTORIES.get(spec)
    if factory is None:
        raise InputError(f"unknown embedder {spec!r} (known: {', '.join(known_embedders())})")
    try:
        return factory(**params)
    except TypeError as exc:
        raise InputError(f"embedder {spec!r}: bad parameters ({exc})") from None


def check_documents(texts) -> list[str]:
    """texts as a list of str; one-line InputError for a single string (or bytes), a non-iterable,
    or an item that is not a str."""
    if isinstance(texts, (str, bytes)):
        raise InputError("expected a list of documents, got a single string")
    try:
        texts = list(texts)
    except TypeError:
        raise InputError(f"expected a list of documents, got {type(texts).__name__}") from None
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"document {i} is a {type(t).__name__}, not a string")
    return texts


# --------------------------------------------------------------------------- the built-in embedder

_WORD = re.compile(r"[^\W_]+")
_GROUPS = ("w", "b", "c")  # word unigrams, word bigrams, character n-grams
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_CACHE_LIMIT = 200_000  # words (about 350 B each) or n-grams kept before that cache is cleared
_LOG_TABLE_SIZE = 4096
_BATCH_DOCS = 20_000  # documents embedded at once (memory: about 2 KB per word of a batch)
_BLOCK_DOCS = 512  # documents per block of the projection's scatter-add
_BIGRAM_SALT = 0x6C772D6269677261  # "lw-bigra"
with np.errstate(over="ignore"):
    _SLOT_MULTIPLIERS = (np.arange(1, 2 * 64, 2, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) | np.uint64(1)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays (wrapping arithmetic): a fixed, portable integer mix."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


class HashedNgramEmbedder:
    """``lw-hashed-ngrams-v1``: signed feature hashing of word 1-2-grams and in-word character 3-5-grams,
    sublinear tf, per-group L2 weights, then a fixed sparse random projection to ``dim``, L2-normalised.

    Every argument is recorded in ``params`` (and so in the island key). ``embed`` is
    deterministic and the same bytes on every machine; see the module docstring.
    """

    name = HASHED_NGRAMS

    def __init__(
        self,
        dim: int = 256,
        buckets_log2: int = 22,
        char_ngrams: Sequence[int] = (3, 4, 5),
        weights: Sequence[float] = (1.0, 0.5, 1.0),
        nnz: int = 4,
        seed: int = 0,
    ):
        try:
            dim, buckets_log2, nnz, seed = int(dim), int(buckets_log2), int(nnz), int(seed)
            char_ngrams = tuple(sorted({int(n) for n in char_ngrams}))
            weights = tuple(float(w) for w in weights)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{HASHED_NGRAMS}: bad parameters ({exc})") from None
        if not 1 <= dim <= 65536:
            raise InputError(f"{HASHED_NGRAMS}: dim must be between 1 and 65536, got {dim}")
        if not 8 <= buckets_log2 <= 24:
            raise InputError(f"{HASHED_NGRAMS}: buckets_log2 must be between 8 and 24, got {buckets_log2}")
        if not 1 <= nnz <= min(dim, 64):
            raise InputError(f"{HASHED_NGRAMS}: nnz must be between 1 and min(dim, 64), got {nnz}")
        if any(n < 1 or n > 16 for n in char_ngrams):
            raise InputError(f"{HASHED_NGRAMS}: character n-gram sizes must be between 1 and 16, got {list(char_ngrams)}")
        if len(weights) != 3 or not all(math.isfinite(w) and w >= 0 for w in weights) or not any(weights):
            raise InputError(f"{HASHED_NGRAMS}: weights must be 3 non-negative numbers (words, bigrams, characters), not all 0")
        if not 0 <= seed < 2**63:
            raise InputError(f"{HASHED_NGRAMS}: seed must be between 0 and 2**63 - 1, got {seed}")
        self.dim = dim
        self.params = {
            "dim": dim,
            "buckets_log2": buckets_log2,
            "char_ngrams": list(char_ngrams),
            "weights": list(weights),
            "nnz": nnz,
            "seed": seed,
        }
        self._bucket_mask = (1 << buckets_log2) - 1
        self._char_ngrams = char_ngrams
        self._weights = np.asarray(weights, dtype=np.float64)
        self._nnz = nnz
        self._seed = np.uint64(seed)
        self._key = f"{HASHED_NGRAMS}/{seed}".encode()[:64]
        self._words: dict[str, tuple[int, list[int]]] = {}
        self._grams: dict[str, int] = {}
        self._buffers: "tuple[np.ndarray, np.ndarray] | None" = None
        self._log_table = np.array([0.0] + [1.0 + math.log(c) for c in range(1, _LOG_TABLE_SIZE)])

    def __repr__(self) -> str:
        return f"HashedNgramEmbedder({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"

    # ---- features

    def _hash(self, feature: str) -> int:
        """A feature string -> its 64-bit keyed BLAKE2b hash (an unsigned int)."""
        return int.from_bytes(hashlib.blake2b(feature.encode("utf-8", "surrogatepass"), digest_size=8, key=self._key).digest(), "little")

    def _word(self, word: str) -> tuple[int, list[int]]:
        """(unigram hash, character n-gram hashes) of one word, cached (n-gram hashes too)."""
        grams = self._grams
        padded = f"<{word}>"
        chars = []
        for n in self._char_ngrams:
            for i in range(len(padded) - n + 1):
                gram = padded[i : i + n]
                h = grams.get(gram)
                if h is None:
                    h = grams[gram] = self._hash("c\x1f" + gram)
                chars.append(h)
        entry = (self._hash("w\x1f" + word), chars)
        if len(self._words) >= _CACHE_LIMIT:
            self._words.clear()
        if len(grams) >= _CACHE_LIMIT:
            grams.clear()
        self._words[word] = entry
        return entry

    def tokens(self, text: str) -> list[str]:
        """The words of a text after NFKC normalisation and case folding."""
        return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())

    # ---- embedding

    def _features(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(document ids, groups, 64-bit hashes) of every feature occurrence of texts.

        Word and character n-gram hashes are BLAKE2b of the strings; a bigram's
        is SplitMix64 of its two words' hashes (order-sensitive), computed in NumPy.
        """
        n = len(texts)
        words_h: list[int] = []
        chars_h: list[int] = []
        n_words = np.zeros(n, dtype=np.int64)
        n_chars = np.zeros(n, dtype=np.int64)
        cache_get, new_word = self._words.get, self._word
        normalize, findall = unicodedata.normalize, _WORD.findall
        add_word, add_chars = words_h.append, chars_h.extend
        for i, text in enumerate(texts):
            words = findall(normalize("NFKC", text).casefold())
            if not words:
                continue
            before = len(chars_h)
            for word in words:
                entry = cache_get(word) or new_word(word)
                add_word(entry[0])
                add_chars(entry[1])
            n_words[i] = len(words)
            n_chars[i] = len(chars_h) - before
        docs = np.arange(n, dtype=np.int64)
        word_docs = np.repeat(docs, n_words)
        word_hashes = np.array(words_h, dtype=np.uint64)
        same_doc = word_docs[1:] == word_docs[:-1]  # adjacent words of one document form a bigram
        with np.errstate(over="ignore"):
            pair_hashes = _splitmix64((word_hashes[:-1] * np.uint64(0x9E3779B97F4A7C15)) ^ word_hashes[1:] ^ np.uint64(_BIGRAM_SALT))[same_doc]
        pair_docs = word_docs[1:][same_doc]
        doc_ids = np.concatenate([word_docs, pair_docs, np.repeat(docs, n_chars)])
        sizes = [len(word_docs), len(pair_docs), len(chars_h)]
        groups = np.repeat(np.arange(3, dtype=np.int64), sizes)
        hashes = np.concatenate([word_hashes, pair_hashes, np.array(chars_h, dtype=np.uint64)])
        return doc_ids, groups, hashes

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float64 (n, dim), rows of unit norm (or zero for a document with no word).

        A document's vector depends on that document alone (not on the batch, its
        order, or what was embedded before); large inputs go in batches of
        ``_BATCH_DOCS`` documents to bound memory. Not thread-safe (one embedder
        per thread).
        """
        texts = check_documents(texts)
        if len(texts) > _BATCH_DOCS:
            return np.vstack([self._embed(texts[i : i + _BATCH_DOCS]) for i in range(0, len(texts), _BATCH_DOCS)])
        return self._embed(texts)

    def _embed(self, texts: list[str]) -> np.ndarray:
        n, dim, nnz = len(texts), self.dim, self._nnz
        doc_ids, groups, hashes = self._features(texts)
        if hashes.size == 0:
            return np.zeros((n, dim))

        # signed counts per (document, group, bucket): sort keys that end in the hash's sign bit, sum runs
        bits = int(self.params["buckets_log2"])
        bucket = (hashes & np.uint64(self._bucket_mask)).astype(np.int64)
        key = np.sort((((doc_ids * 3 + groups) << bits | bucket) << 1) | (hashes >> np.uint64(63)).astype(np.int64))
        base = key >> 1
        starts = np.flatnonzero(np.concatenate(([True], base[1:] != base[:-1])))
        signed = np.add.reduceat(1.0 - 2.0 * (key & 1), starts)  # exact: sums of +-1
        base = base[starts]

        # sublinear tf sign(c) (1 + ln|c|), from a table of math.log values
        magnitude = np.abs(signed).astype(np.int64)
        if magnitude.max(initial=0) < _LOG_TABLE_SIZE:
            tf = self._log_table[magnitude]
        else:
            tf = np.array([self._log_table[c] if c < _LOG_TABLE_SIZE else 1.0 + math.log(int(c)) for c in magnitude])
        values = np.sign(signed) * tf

        # per (document, group) L2 normalisation, times the group's weight
        doc_group = base >> bits
        norms = np.sqrt(np.bincount(doc_group, weights=values * values, minlength=3 * n))
        scale = np.divide(np.tile(self._weights, n), norms, out=np.zeros(3 * n), where=norms > 0)
        values *= scale[doc_group]

        # the sparse random projection, tabulated for the buckets in use: bucket b -> nnz (row, sign) pairs
        bucket = base & self._bucket_mask
        used, position = self._scratch()
        used[bucket] = True
        in_use = np.flatnonzero(used)
        used[in_use] = False  # clean for the next call
        position[in_use] = np.arange(in_use.size, dtype=np.int32)
        rows, signs = self._projection(in_use.astype(np.uint64))
        entry = position[bucket]

        # scatter-add slot by slot, a block of documents at a time (the block's output stays in cache);
        # the order of the additions is fixed, so the sums are the same bytes everywhere
        out = np.zeros((n, dim))
        doc = doc_group // 3
        bounds = np.searchsorted(doc, np.arange(0, n + _BLOCK_DOCS, _BLOCK_DOCS))
        for first, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            if lo == hi:
                continue
            start = first * _BLOCK_DOCS
            count = min(_BLOCK_DOCS, n - start)
            offset = (doc[lo:hi] - start) * dim
            block = out[start : start + count].reshape(-1)
            for j in range(nnz):
                block += np.bincount(offset + rows[entry[lo:hi], j], weights=values[lo:hi] * signs[entry[lo:hi], j], minlength=count * dim)

        # row norms in a fixed order (column by column), so the bytes do not depend on SIMD reductions
        sq = np.zeros(n)
        for j in range(dim):
            column = out[:, j]
            sq += column * column
        norm = np.sqrt(sq)
        np.divide(out, norm[:, None], out=out, where=norm[:, None] > 0)
        return out

    def _scratch(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-bucket buffers kept between calls: a clean bool mask and an int32 position table."""
        if self._buffers is None:
            size = self._bucket_mask + 1
            self._buffers = (np.zeros(size, dtype=bool), np.zeros(size, dtype=np.int32))
        return self._buffers

    def _projection(self, buckets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Buckets uint64 (U,) -> (rows int64 (U, nnz) in [0, dim), signs float64 (U, nnz) = +-1/sqrt(nnz)).

        h = SplitMix64(bucket xor seed-mix); slot j uses the top 32 bits of h * c_j
        (odd constants) for its row (Lemire's multiply-shift range reduction) and
        bit 31 for its sign. Rows of one bucket may coincide (then they add up),
        as in a sparse Johnson-Lindenstrauss map with independent slots.
        """
        with np.errstate(over="ignore"):
            h = _splitmix64(buckets ^ (self._seed * np.uint64(0xD6E8FEB86659FD93)))
            product = h[:, None] * _SLOT_MULTIPLIERS[None, : self._nnz]
        rows = (((product >> np.uint64(32)) * np.uint64(self.dim)) >> np.uint64(32)).astype(np.int64)
        signs = (1.0 - 2.0 * ((product >> np.uint64(31)) & np.uint64(1)).astype(np.float64)) / math.sqrt(self._nnz)
        return rows, signs


register_embedder(HASHED_NGRAMS, HashedNgramEmbedder)


# --------------------------------------------------------------------------- the sentence-transformers plug-in


class SentenceTransformerEmbedder:
    """``sentence-transformers:<path>``: a sentence-transformers model already on disk, loaded offline.

    The package is imported only here, with ``HF_HUB_OFFLINE=1`` and
    ``TRANSFORMERS_OFFLINE=1`` set and ``local_files_only=True``: nothing is
    downloaded. A missing package or path is a one-line InputError. ``name``
    is ``sentence-transformers:<directory name>`` (the model, not where it
    lies), so developers with the same model in different folders share an
    island; ``params`` = {"normalize": ...}.
    """

    def __init__(self, path: str, normalize: bool = True, batch_size: int = 64):
        if not path:
            raise InputError(f"embedder {ST_PREFIX!r} needs a local model path: {ST_PREFIX}<path>")
        folder = Path(path).expanduser()
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise InputError(
                f"embedder {ST_PREFIX}{path}: the sentence-transformers package is not installed "
                "(pip install sentence-transformers, or use the built-in lw-hashed-ngrams-v1)"
            ) from None
        if not folder.is_dir():
            raise InputError(f"embedder {ST_PREFIX}{path}: no such model folder (give the path of a model already on disk; lw never downloads)")
        try:
            self._model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        except TypeError:  # older sentence-transformers without local_files_only
            self._model = SentenceTransformer(str(folder), device="cpu")
        except Exception as exc:  # noqa: BLE001 -- a broken model folder, reported in one line
            raise InputError(f"embedder {ST_PREFIX}{path}: cannot load the model ({type(exc).__name__}: {exc})".splitlines()[0]) from None
        self.name = ST_PREFIX + folder.resolve().name
        self.params = {"normalize": bool(normalize)}
        self.dim = int(self._model.get_sentence_embedding_dimension())
        self._batch_size = int(batch_size)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_documents(texts)
        if not texts:
            return np.zeros((0, self.dim))
        vectors = self._model.encode(
            texts, batch_size=self._batch_size, normalize_embeddings=self.params["normalize"], convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float64).reshape(len(texts), self.dim)


__all__ = [
    "DEFAULT_EMBEDDER",
    "HASHED_NGRAMS",
    "Embedder",
    "HashedNgramEmbedder",
    "SentenceTransformerEmbedder",
    "embedder_id",
    "get_embedder",
    "known_embedders",
    "params_digest",
    "register_embedder",
]
