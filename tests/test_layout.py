import numpy as np
import pytest
import torch

from zoo.layout import Layout, layout_of


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    net(torch.randn(8, 3))  # moves running stats and num_batches_tracked
    return net


def test_flatten_unflatten_round_trips_every_entry_exactly():
    net = _net()
    layout = layout_of(net, "mlp", 4, {"depth": 1})
    flat = layout.flatten(net.state_dict())
    assert flat.dtype == np.float32 and flat.shape == (layout.size,)
    back = layout.unflatten(flat)
    for name, tensor in net.state_dict().items():
        assert back[name].dtype == tensor.dtype
        assert torch.equal(back[name], tensor), name


def test_layout_json_round_trip_and_key():
    layout = layout_of(_net(), "mlp", 4, {"depth": 1})
    again = Layout.from_json(layout.to_json())
    assert again == layout
    assert layout.key.startswith("mlp-w4-")
    assert [e.name for e in layout.entries][:2] == ["0.weight", "0.bias"]


def test_malformed_layout_and_wrong_size_are_refused():
    layout = layout_of(_net(), "mlp", 4, {})
    text = layout.to_json().replace('"offset": 12', '"offset": 13')
    with pytest.raises(ValueError, match="malformed"):
        Layout.from_json(text)
    with pytest.raises(ValueError, match=f"expected {layout.size} values"):
        layout.unflatten(np.zeros(layout.size + 1, np.float32))
