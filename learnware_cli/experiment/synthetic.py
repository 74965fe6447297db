"""Synthetic learnware worlds with a known truth, for the demo, tests and benchmarks.

Each region is a Gaussian blob in d dimensions with its own labelling rule, so
a model trained on one region is good there and poor elsewhere, and RKME
search has a right answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Region:
    center: np.ndarray  # (d,)
    scale: float
    weights: np.ndarray  # (d,) linear part of the rule
    bias: float
    curvature: float  # nonlinear part: curvature * sin(x . weights)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.center + self.scale * rng.normal(size=(n, self.center.shape[0]))

    def target(self, x: np.ndarray) -> np.ndarray:
        t = (x - self.center) @ self.weights
        return t + self.bias + self.curvature * np.sin(2.0 * t)

    def label(self, x: np.ndarray) -> np.ndarray:
        """Binary rule: which side of the region's own (curved) boundary."""
        return (self.target(x) > self.bias).astype(int)


def make_regions(n_regions: int, dim: int, seed: int = 0, spread: float = 6.0) -> list[Region]:
    """Regions with well-separated centers and unrelated rules."""
    rng = np.random.default_rng(seed)
    regions = []
    for _ in range(n_regions):
        w = rng.normal(size=dim)
        regions.append(
            Region(
                center=rng.uniform(-spread, spread, size=dim),
                scale=float(rng.uniform(0.8, 1.2)),
                weights=w / np.linalg.norm(w),
                bias=float(rng.normal() * 2.0),
                curvature=float(rng.uniform(0.5, 1.5)),
            )
        )
    return regions


def sample_mixture(regions: list[Region], proportions: list[float], n: int, rng: np.random.Generator, task: str = "regression"):
    """n rows drawn from regions in the given proportions -> (X, y, region index per row)."""
    counts = rng.multinomial(n, np.asarray(proportions) / np.sum(proportions))
    xs, ys, origin = [], [], []
    for i, (region, count) in enumerate(zip(regions, counts)):
        if count == 0:
            continue
        x = region.sample(count, rng)
        xs.append(x)
        ys.append(region.target(x) if task == "regression" else region.label(x))
        origin.append(np.full(count, i))
    order = rng.permutation(n)
    return np.concatenate(xs)[order], np.concatenate(ys)[order], np.concatenate(origin)[order]


def spec_only_semantic(name: str, dim: int, task: str = "Regression", scenario: str = "Others", output_dim: int = 1) -> dict:
    """A valid semantic specification for synthetic entries."""
    return {
        "Data": {"Values": ["Table"], "Type": "Class"},
        "Task": {"Values": [task], "Type": "Class"},
        "Library": {"Values": ["Scikit-learn"], "Type": "Class"},
        "Scenario": {"Values": [scenario], "Type": "Tag"},
        "License": {"Values": ["MIT"], "Type": "Class"},
        "Name": {"Values": name, "Type": "String"},
        "Description": {"Values": f"synthetic learnware {name}", "Type": "String"},
        "Input": {"Dimension": dim, "Description": {}},
        "Output": {"Dimension": output_dim, "Description": {}},
    }


SPEC_MEMBER = "rkme.json"  # the one file of a spec-only entry's package.zip (its record's spec_file)


def spec_json(spec) -> bytes:
    """``json.dumps(spec.to_json_dict())``, compact, 3-4x faster for a table RKME: z and beta are formatted by
    Arrow's float-to-string cast, the shortest text that reads back as the same float64 (a K = 100, d = 20 spec:
    0.33 ms instead of 1 ms, which was the largest CPU cost of a bulk build). Numbers may be spelled otherwise than Python
    spells them ("1" for 1.0, "0.00001" for 1e-05), never with another value; a -0.0, which JSON text reads back as
    0, takes the json module instead, as does every other kind of specification.
    """
    import json

    from learnware_cli.rkme.spec import RKMESpec

    obj = spec.to_json_dict()
    arrays = {key: np.asarray(getattr(spec, key), dtype=np.float64) for key in ("z", "beta")} if type(spec) is RKMESpec else {}
    if not arrays or arrays["z"].ndim != 2 or arrays["beta"].ndim != 1 or any(np.signbit(a[a == 0]).any() for a in arrays.values()):
        return json.dumps(obj, separators=(",", ":")).encode()
    import pyarrow as pa
    import pyarrow.compute as pc

    z, beta = arrays["z"], arrays["beta"]
    count, width = z.shape
    numbers = pc.cast(pa.array(np.concatenate([z.ravel(), beta])), pa.string())  # one cast: its call costs as much as its work
    ends = np.concatenate([np.arange(0, count * width + 1, width), [count * width + beta.size]]).astype(np.int32)
    lines = pc.binary_join(pa.ListArray.from_arrays(pa.array(ends), numbers), ",").to_pylist()  # z's rows, then beta
    parts = []
    for key, value in obj.items():
        if key == "z":
            value_text = "[[" + "],[".join(lines[:count]) + "]]"
        elif key == "beta":
            value_text = "[" + lines[count] + "]"
        else:
            value_text = json.dumps(value, separators=(",", ":"))
        parts.append(json.dumps(key) + ":" + value_text)
    return ("{" + ",".join(parts) + "}").encode()


def spec_only_package(spec) -> bytes:
    """package.zip of a spec-only entry: the spec's JSON (the reference's text layout) as its one member.

    The JSON is ``spec_json``'s. Deflated with zlib's Huffman-only strategy: a spec is mostly decimal
    digits, which back-references barely shorten, so it packs a K = 100, d = 20
    spec (40 KB of text) to 19.2-19.7 KB in 0.2 ms, where zlib's levels give
    20.9 KB in 0.4 ms (level 1: 6 disk blocks of 4 KiB) to 20.3 KB in 2 ms
    (levels 6-9: 5 or 6 blocks); 19.7 KB always fits 5. (Z_FILTERED at level 6:
    18.4 KB in 2.9 ms, no fewer blocks; bzip2 17.4 KB in 2.5 ms, 1 ms to read.)
    zipfile cannot pick a strategy, so the archive (one local header, the
    data, one central directory entry, the end record) is written here;
    zipfile and the market's package reader read it as any other zip.
    """
    import struct
    import zipfile
    import zlib

    data = spec_json(spec)
    packer = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15, 9, zlib.Z_HUFFMAN_ONLY)
    packed = packer.compress(data) + packer.flush()
    name = SPEC_MEMBER.encode()
    crc, date = zlib.crc32(data), (0 << 9) | (1 << 5) | 1  # DOS date 1980-01-01, time 00:00: the same bytes for the same spec
    common = struct.pack("<HHHHHIII", 20, 0, zipfile.ZIP_DEFLATED, 0, date, crc, len(packed), len(data))
    local = b"PK\x03\x04" + common + struct.pack("<HH", len(name), 0) + name
    central = b"PK\x01\x02" + struct.pack("<H", 3 << 8 | 20) + common + struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0o100644 << 16, 0) + name
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 1, 1, len(central), len(local) + len(packed), 0)
    return local + packed + central + end


def write_spec_only_learnwares(market, specs, semantics, chunk: int = 5000) -> list[str]:
    """Store entries that carry a spec but no runnable model, in bulk transactions.

    For benchmarks and search tests only: `lw submit` would (rightly) reject
    them. Each entry's package.zip holds its spec (``spec_only_package``) and
    its record names that file (``spec_file``), so the market keeps no other
    copy of it, as for a submitted learnware. Returns the new ids in order.
    """
    from learnware_cli.market.store import NewVersion

    ids = []
    for start in range(0, len(specs), chunk):
        items = []
        for i in range(start, min(start + chunk, len(specs))):
            record = {"input_dim": specs[i].dim, "output_dim": semantics[i]["Output"]["Dimension"], "spec_only": True, "spec_file": SPEC_MEMBER}
            items.append(NewVersion({"package.zip": spec_only_package(specs[i])}, semantics[i], record, spec=specs[i]))
        ids += [entry["id"] for entry, _ in market.add_versions(items)]
    return ids
