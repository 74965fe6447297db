"""Write the demo's files: developers' training data and models, and a user's data.

    python -m learnware_cli.experiment.demo_data OUT_DIR [--developers 6]

OUT_DIR/dev_N/{X.csv, y.csv, model.joblib}: developer N's region and model.
OUT_DIR/user_X.csv, user_y.csv: a user drawn 60/40 from regions 0 and 1 (held out).
OUT_DIR/user_labeled_X.csv, user_labeled_y.csv: 50 labeled rows of the same user.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from learnware_cli.experiment.synthetic import make_regions, sample_mixture

DIM = 6


def write_csv(path: Path, arr: np.ndarray, header: list[str] | None = None) -> None:
    arr = arr if arr.ndim == 2 else arr[:, None]
    np.savetxt(path, arr, delimiter=",", fmt="%.6g", header=",".join(header) if header else "", comments="")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--developers", type=int, default=6)
    parser.add_argument("--rows", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import joblib
    from sklearn.ensemble import GradientBoostingRegressor

    rng = np.random.default_rng(args.seed)
    regions = make_regions(args.developers, DIM, seed=args.seed)
    header = [f"x{i}" for i in range(DIM)]
    args.out.mkdir(parents=True, exist_ok=True)
    for i, region in enumerate(regions):
        folder = args.out / f"dev_{i}"
        folder.mkdir(exist_ok=True)
        x = region.sample(args.rows, rng)
        y = region.target(x)
        write_csv(folder / "X.csv", x, header)
        write_csv(folder / "y.csv", y)
        # converts to ONNX (the demo packs code-free learnwares); skl2onnx 1.20 cannot convert
        # HistGradientBoosting fitted by this scikit-learn (its tree node ids are uint32)
        model = GradientBoostingRegressor(n_estimators=150, max_depth=3, random_state=args.seed).fit(x, y)
        joblib.dump(model, folder / "model.joblib")
    proportions = [0.6, 0.4] + [0.0] * (args.developers - 2)
    x, y, _ = sample_mixture(regions, proportions, 1000, rng)
    write_csv(args.out / "user_X.csv", x, header)
    write_csv(args.out / "user_y.csv", y)
    x, y, _ = sample_mixture(regions, proportions, 50, rng)
    write_csv(args.out / "user_labeled_X.csv", x, header)
    write_csv(args.out / "user_labeled_y.csv", y)
    print(f"wrote {args.developers} developers and a user (60/40 from regions 0 and 1) to {args.out}")


if __name__ == "__main__":
    main()
