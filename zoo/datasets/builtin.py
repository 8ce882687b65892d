"""Small classification data sets that ship with installed packages: mnist1d and digits."""

from __future__ import annotations

import random

import numpy as np
import torch

from zoo.datasets.base import DataBundle, DataInfo

MNIST1D_INFO = DataInfo("classification", (40,), 10)
DIGITS_INFO = DataInfo("classification", (1, 8, 8), 10)


def load_mnist1d() -> DataBundle:
    """mnist1d built offline with the package's default arguments and its own 4000/1000 split.

    Returns:
        train/test = (x (N, 40) float32, y (N,) int64).
    """
    import mnist1d.data

    # make_dataset seeds Python's and NumPy's global generators; put them back afterwards so
    # that building data never changes anything else's random stream.
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        # Never get_dataset: it tries the network first.
        data = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)

    def pair(x_key: str, y_key: str) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(data[x_key], dtype=np.float32))
        y = torch.from_numpy(np.ascontiguousarray(data[y_key], dtype=np.int64))
        return x, y

    return DataBundle("mnist1d", MNIST1D_INFO, pair("x", "y"), pair("x_test", "y_test"))


def load_digits() -> DataBundle:
    """scikit-learn's 8x8 digits with a fixed stratified 75/25 split (random_state 0).

    Returns:
        train/test = (x (N, 1, 8, 8) float32 in [0, 1], y (N,) int64); 1347 train, 450 test.
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    images = digits.images.astype(np.float32) / 16.0  # pixel values are counts 0..16
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, random_state=0, stratify=labels
    )

    def pair(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x_t = torch.from_numpy(np.ascontiguousarray(x)).reshape(-1, 1, 8, 8)
        return x_t, torch.from_numpy(np.ascontiguousarray(y))

    return DataBundle("digits", DIGITS_INFO, pair(x_train, y_train), pair(x_test, y_test))
