"""Architecture registry: shapes, training, determinism, exact sizes and every validation branch."""

from __future__ import annotations

import copy
import math
import re
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from zoo.architectures import build, families, validate_args
from zoo.datasets.base import DataInfo
from zoo.errors import SpecError

DIGITS = DataInfo("classification", (1, 8, 8), 10)
CIFAR = DataInfo("classification", (3, 32, 32), 10)
MNIST1D = DataInfo("classification", (40,), 10)
TEXT = DataInfo("language_model", (12,), 30)
PDE = DataInfo("pinn", (2,), 1)

# family -> (data info, tiny width, output shape for a batch of 8)
CASES = {
    "mlp": (MNIST1D, 8, (8, 10)),
    "cnn": (MNIST1D, 4, (8, 10)),
    "resnet18": (DIGITS, 2, (8, 10)),
    "resnet50": (DIGITS, 2, (8, 10)),
    "vit": (DIGITS, 8, (8, 10)),
    "gpt": (TEXT, 8, (8, 12, 30)),
    "pinn-mlp": (PDE, 8, (8, 1)),
}


def batch(info: DataInfo, seed: int = 0, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random batch (inputs, targets) that suits the task."""
    gen = torch.Generator().manual_seed(seed)
    if info.task == "language_model":
        tokens = torch.randint(0, info.num_outputs, (size, info.input_shape[0] + 1), generator=gen)
        return tokens[:, :-1], tokens[:, 1:]
    x = torch.randn(size, *info.input_shape, generator=gen)
    if info.task == "pinn":
        return x, torch.randn(size, 1, generator=gen)
    return x, torch.randint(0, info.num_outputs, (size,), generator=gen)


def loss_of(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if y.is_floating_point():
        return F.mse_loss(out, y)
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def seeded_build(family: str, seed: int = 0, **kwargs) -> nn.Module:
    info, width, _ = CASES[family]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build(family, width=kwargs.pop("width", width), info=kwargs.pop("info", info),
                     **kwargs)


def test_families_sorted() -> None:
    assert families() == ["cnn", "gpt", "mlp", "pinn-mlp", "resnet18", "resnet50", "vit"]
    assert set(CASES) == set(families())


@pytest.mark.parametrize("family", sorted(CASES))
def test_forward_shape_and_functional_call(family: str) -> None:
    model = seeded_build(family)
    x, _ = batch(CASES[family][0])
    out = model(x)
    assert out.shape == CASES[family][2]
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    torch.testing.assert_close(functional_call(model, state, (x,)), out, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # vmap falls back for attention
@pytest.mark.parametrize("family", sorted(CASES))
def test_stacked_population_under_vmap(family: str) -> None:
    members = [seeded_build(family, seed) for seed in range(3)]
    params, buffers = stack_module_state(members)
    skeleton = copy.deepcopy(members[0]).to("meta")
    x, y = batch(CASES[family][0])

    def member_loss(p, b, x, y):
        return loss_of(functional_call(skeleton, (p, b), (x,)), y)

    losses = vmap(member_loss, in_dims=(0, 0, None, None))(params, buffers, x, y)
    grads = vmap(grad(member_loss), in_dims=(0, 0, None, None))(params, buffers, x, y)
    expected = torch.stack([loss_of(member(x), y) for member in members])
    torch.testing.assert_close(losses, expected, rtol=1e-4, atol=1e-5)
    assert grads.keys() == params.keys()


@pytest.mark.parametrize("family", sorted(CASES))
def test_sgd_steps_reduce_loss(family: str) -> None:
    model = seeded_build(family)
    x, y = batch(CASES[family][0])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(20):
        loss = loss_of(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.mark.parametrize("family", sorted(CASES))
def test_same_seed_same_params_and_global_rng_used(family: str) -> None:
    first, again, other = seeded_build(family, 0), seeded_build(family, 0), seeded_build(family, 1)
    for (name, a), b, c in zip(first.state_dict().items(), again.state_dict().values(),
                               other.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, c) for a, c in zip(first.parameters(), other.parameters()))


def test_build_does_not_reseed() -> None:
    torch.manual_seed(0)
    first = build("mlp", width=4, info=MNIST1D)
    second = build("mlp", width=4, info=MNIST1D)
    assert not torch.equal(first[1].weight, second[1].weight)


# ---- validation -----------------------------------------------------------------------------

@pytest.mark.parametrize("family, args, message", [
    ("mlp", {"depth": 0}, r"architecture\.args\.depth: 0 is not allowed; expected an integer >= 1"),
    ("mlp", {"depth": -1}, r"architecture\.args\.depth: -1 is not allowed"),
    ("mlp", {"depth": 2.0}, r"architecture\.args\.depth: 2\.0 is not allowed"),
    ("mlp", {"depth": True}, r"architecture\.args\.depth: True is not allowed"),
    ("mlp", {"activation": "sigmoid"},
     r"architecture\.args\.activation: 'sigmoid' is not allowed; expected one of 'relu', 'tanh', "
     r"'gelu'"),
    ("cnn", {"depth": "2"}, r"architecture\.args\.depth: '2' is not allowed"),
    ("cnn", {"batch_norm": 1}, r"architecture\.args\.batch_norm: 1 is not allowed; expected true "
                               r"or false"),
    ("vit", {"patch_size": 0}, r"architecture\.args\.patch_size: 0 is not allowed"),
    ("vit", {"depth": 0}, r"architecture\.args\.depth: 0 is not allowed"),
    ("vit", {"heads": 0}, r"architecture\.args\.heads: 0 is not allowed"),
    ("vit", {"mlp_ratio": 0.5}, r"architecture\.args\.mlp_ratio: 0\.5 is not allowed"),
    ("gpt", {"depth": None}, r"architecture\.args\.depth: None is not allowed"),
    ("gpt", {"heads": -2}, r"architecture\.args\.heads: -2 is not allowed"),
    ("pinn-mlp", {"depth": 0}, r"architecture\.args\.depth: 0 is not allowed"),
    ("mlp", {"width": 3}, r"architecture\.args\.width: unknown argument for family 'mlp'; "
                          r"expected activation, depth"),
    ("resnet18", {"depth": 3}, r"architecture\.args\.depth: unknown argument for family "
                               r"'resnet18'; expected no arguments"),
    ("resnet50", {"blocks": [1]}, r"architecture\.args\.blocks: unknown argument"),
    ("gpt", {"patch_size": 4}, r"architecture\.args\.patch_size: unknown argument"),
    ("resnet34", {}, r"architecture\.family: 'resnet34' is not allowed; expected one of cnn, gpt, "
                     r"mlp, pinn-mlp, resnet18, resnet50, vit"),
    ("mlp", [("depth", 2)], r"architecture\.args: \[\('depth', 2\)\] is not allowed; expected a "
                            r"mapping"),
])
def test_validate_args_errors(family: str, args, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        validate_args(family, args)
    with pytest.raises(SpecError, match=message):  # build checks before it builds
        build(family, width=4, info=CASES.get(family, CASES["mlp"])[0], args=args)


@pytest.mark.parametrize("family", sorted(CASES))
def test_validate_args_accepts_defaults(family: str) -> None:
    validate_args(family, {})


def test_validate_args_accepts_every_argument() -> None:
    validate_args("mlp", {"depth": 1, "activation": "gelu"})
    validate_args("cnn", {"depth": 3, "batch_norm": True})
    validate_args("vit", {"patch_size": 2, "depth": 1, "heads": 4, "mlp_ratio": 4})
    validate_args("gpt", {"depth": 1, "heads": 4})
    validate_args("pinn-mlp", {"depth": 2})


@pytest.mark.parametrize("width", [0, -3, 2.5, True])
def test_build_rejects_bad_width(width) -> None:
    with pytest.raises(SpecError, match=rf"architecture\.width: {width!r} is not allowed; "
                                        r"expected an integer >= 1"):
        build("mlp", width=width, info=MNIST1D)


@pytest.mark.parametrize("family, info, task", [
    ("mlp", TEXT, "classification"), ("cnn", PDE, "classification"),
    ("resnet18", TEXT, "classification"), ("resnet50", PDE, "classification"),
    ("vit", TEXT, "classification"), ("gpt", MNIST1D, "language_model"),
    ("pinn-mlp", MNIST1D, "pinn"),
])
def test_build_rejects_wrong_task(family: str, info: DataInfo, task: str) -> None:
    with pytest.raises(SpecError, match=rf"architecture\.family: '{family}' is not allowed for a "
                                        rf"'{info.task}' data set; expected a '{task}' data set"):
        build(family, width=4, info=info)


@pytest.mark.parametrize("family, shape, expected", [
    ("cnn", (1, 2, 3, 4), r"\(L,\), \(C, L\) or \(C, H, W\)"),
    ("resnet18", (40,), r"\(C, H, W\) images"),
    ("resnet50", (3, 40), r"\(C, H, W\) images"),
    ("vit", (40,), r"\(C, H, W\) images"),
])
def test_build_rejects_wrong_image_shape(family: str, shape: tuple[int, ...],
                                         expected: str) -> None:
    message = rf"architecture\.family: '{family}' cannot take input_shape {re.escape(str(shape))}"
    with pytest.raises(SpecError, match=rf"{message}; expected {expected}"):
        build(family, width=4, info=DataInfo("classification", shape, 10))


def test_build_rejects_wrong_sequence_and_point_shapes() -> None:
    with pytest.raises(SpecError, match=r"'gpt' cannot take input_shape \(4, 4\); expected "
                                        r"\(sequence_length,\) token ids"):
        build("gpt", width=4, info=DataInfo("language_model", (4, 4), 30))
    with pytest.raises(SpecError, match=r"'pinn-mlp' cannot take input_shape \(2, 1\); expected "
                                        r"\(d,\) coordinates"):
        build("pinn-mlp", width=4, info=DataInfo("pinn", (2, 1), 1))


def test_vit_patch_size_must_divide_the_image() -> None:
    with pytest.raises(SpecError, match=r"architecture\.args\.patch_size: 3 does not divide the "
                                        r"image sides \(8, 8\); expected a common divisor"):
        build("vit", width=8, info=DIGITS, args={"patch_size": 3})


@pytest.mark.parametrize("family, info", [("vit", DIGITS), ("gpt", TEXT)])
def test_heads_must_divide_width(family: str, info: DataInfo) -> None:
    with pytest.raises(SpecError, match=r"architecture\.args\.heads: 4 does not divide "
                                        r"architecture\.width 6; expected a width that is a "
                                        r"multiple of heads"):
        build(family, width=6, info=info, args={"heads": 4})
    assert build(family, width=8, info=info, args={"heads": 4})(batch(info)[0]).shape[0] == 8


# ---- per-family structure -------------------------------------------------------------------

def test_mlp_layers_follow_depth_and_activation() -> None:
    model = build("mlp", width=5, info=DIGITS, args={"depth": 3, "activation": "tanh"})
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 5), (5, 5), (5, 5), (5, 10)]
    assert sum(isinstance(m, nn.Tanh) for m in model) == 3


def test_cnn_1d_2d_pooling_and_batch_norm() -> None:
    signal = build("cnn", width=4, info=DataInfo("classification", (2, 9), 3), args={"depth": 3})
    assert sum(isinstance(m, nn.Conv1d) for m in signal) == 3
    assert sum(isinstance(m, nn.MaxPool1d) for m in signal) == 3  # 9 -> 4 -> 2 -> 1
    image = build("cnn", width=4, info=DataInfo("classification", (1, 3, 5), 3),
                  args={"depth": 3, "batch_norm": True})
    assert sum(isinstance(m, nn.MaxPool2d) for m in image) == 1  # 3x5 -> 1x2, then no more
    convs = [m for m in image if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3 and all(c.bias is None for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in image) == 3
    assert image(torch.randn(2, 1, 3, 5)).shape == (2, 3)
    plain = build("cnn", width=4, info=MNIST1D)
    assert all(m.bias is not None for m in plain if isinstance(m, nn.Conv1d))


def basic_block(c_in: int, planes: int, stride: int) -> int:
    shortcut = c_in * planes + 2 * planes if stride != 1 or c_in != planes else 0
    return 9 * c_in * planes + 9 * planes * planes + 4 * planes + shortcut


def bottleneck(c_in: int, planes: int, stride: int) -> int:
    out = 4 * planes
    shortcut = c_in * out + 2 * out if stride != 1 or c_in != out else 0
    return c_in * planes + 9 * planes * planes + planes * out + 4 * planes + 2 * out + shortcut


def resnet_params(block, expansion: int, blocks: list[int], w: int, c: int, k: int) -> int:
    """Parameters by hand: stem conv + BN, every block, Linear head."""
    total, channels = 9 * c * w + 2 * w, w
    for index, count in enumerate(blocks):
        planes = w * 2**index
        for position in range(count):
            total += block(channels, planes, 2 if index and not position else 1)
            channels = planes * expansion
    return total + channels * k + k


def test_resnet_parameter_counts_match_hand_formula() -> None:
    r18 = partial(resnet_params, basic_block, 1, [2, 2, 2, 2], c=3, k=10)
    r50 = partial(resnet_params, bottleneck, 4, [3, 4, 6, 3], c=3, k=10)
    # the formula reproduces the standard CIFAR ResNet sizes at w = 64 ...
    assert (r18(64), r50(64)) == (11_173_962, 23_520_842)
    # ... and its closed form for ResNet-18: 2724 w^2 + (150 + 9C + 8K) w + K
    assert r18(2) == 2724 * 4 + (150 + 27 + 80) * 2 + 10 == 11_420
    for family, count in [("resnet18", r18), ("resnet50", r50)]:
        for w in (2, 3):
            model = build(family, width=w, info=CIFAR)
            assert sum(p.numel() for p in model.parameters()) == count(w), (family, w)
        with torch.device("meta"):
            model = build(family, width=64, info=CIFAR)
        assert sum(p.numel() for p in model.parameters()) == count(64)


@pytest.mark.parametrize("family", ["resnet18", "resnet50"])
def test_resnet_stem_init_and_buffers(family: str) -> None:
    model = build(family, width=2, info=CIFAR)
    stem = model.conv1
    assert (stem.kernel_size, stem.stride, stem.padding) == ((3, 3), (1, 1), (1, 1))
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is None for c in convs)
    for conv in convs:  # Kaiming-uniform, fan_in, ReLU gain: U(-sqrt(6 / fan_in), +)
        fan_in = conv.weight[0].numel()
        assert conv.weight.abs().max() <= math.sqrt(6 / fan_in)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(n.weight, torch.ones_like(n.weight)) for n in norms)
    assert all(torch.equal(n.bias, torch.zeros_like(n.bias)) for n in norms)
    keys = model.state_dict().keys()
    for buffer in ("running_mean", "running_var", "num_batches_tracked"):
        assert f"bn1.{buffer}" in keys and f"layer4.0.downsample.1.{buffer}" in keys
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    assert [stage[0].conv2.out_channels for stage in stages] == [2, 4, 8, 16]  # w, 2w, 4w, 8w
    assert model.fc.in_features == (16 if family == "resnet18" else 64)


def test_resnet_handles_8x8_digits_and_stride_on_3x3() -> None:
    model = build("resnet50", width=2, info=DIGITS)
    first = model.layer2[0]
    assert first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2)
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_vit_blocks_are_prenorm_and_independently_initialised() -> None:
    model = seeded_build("vit")
    assert model.pos_embed.shape == (1, 4 + 1, 8)  # (8 / 4)^2 patches and the cls token
    assert model.cls_token.shape == (1, 1, 8)
    first, second = model.blocks
    assert first.norm_first and first.linear1.out_features == 16 and first.dropout.p == 0
    assert not torch.equal(first.linear1.weight, second.linear1.weight)


def test_gpt_is_causal_and_takes_shorter_sequences() -> None:
    model = seeded_build("gpt")
    tokens, _ = batch(TEXT)
    changed = tokens.clone()
    changed[:, 7] = (changed[:, 7] + 1) % TEXT.num_outputs
    before, after = model(tokens), model(changed)
    torch.testing.assert_close(before[:, :7], after[:, :7], rtol=0, atol=0)
    assert not torch.allclose(before[:, 7:], after[:, 7:])
    torch.testing.assert_close(model(tokens[:, :5]), before[:, :5])


def test_pinn_mlp_is_tanh_with_xavier_weights_and_zero_biases() -> None:
    model = seeded_build("pinn-mlp", width=64)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert len(linears) == 5 and sum(isinstance(m, nn.Tanh) for m in model) == 4
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in linears)
    hidden = linears[1].weight  # xavier normal: std = sqrt(2 / (fan_in + fan_out)) = 0.125
    assert abs(hidden.std().item() - 0.125) < 0.01
