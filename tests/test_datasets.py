"""The data-set registry: built-ins, folder formats written tiny into tmp_path, every error."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo import datasets
from zoo.datasets import convection, text
from zoo.errors import DataError, SpecError

ALL_NAMES = [
    "cifar10", "cifar100", "convection", "digits", "digits-transposed", "mnist1d",
    "mnist1d-shifted", "stdlib-text", "svhn", "text-folder", "tiny-imagenet",
]
SMALL_TEXT = {"max_chars": 30_000, "context": 32}


@pytest.fixture(scope="module")
def mnist1d() -> datasets.DataBundle:
    return datasets.load("mnist1d")


@pytest.fixture(scope="module")
def digits() -> datasets.DataBundle:
    return datasets.load("digits")


def test_names_are_sorted_and_complete() -> None:
    assert datasets.names() == ALL_NAMES


# ---------------------------------------------------------------- built-ins


def test_mnist1d_shapes_info_and_determinism(mnist1d: datasets.DataBundle) -> None:
    assert mnist1d.info == datasets.DataInfo("classification", (40,), 10)
    (x, y), (x_test, y_test) = mnist1d.train, mnist1d.test
    assert x.shape == (4000, 40) and x.dtype == torch.float32
    assert y.shape == (4000,) and y.dtype == torch.int64
    assert x_test.shape == (1000, 40) and y_test.shape == (1000,)
    assert set(y.tolist()) == set(range(10))
    python_state, numpy_state = random.getstate(), np.random.get_state()
    again = datasets.load("mnist1d")
    assert again.fingerprint() == mnist1d.fingerprint()
    assert random.getstate() == python_state  # mnist1d's global seeding is undone
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])


def test_digits_shapes_and_range(digits: datasets.DataBundle) -> None:
    assert digits.info == datasets.DataInfo("classification", (1, 8, 8), 10)
    (x, y), (x_test, y_test) = digits.train, digits.test
    assert x.shape == (1347, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x_test.shape == (450, 1, 8, 8) and y_test.shape == (450,)
    raw = x * digits.normalization.std[0] + digits.normalization.mean[0]
    assert float(raw.min()) == pytest.approx(0.0, abs=1e-6)
    assert float(raw.max()) == pytest.approx(1.0, abs=1e-6)
    assert datasets.load("digits").fingerprint() == digits.fingerprint()


def test_image_sets_are_normalised_per_channel_with_train_statistics(digits) -> None:
    from sklearn.datasets import load_digits

    stats = digits.normalization
    assert stats is not None and len(stats.mean) == len(stats.std) == 1
    x = digits.train[0].double()
    assert float(x.mean()) == pytest.approx(0.0, abs=1e-6)  # train: mean 0, std 1 exactly
    assert float(x.std(correction=0)) == pytest.approx(1.0, abs=1e-6)
    # direct: the 1347 train images of the stratified split, pixel counts / 16
    pixels = load_digits().images.reshape(-1) / 16.0
    assert 0.0 < stats.mean[0] < 1.0 and stats.mean[0] == pytest.approx(pixels.mean(), rel=0.05)
    raw_test = digits.test[0].double() * stats.std[0] + stats.mean[0]
    assert float(raw_test.min()) == pytest.approx(0.0, abs=1e-6)  # test: the train's statistics
    assert datasets.load("mnist1d").normalization is None  # not an image set
    assert stats.to_dict() == {"mean": [stats.mean[0]], "std": [stats.std[0]]}
    assert digits.subsample(0.5).normalization == stats


def test_channel_statistics_and_normalisation_match_a_direct_computation() -> None:
    from zoo.datasets.base import DataBundle, DataInfo
    from zoo.datasets.normalize import channel_statistics, normalize_images

    g = torch.Generator().manual_seed(0)
    images = torch.rand(50, 3, 4, 4, generator=g) * torch.tensor([1.0, 0.5, 0.2])[:, None, None]
    direct = images.double().permute(1, 0, 2, 3).reshape(3, -1)
    stats = channel_statistics(images)
    assert stats.mean == pytest.approx(direct.mean(1).tolist(), rel=1e-12)
    assert stats.std == pytest.approx(direct.std(1, correction=0).tolist(), rel=1e-12)
    info = DataInfo("classification", (3, 4, 4), 2)
    bundle = DataBundle("toy", info, (images.clone(), torch.zeros(50)), (images[:5].clone(),
                                                                          torch.zeros(5)))
    out = normalize_images(bundle)
    expected = (images - torch.tensor(stats.mean)[:, None, None]) / torch.tensor(
        stats.std)[:, None, None]
    torch.testing.assert_close(out.train[0], expected.float(), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="toy: the images are already normalised"):
        normalize_images(out)


@pytest.mark.parametrize("kind", ["crop-flip", "crop-flip-rotate"])
def test_augmenting_normalised_images_equals_normalising_augmented_ones(kind) -> None:
    from zoo.augment import augment
    from zoo.datasets.base import Normalization

    stats = Normalization((0.4, 0.5, 0.3), (0.2, 0.25, 0.1))
    mean, std = (torch.tensor(v)[:, None, None] for v in (stats.mean, stats.std))
    images = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    raw = augment(images, kind, torch.Generator().manual_seed(2))
    normalised = augment((images - mean) / std, kind, torch.Generator().manual_seed(2),
                         stats.raw_zero())
    torch.testing.assert_close(normalised, (raw - mean) / std, rtol=1e-5, atol=1e-5)
    unfilled = augment((images - mean) / std, kind, torch.Generator().manual_seed(2))
    assert not torch.allclose(unfilled, (raw - mean) / std, atol=1e-3)  # 0 padding differs


def test_digits_split_is_stratified_and_a_partition(digits: datasets.DataBundle) -> None:
    from sklearn.datasets import load_digits

    full = load_digits()
    counts = np.bincount(full.target, minlength=10)
    test_counts = np.bincount(digits.test[1].numpy(), minlength=10)
    assert np.all(np.abs(test_counts - 0.25 * counts) <= 1)
    # train + test hold every sample exactly once: the sorted rows (label, pixels) match.

    def rows(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        stats = digits.normalization  # back to raw pixel counts 0..16
        raw = (x.double() * stats.std[0] + stats.mean[0]) * 16
        return np.column_stack([y.numpy(), raw.reshape(len(y), -1).round().numpy()])

    split = np.concatenate([rows(*digits.train), rows(*digits.test)])
    whole = np.column_stack([full.target, full.images.reshape(len(full.target), -1)])
    assert np.array_equal(split[np.lexsort(split.T[::-1])], whole[np.lexsort(whole.T[::-1])])


def test_stdlib_text_windows_and_info() -> None:
    bundle = datasets.load("stdlib-text", args=SMALL_TEXT)
    assert bundle.info == datasets.DataInfo("language_model", (32,), 256)
    (x, y), (x_test, y_test) = bundle.train, bundle.test
    assert x.dtype == y.dtype == torch.int64 and x.shape[1] == 32 and x.shape == y.shape
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(x_test[:, 1:], y_test[:, :-1])
    assert (x.numel() + x_test.numel()) / 32 * 33 <= 30_000
    assert 0 <= int(x.min()) and int(x.max()) < 256
    assert datasets.load("stdlib-text", args=SMALL_TEXT).fingerprint() == bundle.fingerprint()


def test_stdlib_text_splits_by_file() -> None:
    args = {"max_chars": 30_000, "context": 32, "test_fraction": 0.1}
    documents = text.stdlib_documents(args)
    assert sum(len(d) for _, d in documents) == 30_000
    assert len({path for path, _ in documents}) == len(documents)
    train_docs, test_docs = text.split_documents(documents, 0.1)
    assert {p for p, _ in train_docs}.isdisjoint({p for p, _ in test_docs})
    assert train_docs + test_docs == documents
    bundle = datasets.load("stdlib-text", args=args)
    train_bytes = b"".join(d for _, d in train_docs)
    first = bytes(torch.cat([bundle.train[0][0], bundle.train[1][0][-1:]]).tolist())
    assert first == train_bytes[:33]
    test_bytes = b"".join(d for _, d in test_docs)
    assert bytes(bundle.test[0][0].tolist()) == test_bytes[:32]


def test_stdlib_files_are_sorted_and_exclude_tests() -> None:
    files = text.stdlib_files()
    assert len(files) > 100
    assert not any(set(p.parts) & {"test", "tests", "idlelib", "lib2to3", "site-packages"}
                   for p in files)


def test_convection_points_lie_in_the_domain() -> None:
    bundle = datasets.load("convection", args={"grid": [8, 4], "collocation": 500})
    assert bundle.info == datasets.DataInfo("pinn", (2,), 1)
    (points,), (grid,) = bundle.train, bundle.test
    two_pi = torch.tensor(2 * math.pi, dtype=torch.float32)
    assert points.shape == (500, 2) and points.dtype == torch.float32
    assert bool((points[:, 0] >= 0).all() and (points[:, 0] < two_pi).all())
    assert bool((points[:, 1] >= 0).all() and (points[:, 1] <= 1).all())
    assert grid.shape == (32, 2) and grid[:, 1].min() == 0 and grid[:, 1].max() == 1
    assert torch.allclose(grid.reshape(8, 4, 2)[:, 0, 0], torch.arange(8) * two_pi / 8)
    extras = bundle.extras
    initial, left, right = extras["initial"], extras["boundary_left"], extras["boundary_right"]
    assert initial.shape == (256, 2) and bool((initial[:, 1] == 0).all())
    assert left.shape == right.shape == (100, 2)
    assert bool((left[:, 0] == 0).all() and (right[:, 0] == two_pi).all())
    assert torch.equal(left[:, 1], right[:, 1])
    again = datasets.load("convection", args={"grid": [8, 4], "collocation": 500})
    assert again.fingerprint() == bundle.fingerprint()
    other_seed = datasets.load("convection", args={"seed": 1})
    assert not torch.equal(other_seed.train[0][:500], points)


@pytest.mark.parametrize("beta", [0.0, 1.0, 30.0])
def test_exact_solution_solves_the_convection_problem(beta: float) -> None:
    generator = torch.Generator().manual_seed(0)
    points = torch.rand(200, 2, generator=generator, dtype=torch.float64)
    points[:, 0] *= 2 * math.pi
    points.requires_grad_(True)
    u = datasets.exact_solution(points, beta)
    assert u.shape == (200,)
    (grad,) = torch.autograd.grad(u.sum(), points)
    residual = grad[:, 1] + beta * grad[:, 0]  # u_t + beta u_x
    assert residual.abs().max() < 1e-10
    x = points.detach()[:, 0]
    start = torch.stack([x, torch.zeros_like(x)], dim=1)
    assert torch.allclose(convection.exact_solution(start, beta), torch.sin(x))
    shifted = points.detach() + torch.tensor([2 * math.pi, 0.0], dtype=torch.float64)
    assert torch.allclose(datasets.exact_solution(shifted, beta), u.detach(), atol=1e-9)


def test_subsample_keeps_count_and_is_deterministic(digits: datasets.DataBundle) -> None:
    small = digits.subsample(0.1)
    assert small.num_train == round(1347 * 0.1) and small.train[1].shape == (135,)
    assert small.fingerprint() == digits.subsample(0.1).fingerprint()
    assert small.test is digits.test and digits.subsample(1.0) is digits
    members = {tuple(row.tolist()) for row in digits.train[0].reshape(1347, -1)}
    assert all(tuple(row.tolist()) in members for row in small.train[0].reshape(135, -1))


# ---------------------------------------------------------------- validation errors


@pytest.mark.parametrize(
    ("name", "args", "match"),
    [
        ("nope", {}, r"data.name: 'nope' is not a known data set; allowed: cifar10, cifar100, "),
        ("mnist1d", {"seed": 1}, r"data.args.seed: unknown argument for mnist1d; allowed: none"),
        ("convection", {"beta": 1.0},
         r"data.args.beta: unknown argument for convection; allowed: boundary, collocation, "),
        ("digits", [1], r"data.args: \[1\] is not allowed; expected a mapping"),
        ("stdlib-text", {"context": 0}, r"data.args.context: 0 is not allowed; .*integer >= 1"),
        ("stdlib-text", {"context": True}, r"data.args.context: True is not allowed"),
        ("stdlib-text", {"context": 1.5}, r"data.args.context: 1.5 is not allowed"),
        ("stdlib-text", {"max_chars": 1},
         r"data.args.max_chars: 1 is not allowed; expected null \(no limit\) or an integer >= 2"),
        ("stdlib-text", {"max_chars": 100, "context": 64},
         r"data.args.max_chars: 100 is not allowed; with context 64 it must be at least 130"),
        ("stdlib-text", {"test_fraction": 0}, r"data.args.test_fraction: 0 .*in \(0, 1\)"),
        ("stdlib-text", {"test_fraction": 1.0}, r"data.args.test_fraction: 1.0 is not allowed"),
        ("stdlib-text", {"test_fraction": "0.1"}, r"data.args.test_fraction: '0.1' is not"),
        ("convection", {"grid": [64]}, r"data.args.grid: \[64\] .*two integers >= 2"),
        ("convection", {"grid": [64, 1]}, r"data.args.grid: \[64, 1\] is not allowed"),
        ("convection", {"grid": "64x32"}, r"data.args.grid: '64x32' is not allowed"),
        ("convection", {"seed": -1}, r"data.args.seed: -1 is not allowed; .*integer >= 0"),
        ("convection", {"collocation": 0}, r"data.args.collocation: 0 is not allowed"),
    ],
)
def test_validate_rejects_bad_specs(name: str, args: object, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        datasets.validate(name, None, args)  # type: ignore[arg-type]
    with pytest.raises(SpecError, match=match):
        datasets.load(name, args=args)  # type: ignore[arg-type]


def test_validate_accepts_defaults_and_good_args(tmp_path: Path) -> None:
    for name in ("mnist1d", "digits", "stdlib-text", "convection"):
        datasets.validate(name, None, {})
    datasets.validate("convection", None, {"grid": (16, 8), "seed": 3})
    (tmp_path / "a.txt").write_text("hello")
    datasets.validate("text-folder", str(tmp_path), {"max_chars": None, "test_fraction": 0.5})


def test_root_rules() -> None:
    with pytest.raises(SpecError, match=r"data.root: '/x' is not used by mnist1d"):
        datasets.validate("mnist1d", "/x", {})
    for name in ("cifar10", "cifar100", "svhn", "tiny-imagenet", "text-folder"):
        with pytest.raises(SpecError, match=rf"data.root is required for {name}"):
            datasets.validate(name, None, {})
        with pytest.raises(SpecError, match=rf"data.root is required for {name}"):
            datasets.load(name, root="")


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("cifar10", r"cifar10: data.root {root}/absent is not an existing folder; download the "
                    r"CIFAR-10 binary version \(cifar-10-binary.tar.gz\)"),
        ("svhn", r"svhn: data.root {root}/absent is not an existing folder; download "
                 r"train_32x32.mat"),
        ("tiny-imagenet", r"tiny-imagenet: data.root {root}/absent is not an existing folder"),
        ("text-folder", r"text-folder: {root}/absent is not a folder"),
    ],
)
def test_missing_root_folder_is_a_data_error(tmp_path: Path, name: str, match: str) -> None:
    with pytest.raises(DataError, match=match.format(root=tmp_path)):
        datasets.validate(name, str(tmp_path / "absent"), {})


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("cifar10", r"cifar10: {root}/cifar-10-batches-bin/data_batch_1.bin, .*"
                    r"test_batch.bin not found; download the CIFAR-10 binary version "
                    r"\(cifar-10-binary.tar.gz\) from .* and extract it into {root}$"),
        ("cifar100", r"cifar100: {root}/cifar-100-binary/train.bin, {root}/cifar-100-binary/"
                     r"test.bin not found; download the CIFAR-100 binary version .* into {root}$"),
        ("svhn", r"svhn: {root}/train_32x32.mat, {root}/test_32x32.mat not found; download "
                 r"train_32x32.mat and test_32x32.mat .* and put them in {root}$"),
        ("tiny-imagenet", r"tiny-imagenet: file {root}/tiny-imagenet-200/wnids.txt not found; "
                          r"download tiny-imagenet-200.zip .* extract it into {root}$"),
        ("text-folder", r"text-folder: no \*.txt files under {root}; put your plain-text"),
    ],
)
def test_missing_files_name_the_path(tmp_path: Path, name: str, match: str) -> None:
    with pytest.raises(DataError, match=match.format(root=tmp_path)):
        datasets.validate(name, str(tmp_path), {})
    with pytest.raises(DataError, match=match.format(root=tmp_path)):
        datasets.load(name, root=tmp_path)


# ---------------------------------------------------------------- folder formats


def _cifar_records(labels: list[list[int]], start: int) -> tuple[bytes, np.ndarray]:
    """Records of label bytes + 3072 pixels; pixel values depend on record index and position."""
    count = len(labels)
    pixels = ((np.arange(count * 3072).reshape(count, 3072) + start * 7) % 256).astype(np.uint8)
    rows = np.concatenate([np.array(labels, dtype=np.uint8), pixels], axis=1)
    return rows.tobytes(), pixels


@pytest.mark.parametrize("in_subfolder", [True, False])
def test_cifar10_binary_loads_labels_and_pixels(tmp_path: Path, in_subfolder: bool) -> None:
    folder = tmp_path / "cifar-10-batches-bin" if in_subfolder else tmp_path
    folder.mkdir(exist_ok=True)
    train_pixels, train_labels = [], []
    for batch in range(1, 6):
        labels = [[(batch * 2 + i) % 10] for i in range(2)]
        data, pixels = _cifar_records(labels, batch)
        (folder / f"data_batch_{batch}.bin").write_bytes(data)
        train_pixels.append(pixels)
        train_labels += [label[0] for label in labels]
    data, test_pixels = _cifar_records([[9], [0], [3]], 99)
    (folder / "test_batch.bin").write_bytes(data)

    bundle = datasets.load("cifar10", root=str(tmp_path))
    assert bundle.info == datasets.DataInfo("classification", (3, 32, 32), 10)
    (x, y), (x_test, y_test) = bundle.train, bundle.test
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.float32
    assert y.tolist() == train_labels and y_test.tolist() == [9, 0, 3]
    expected = np.concatenate(train_pixels).reshape(10, 3, 32, 32).astype(np.float32) / 255
    assert np.allclose(_raw(bundle, x), expected, rtol=0, atol=1e-6)
    # channel 0 is the first 1024 bytes, row-major: pixel (row 1, col 2) is byte 34.
    raw_test = _raw(bundle, x_test)
    assert raw_test[0, 0, 1, 2] == pytest.approx(test_pixels[0, 34] / 255, abs=1e-6)
    assert raw_test[0, 2, 0, 0] == pytest.approx(test_pixels[0, 2048] / 255, abs=1e-6)
    assert datasets.load("cifar10", root=tmp_path).fingerprint() == bundle.fingerprint()


def _raw(bundle: datasets.DataBundle, images: torch.Tensor) -> np.ndarray:
    """Normalised images back to raw pixel values in [0, 1] (float32, as loaded)."""
    mean = torch.tensor(bundle.normalization.mean, dtype=torch.float64)[:, None, None]
    std = torch.tensor(bundle.normalization.std, dtype=torch.float64)[:, None, None]
    return (images.double() * std + mean).float().numpy()


def test_cifar_malformed_file_is_a_data_error(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    (folder / "train.bin").write_bytes(bytes(3074 + 5))
    (folder / "test.bin").write_bytes(bytes(3074))
    with pytest.raises(DataError, match=rf"cifar100: {folder}/train.bin has 3079 bytes, not a "
                                        r"whole number of 3074-byte records"):
        datasets.load("cifar100", root=tmp_path)


def test_cifar100_uses_the_fine_label(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    train, train_pixels = _cifar_records([[1, 57], [19, 99], [0, 0]], 0)
    (folder / "train.bin").write_bytes(train)
    (folder / "test.bin").write_bytes(_cifar_records([[4, 42]], 3)[0])
    bundle = datasets.load("cifar100", root=tmp_path)
    assert bundle.info.num_outputs == 100
    assert bundle.train[1].tolist() == [57, 99, 0] and bundle.test[1].tolist() == [42]
    expected = train_pixels.reshape(3, 3, 32, 32).astype(np.float32) / 255
    assert np.allclose(_raw(bundle, bundle.train[0]), expected, rtol=0, atol=1e-6)


def test_svhn_mat_maps_ten_to_zero(tmp_path: Path) -> None:
    import scipy.io

    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, size=(32, 32, 3, 4), dtype=np.uint8)
    scipy.io.savemat(tmp_path / "train_32x32.mat",
                     {"X": train_x, "y": np.array([[10], [1], [9], [5]], dtype=np.uint8)})
    scipy.io.savemat(tmp_path / "test_32x32.mat",
                     {"X": train_x[..., :2], "y": np.array([[3], [10]], dtype=np.uint8)})
    bundle = datasets.load("svhn", root=tmp_path)
    assert bundle.info == datasets.DataInfo("classification", (3, 32, 32), 10)
    (x, y), (x_test, y_test) = bundle.train, bundle.test
    assert y.tolist() == [0, 1, 9, 5] and y_test.tolist() == [3, 0] and y.dtype == torch.int64
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    expected = np.transpose(train_x, (3, 2, 0, 1)).astype(np.float32) / 255  # X[h, w, c, n]
    assert np.allclose(_raw(bundle, x), expected, rtol=0, atol=1e-6)
    assert np.allclose(_raw(bundle, x_test), expected[:2], rtol=0, atol=1e-6)  # the first two
    assert _raw(bundle, x)[2, 1, 5, 7] == pytest.approx(train_x[5, 7, 1, 2] / 255, abs=1e-6)


def test_svhn_malformed_mat_is_a_data_error(tmp_path: Path) -> None:
    import scipy.io

    scipy.io.savemat(tmp_path / "train_32x32.mat", {"images": np.zeros((2, 2))})
    (tmp_path / "test_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match=rf"svhn: {tmp_path}/train_32x32.mat lacks the variables"):
        datasets.load("svhn", root=tmp_path)


def _tiny_imagenet(root: Path) -> None:
    """Two classes (wnids.txt unsorted), solid-colour JPEGs, one greyscale."""
    from PIL import Image

    (root / "wnids.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("n02\nn01\n")
    colours = {"n01": [(255, 0, 0), (0, 0, 255)], "n02": [(0, 255, 0)]}
    for wnid, fills in colours.items():
        images = root / "train" / wnid / "images"
        images.mkdir(parents=True)
        for i, fill in enumerate(fills):
            Image.new("RGB", (64, 64), fill).save(images / f"{wnid}_{i}.JPEG", quality=95)
    (root / "val" / "images").mkdir(parents=True)
    Image.new("L", (64, 64), 128).save(root / "val" / "images" / "val_1.JPEG", quality=95)
    Image.new("RGB", (64, 64), (0, 255, 0)).save(root / "val" / "images" / "val_0.JPEG")
    (root / "val" / "val_annotations.txt").write_text(
        "val_1.JPEG\tn01\t0\t0\t63\t63\nval_0.JPEG\tn02\t1\t2\t60\t61\n"
    )


@pytest.mark.parametrize("in_subfolder", [True, False])
def test_tiny_imagenet_tree_loads(tmp_path: Path, in_subfolder: bool) -> None:
    _tiny_imagenet(tmp_path / "tiny-imagenet-200" if in_subfolder else tmp_path)
    bundle = datasets.load("tiny-imagenet", root=tmp_path)
    assert bundle.info == datasets.DataInfo("classification", (3, 64, 64), 2)
    (x, y), (x_test, y_test) = bundle.train, bundle.test
    assert x.shape == (3, 3, 64, 64) and x.dtype == torch.float32
    assert y.tolist() == [0, 0, 1] and y_test.tolist() == [1, 0]  # sorted wnids; val by file
    means = torch.from_numpy(_raw(bundle, x)).mean(dim=(2, 3))
    assert torch.allclose(means, torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, 1, 0]]), atol=0.02)
    test_means = torch.from_numpy(_raw(bundle, x_test))[1].mean(dim=(1, 2))
    assert torch.allclose(test_means, torch.full((3,), 128 / 255), atol=0.01)


def test_tiny_imagenet_bad_annotation_is_a_data_error(tmp_path: Path) -> None:
    _tiny_imagenet(tmp_path)
    (tmp_path / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match=r"val_annotations.txt line 1 does not name a known wnid"):
        datasets.load("tiny-imagenet", root=tmp_path)


def test_text_folder_reads_every_txt_in_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a.txt").write_bytes(b"0123456789" * 9)
    (tmp_path / "b" / "c.txt").write_bytes(bytes(range(200, 210)))  # not UTF-8: fine
    (tmp_path / "ignored.md").write_text("not text-folder data")
    bundle = datasets.load("text-folder", root=tmp_path, args={"context": 4})
    assert bundle.info == datasets.DataInfo("language_model", (4,), 256)
    (x, y), (x_test, y_test) = bundle.train, bundle.test
    assert x.shape == (18, 4) and x[0].tolist() == [48, 49, 50, 51] and y[0, -1] == 52
    assert x_test.tolist() == [[200, 201, 202, 203], [205, 206, 207, 208]]
    assert y_test.tolist() == [[201, 202, 203, 204], [206, 207, 208, 209]]


def test_text_folder_single_file_is_cut_by_bytes(tmp_path: Path) -> None:
    (tmp_path / "input.txt").write_bytes(bytes(range(100)))
    bundle = datasets.load("text-folder", root=tmp_path,
                           args={"context": 9, "test_fraction": 0.2, "max_chars": 90})
    assert bundle.train[0].shape == (7, 9) and bundle.test[0].shape == (1, 9)
    assert bundle.test[0][0].tolist() == list(range(72, 81))


def test_text_too_short_for_a_window(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("short")
    with pytest.raises(SpecError, match=r"data.args.context: 64 needs 65 tokens per window but "
                                        r"the train split has only 4"):
        datasets.load("text-folder", root=tmp_path)
    (tmp_path / "a.txt").write_text("")
    with pytest.raises(DataError, match=rf"text-folder: every \*.txt file under {tmp_path} is"):
        datasets.load("text-folder", root=tmp_path)


@pytest.mark.parametrize("kind", ["flip", "crop", "crop-flip-rotate"])
def test_an_epochs_draws_at_once_give_the_per_batch_bits(kind) -> None:
    """epoch_draws + apply (what trainers run: one copy a step-free epoch) equal augment drawn
    batch by batch, the generator left in the same state; joined members equal each alone."""
    from zoo.augment import apply, augment, epoch_draws, joined

    images = torch.rand(2, 23, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    fill = torch.tensor([0.1, -0.2, 0.3])
    sizes = [10, 10, 3]
    per_member, expected = [], []
    for member in range(2):
        generator, reference = (torch.Generator().manual_seed(member) for _ in range(2))
        per_member.append(epoch_draws(kind, sizes, generator, "cpu"))
        batches = images[member].split(sizes)
        expected.append([augment(x, kind, reference, fill) for x in batches])
        for x, drawn, want in zip(batches, per_member[-1], expected[-1]):
            assert torch.equal(apply(x, kind, drawn, fill), want)
        assert torch.equal(generator.get_state(), reference.get_state())
    both = joined([draws[0] for draws in per_member])
    stacked = apply(images[:, :10].flatten(0, 1), kind, both, fill)
    assert torch.equal(stacked, torch.cat([expected[0][0], expected[1][0]]))
