"""Data files of each kind, and the specification fitted to them: what `lw spec`, `lw pack`, `lw search --data` and `lw reuse --data` share.

Kinds (``KINDS``) and what a file of each holds:

- table: rows x columns (.csv with an optional header, .parquet, .npy, .npz),
  read by ``data_io.read_matrix`` (missing cells -> column means; `lw spec`
  streams the file with ``data_io.scan_table`` instead and never holds it);
- image: images (.npy / .npz arrays N x H x W, N x H x W x C or N x C x H x W,
  or a folder of PNG/JPEG files), read by ``specs.image_data.read_images``;
- text: documents (.txt one per line, .csv/.tsv with a text column, .jsonl),
  read by ``specs.text_data.read_texts``.

``infer_kind`` guesses the kind from the path when the user does not say it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from learnware_cli.errors import InputError

KINDS = ("table", "image", "text")
DATA_TYPE = {"table": "Table", "image": "Image", "text": "Text"}  # kind -> semantic Data
KIND_OF_DATA_TYPE = {value: key for key, value in DATA_TYPE.items()}
SPEC_TYPE = {"table": "RKMETableSpecification", "image": "RKMEImageSpecification", "text": "RKMETextSpecification"}
TEXT_SUFFIXES = (".txt", ".jsonl", ".ndjson")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class Loaded:
    """A data file read for one kind: values (a float table, images, or a list of texts) and notes."""

    kind: str
    values: Any
    path: Path
    replaced: int = 0  # table cells replaced by column means
    header: Optional[list] = None  # a table's column names
    notes: list = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.values)

    def describe(self) -> str:
        if self.kind == "table":
            return f"{self.values.shape[0]} rows x {self.values.shape[1]} columns"
        if self.kind == "image":
            return f"{len(self.values)} images of {' x '.join(str(s) for s in self.values.shape[1:])}"
        return f"{len(self.values)} documents"


def check_kind(kind: Optional[str]) -> Optional[str]:
    if kind is not None and kind not in KINDS:
        raise InputError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind


def infer_kind(path: Path, kind: Optional[str] = None, text_column: Optional[str] = None) -> str:
    """The kind the user gave, else: a folder or an image file -> image; .txt/.jsonl or a --text-column -> text;
    a .npy/.npz array of 3 or more dimensions -> image; anything else -> table."""
    if check_kind(kind) is not None:
        return kind
    path = Path(path)
    if text_column is not None or path.suffix.lower() in TEXT_SUFFIXES:
        return "text"
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return "image"
    if path.suffix.lower() in (".npy", ".npz") and path.is_file() and _array_ndim(path) >= 3:
        return "image"
    return "table"


def _array_ndim(path: Path) -> int:
    """Dimensions of the (first) array in a .npy/.npz file, without reading its data; 0 if unreadable."""
    import numpy as np

    try:
        stored = np.load(path, mmap_mode="r", allow_pickle=False)
        if isinstance(stored, np.lib.npyio.NpzFile):
            with stored:
                return stored[stored.files[0]].ndim if stored.files else 0
        return stored.ndim
    except (OSError, ValueError):
        return 0  # the reader reports it


def read_data(path: Path, kind: str, text_column: Optional[str] = None) -> Loaded:
    """Read a data file of the given kind (one-line InputError on any defect)."""
    path = Path(path)
    if kind == "text":
        from learnware_cli.specs.text_data import read_texts

        return Loaded("text", read_texts(path, column=text_column), path)
    if text_column is not None:
        raise InputError("--text-column is for text data (--kind text)")
    if kind == "image":
        from learnware_cli.specs.image_data import read_images

        return Loaded("image", read_images(path), path)
    from learnware_cli.data_io import read_matrix

    table = read_matrix(path, fill=True)
    return Loaded("table", table.values, path, replaced=table.replaced, header=table.header)


def fit_spec(loaded: Loaded, k: Optional[int], gamma: float, seed: int = 0, steps: Optional[int] = None, on_stage: Optional[Callable] = None, embedder: Optional[str] = None):
    """The specification of loaded data, of its kind, with K points (None: the kind's default, e.g. 16
    synthetic images as the reference; tables and texts: 100) and gamma where the kind has one."""
    from learnware_cli.specs import spec_class

    cls = spec_class(SPEC_TYPE[loaded.kind])
    if loaded.kind == "table":
        from learnware_cli.rkme import fit_rkme

        return fit_rkme(loaded.values, k=k or 100, gamma=gamma, seed=seed, on_stage=on_stage, **({} if steps is None else {"steps": steps}))
    params = {"seed": seed}
    if k is not None or loaded.kind == "text":
        params["K"] = min(k or 100, loaded.rows)
    if loaded.kind == "text":
        params["gamma"] = gamma
        if embedder is not None:
            params["embedder"] = embedder
    elif embedder is not None:
        raise InputError("--embedder is for text data")
    if steps is not None:
        params["steps"] = steps
    return cls.fit(loaded.values, **params)
