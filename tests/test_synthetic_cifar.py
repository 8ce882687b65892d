"""benchmarks.synthetic_cifar: files in the official binary layout that the CIFAR loaders read."""

import pytest

from benchmarks.synthetic_cifar import write_synthetic
from zoo import datasets


@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100)])
def test_synthetic_files_load_as_the_real_data_set(tmp_path, name, classes):
    folder = write_synthetic(tmp_path, name, train=230, test=120)
    bundle = datasets.load(name, root=str(tmp_path))
    assert folder.parent == tmp_path
    assert bundle.train[0].shape == (230, 3, 32, 32) and bundle.test[0].shape == (120, 3, 32, 32)
    assert bundle.train[1].tolist() == [i % classes for i in range(230)]  # labels cycle
    assert bundle.normalization is not None  # normalised per channel like the real files
    again = write_synthetic(tmp_path / "again", name, train=230, test=120)
    assert datasets.load(name, root=str(again.parent)).fingerprint() == bundle.fingerprint()
