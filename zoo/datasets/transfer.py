"""Transfer targets of the fine-tuning study: related data sets made offline.

- "mnist1d-shifted": mnist1d made by the mnist1d package with new samples (seed 1) and twice
  the correlated noise (0.5) and shear (1.5) of the default arguments.
- "digits-transposed": scikit-learn's 8x8 digits transposed (x and y swapped), on a new
  stratified 75/25 split (random_state 1).
Both keep the input shape and classes of their source, so a model is reused as it is.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from zoo.datasets import builtin
from zoo.datasets.base import DataBundle
from zoo.datasets.builtin import DIGITS_INFO, MNIST1D_INFO
from zoo.datasets.normalize import normalize_images

MNIST1D_SHIFT = {"seed": 1, "corr_noise_scale": 0.5, "shear_scale": 1.5}


def shifted_mnist1d() -> DataBundle:
    """mnist1d with new samples, more correlated noise and more shear (MNIST1D_SHIFT)."""
    import mnist1d.data

    arguments = mnist1d.data.get_dataset_args(as_dict=True)
    arguments.update(MNIST1D_SHIFT)
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:  # make_dataset seeds the global generators; leave them as they were
        data = mnist1d.data.make_dataset(mnist1d.data.ObjectView(arguments))
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)

    def pair(x: str, y: str) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.from_numpy(np.ascontiguousarray(data[x], dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray(data[y], dtype=np.int64)))

    return DataBundle("mnist1d-shifted", MNIST1D_INFO, pair("x", "y"), pair("x_test", "y_test"))


def transposed_digits() -> DataBundle:
    """8x8 digits with rows and columns swapped, on a new stratified 75/25 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.ascontiguousarray(digits.images.transpose(0, 2, 1), dtype=np.float32) / 16.0
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target.astype(np.int64), test_size=0.25, random_state=1,
        stratify=digits.target)

    def pair(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(x).reshape(-1, 1, 8, 8), torch.from_numpy(y)

    bundle = DataBundle("digits-transposed", DIGITS_INFO, pair(x_train, y_train),
                        pair(x_test, y_test))
    # the zoo's models saw digits normalised with digits' train statistics: so does the target
    return normalize_images(bundle, normalize_images(builtin.load_digits()).normalization)
