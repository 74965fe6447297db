"""Every Python block of README.md runs verbatim, next to a market made the way `make demo` makes it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    """demo-market/ and demo-work/ as `make demo` leaves them (developers packed and submitted)."""
    from learnware_cli.experiment import demo_data
    from learnware_cli.market.pack import pack_sklearn
    from learnware_cli.market.semantic import build_semantic
    from learnware_cli.market.store import Market
    from learnware_cli.market.submit import submit_packages
    from learnware_cli.rkme import fit_rkme

    folder = tmp_path_factory.mktemp("readme")
    work = folder / "demo-work"
    demo_data.main([str(work)])
    market = Market.create(folder / "demo-market", name="demo")
    zips = []
    for dev in sorted(work.glob("dev_*")):
        import numpy as np

        x = np.loadtxt(dev / "X.csv", delimiter=",", skiprows=1)
        fit_rkme(x, k=market.k, gamma=market.gamma, seed=0).save(dev / "rkme.json")
        semantic = build_semantic(f"sales model {dev.name}", "demo", "Table", "Regression", "Scikit-learn", ["Business"], "MIT", x.shape[1], 1)
        zips.append(pack_sklearn(dev / "model.joblib", dev / "rkme.json", semantic, dev / "learnware.zip"))
    assert all(o.accepted for o in submit_packages(market, zips))
    return folder


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_readme_python_block_runs_verbatim(number, demo_folder):
    result = subprocess.run([sys.executable, "-c", BLOCKS[number]], cwd=demo_folder, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"README block {number + 1} failed:\n{BLOCKS[number]}\n{result.stderr[-3000:]}"
