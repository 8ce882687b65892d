"""Averaging helpers: exact ends of interpolation, means, and weight matching that recovers a."""

import copy

import pytest
import torch

import zoo.metrics.connectivity
from loaders import align, average, groups, interpolate, load_model, recondition_batchnorm
from zoo import architectures
from zoo.architectures.permutations import module_groups, permute
from zoo.datasets.base import DataInfo

DIGITS = DataInfo("classification", (1, 8, 8), 10)
SIGNAL = DataInfo("classification", (40,), 10)
CASES = [("mlp", SIGNAL, 8, {"depth": 2}), ("cnn", SIGNAL, 4, {"batch_norm": True}),
         ("resnet18", DIGITS, 2, {})]


def model(family, info, width, args, seed):
    """A seeded model with non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    built = architectures.build(family, width=width, info=info, args=args)
    with torch.no_grad():
        for name, buffer in built.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buffer.copy_(torch.rand_like(buffer) + 0.5)
    return built.eval()


def permuted_copy(original, seed=5):
    groups = module_groups(original)
    generator = torch.Generator().manual_seed(seed)
    perms = {g.name: torch.randperm(g.size, generator=generator) for g in groups}
    copied = copy.deepcopy(original)
    copied.load_state_dict(permute(original.state_dict(), groups, perms))
    return copied


def assert_equal_states(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


@pytest.mark.parametrize("family,info,width,args", CASES)
def test_align_recovers_a_permuted_copy_exactly(family, info, width, args):
    a = model(family, info, width, args, seed=0)
    b = permuted_copy(a)
    assert not torch.equal(next(iter(b.state_dict().values())),
                           next(iter(a.state_dict().values())))
    assert_equal_states(align(a, b, generator=torch.Generator().manual_seed(0)), a)


@pytest.mark.parametrize("family,info,width,args", CASES)
def test_align_keeps_the_function_of_b(family, info, width, args):
    a, b = model(family, info, width, args, seed=0), model(family, info, width, args, seed=1)
    aligned = align(a, b)
    inputs = torch.randn(32, *info.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(aligned(inputs), b(inputs), rtol=0, atol=1e-5)
    # matching moves b's units towards a's: the distance can only shrink
    with torch.no_grad():
        distance = [sum(float((pa - pb).square().sum()) for pa, pb in
                        zip(a.parameters(), other.parameters())) for other in (b, aligned)]
    assert distance[1] <= distance[0]


def test_align_refuses_different_widths():
    with pytest.raises(ValueError, match="different architectures or widths"):
        align(model("mlp", SIGNAL, 8, {}, 0), model("mlp", SIGNAL, 4, {}, 0))


def test_interpolate_gives_the_ends_at_zero_and_one_and_the_mean_between():
    a, b = model("cnn", SIGNAL, 4, {"batch_norm": True}, 0), model("cnn", SIGNAL, 4,
                                                                    {"batch_norm": True}, 1)
    assert_equal_states(interpolate(a, b, 0.0), a)
    assert_equal_states(interpolate(a, b, 1.0), b)
    middle = interpolate(a, b, 0.5).state_dict()
    torch.testing.assert_close(middle["1.weight"], (a.state_dict()["1.weight"]
                                                    + b.state_dict()["1.weight"]) / 2)
    assert middle["2.num_batches_tracked"].dtype == torch.int64
    assert_equal_states(a, model("cnn", SIGNAL, 4, {"batch_norm": True}, 0))


def test_average_is_the_uniform_mean():
    models = [model("mlp", SIGNAL, 8, {}, seed) for seed in range(3)]
    mean = average(models).state_dict()
    expected = sum(m.state_dict()["1.weight"] for m in models) / 3
    torch.testing.assert_close(mean["1.weight"], expected, rtol=1e-6, atol=1e-7)
    assert_equal_states(average(models[:1]), models[0])
    with pytest.raises(ValueError, match="models is empty"):
        average([])


def test_recondition_batchnorm_is_the_metrics_helper():
    assert recondition_batchnorm is zoo.metrics.connectivity.recondition_batchnorm


def test_seeds_of_a_stored_cell_align_and_average(tiny_zoo):
    first, second = next(iter(groups(tiny_zoo).values()))
    a, b = load_model(tiny_zoo, first, 2), load_model(tiny_zoo, second, 2)
    merged = average([a, align(a, b)])
    inputs = torch.randn(8, 40)
    with torch.no_grad():
        assert merged(inputs).shape == (8, 10)
