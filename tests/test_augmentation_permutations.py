"""Permutation specs leave every network's function unchanged; augmentation is seeded."""

import copy

import pytest
import torch

from loaders import Augment, ZooDataset, recondition_batchnorm
from loaders.augmentation import Augmenter, item_generator
from zoo import architectures, datasets
from zoo.architectures.permutations import (PermutationGroup, module_groups,
                                            permutation_groups, permute)
from zoo.datasets.base import DataInfo
from zoo.layout import layout_of
from zoo.objective import Objective


@pytest.fixture(scope="module")
def mnist1d():
    return datasets.load("mnist1d")


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


def built(family, bundle, width, **args):
    """A seeded model whose BatchNorm statistics are estimated on real train inputs."""
    torch.manual_seed(0)
    model = architectures.build(family, width=width, info=bundle.info, args=args)
    return recondition_batchnorm(model, bundle.train[0][:256].split(64))


def random_perms(groups, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return {g.name: torch.randperm(g.size, generator=generator) for g in groups}


# ResNet-50 at width 2 stacks 16 BatchNorm'd blocks of 2-8 channels: float32 rounding of the
# reordered sums alone reaches 1e-4 there, so it is checked in float64 (where it is 1e-13)
@pytest.mark.parametrize("family,data,width,args,dtype,tolerance", [
    ("mlp", "mnist1d", 16, {"depth": 2}, torch.float32, 1e-5),
    ("cnn", "mnist1d", 6, {"batch_norm": True}, torch.float32, 1e-5),
    ("cnn", "digits", 4, {"batch_norm": False}, torch.float32, 1e-5),
    ("resnet18", "digits", 2, {}, torch.float32, 1e-5),
    ("resnet50", "digits", 2, {}, torch.float64, 1e-10)])
def test_permuted_networks_compute_the_same_outputs(request, family, data, width, args, dtype,
                                                   tolerance):
    bundle = request.getfixturevalue(data)
    model = built(family, bundle, width, **args).to(dtype)
    groups = permutation_groups(family, model.state_dict())
    permuted = copy.deepcopy(model)
    state = permute(model.state_dict(), groups, random_perms(groups))
    permuted.load_state_dict(state)
    changed = [n for n, v in model.state_dict().items() if not torch.equal(v, state[n])]
    assert changed  # the permutation did move units
    inputs = bundle.test[0][:256].to(dtype)
    with torch.no_grad():
        torch.testing.assert_close(permuted(inputs), model(inputs), rtol=0, atol=tolerance)


def test_resnet_streams_share_one_permutation_per_stage():
    info = DataInfo("classification", (1, 8, 8), 10)
    model = architectures.build("resnet18", width=2, info=info)
    groups = {g.name: g for g in module_groups(model)}
    assert sorted(n for n in groups if n.startswith("stream")) == [
        "stream.layer2", "stream.layer3", "stream.layer4", "stream.stem"]
    stem = set(groups["stream.stem"].members)
    assert {("conv1.weight", 0), ("bn1.running_var", 0), ("layer1.1.conv2.weight", 0),
            ("layer1.1.bn2.bias", 0), ("layer2.0.conv1.weight", 1),
            ("layer2.0.downsample.0.weight", 1)} <= stem
    assert ("fc.weight", 1) in groups["stream.layer4"].members
    assert groups["layer3.0.conv1"] == PermutationGroup("layer3.0.conv1", 8, (
        ("layer3.0.conv1.weight", 0), ("layer3.0.bn1.weight", 0), ("layer3.0.bn1.bias", 0),
        ("layer3.0.bn1.running_mean", 0), ("layer3.0.bn1.running_var", 0),
        ("layer3.0.conv2.weight", 1)))


def test_families_without_a_spec_are_refused():
    with pytest.raises(ValueError, match="family 'vit' has no permutation spec"):
        permutation_groups("vit", {})


def test_augmented_items_are_the_same_function(tiny_zoo, mnist1d):
    plain = ZooDataset(tiny_zoo, where={"width": 8})
    augmented = ZooDataset(tiny_zoo, where={"width": 8}, representation="state_dict",
                           augment=Augment(permute=True, seed=3))
    model = plain.load_model(0)
    state = augmented.decode(augmented[0])
    assert not torch.equal(state["1.weight"], model.state_dict()["1.weight"])
    permuted = copy.deepcopy(model)
    permuted.load_state_dict(state)
    inputs = mnist1d.test[0]
    with torch.no_grad():
        torch.testing.assert_close(permuted(inputs), model(inputs), rtol=0, atol=1e-5)
    objective = Objective(mnist1d)
    assert objective.evaluate(permuted, "test")["accuracy"] == plain.metadata(0)["test_accuracy"]


def test_augmentation_is_seeded_by_seed_epoch_and_index(tiny_zoo):
    def dataset(seed):
        return ZooDataset(tiny_zoo, augment=Augment(permute=True, additive_noise=0.1,
                                                    seed=seed))

    first, again, other = dataset(0), dataset(0), dataset(1)
    assert torch.equal(first[1]["weights"], again[1]["weights"])
    assert not torch.equal(first[1]["weights"], other[1]["weights"])
    before = first[1]["weights"]
    first.set_epoch(1)
    assert not torch.equal(first[1]["weights"], before)


def test_noise_changes_float_values_only():
    torch.manual_seed(0)
    info = DataInfo("classification", (40,), 10)
    model = architectures.build("cnn", width=3, info=info, args={"batch_norm": True})
    layout = layout_of(model, "cnn", 3, {"batch_norm": True})
    flat = layout.flatten(model.state_dict())
    flat = torch.from_numpy(flat)
    augmenter = Augmenter(layout, Augment(additive_noise=0.5, multiplicative_noise=0.1))
    noisy = augmenter.noise(flat, item_generator(0, 0, 0))
    state, noisy_state = layout.unflatten(flat), layout.unflatten(noisy)
    assert torch.equal(noisy_state["2.num_batches_tracked"], state["2.num_batches_tracked"])
    difference = (noisy - flat)[augmenter.floats.bool()]
    assert 0.4 < float(difference.std()) < 0.6
    assert torch.equal(augmenter.permute(flat, item_generator(0, 0, 0)), flat)  # permute off


@pytest.mark.parametrize("augment,message", [
    (Augment(permute=True), "augment: .* is not allowed for split 'val'"),
    ("permute", "augment: 'permute' is not allowed for split 'val'")])
def test_augmentation_is_for_the_train_split_only(tiny_zoo, augment, message):
    with pytest.raises(ValueError, match=message):
        ZooDataset(tiny_zoo, split="val", augment=augment)


@pytest.mark.parametrize("field,value", [("additive_noise", -1.0),
                                         ("multiplicative_noise", float("nan")),
                                         ("seed", 1.5)])
def test_augment_fields_are_validated(field, value):
    with pytest.raises(ValueError, match=f"augment.{field}: .* is not allowed"):
        Augment(**{field: value})
