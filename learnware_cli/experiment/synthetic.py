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


def write_spec_only_learnwares(market, specs, semantics, chunk: int = 5000) -> list[str]:
    """Store entries that carry a spec but no runnable model, in bulk transactions.

    For benchmarks and search tests only: `lw submit` would (rightly) reject
    them. Returns the new ids in order.
    """
    import tempfile
    import zipfile
    from pathlib import Path

    from learnware_cli.market.store import NewVersion

    ids = []
    with tempfile.TemporaryDirectory() as tmp:
        placeholder = Path(tmp) / "package.zip"
        with zipfile.ZipFile(placeholder, "w") as zf:
            zf.writestr("README.txt", "spec-only synthetic entry")
        for start in range(0, len(specs), chunk):
            items = []
            for i in range(start, min(start + chunk, len(specs))):
                spec_path = Path(tmp) / f"{i}.json"
                specs[i].save(spec_path)
                record = {"input_dim": specs[i].dim, "output_dim": semantics[i]["Output"]["Dimension"], "spec_only": True}
                items.append(NewVersion({"package.zip": placeholder, "rkme.json": spec_path}, semantics[i], record, spec=specs[i]))
            ids += [entry["id"] for entry, _ in market.add_versions(items)]
            for item in items:
                item.files["rkme.json"].unlink()
    return ids
