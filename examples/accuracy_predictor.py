"""Accuracy from weights (Unterthiner et al. 2020): per-layer statistics, then a linear model.

    python examples/accuracy_predictor.py ZOO_FOLDER
"""

import argparse

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score

from loaders import ZooDataset


def table(zoo: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of one split: the stats of every layout (same length across widths), stacked."""
    ds = ZooDataset(zoo, split=split, split_by="cell", epochs="all", representation="stats",
                    targets=["test_accuracy"])
    print(ds)
    parts = [ds.arrays(layout) for layout in ds.layouts]
    x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    finite = np.isfinite(x).all(1) & np.isfinite(y).all(1)
    return x[finite], y[finite, 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zoo", help="a zoo folder")
    args = parser.parse_args()
    x, y = table(args.zoo, "train")
    x_test, y_test = table(args.zoo, "test")
    mean, std = x.mean(0), x.std(0) + 1e-8
    model = Ridge(alpha=1.0).fit((x - mean) / std, y)
    predicted = model.predict((x_test - mean) / std)
    print(f"{len(y)} train rows, {len(y_test)} test rows; test R^2 "
          f"{r2_score(y_test, predicted):.3f}, mean absolute error "
          f"{np.abs(predicted - y_test).mean():.4f}")


if __name__ == "__main__":
    main()
