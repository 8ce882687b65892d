"""Training states of a zoo on a store (a real S3 server, moto on loopback): each save copied
to state/<key>/ with state.json last, pulled into a fresh scratch by a task on any node."""

from __future__ import annotations

import copy

import torch

from zoo.folder.storestates import StoreStates
from zoo.train import StateStore, load_state
from zoo.train.state import Autosave


def saved(states: StoreStates, epoch: int) -> None:
    """Autosave at kept `epoch`: the state saved in the scratch, then copied (on_save)."""
    kept = [(e, {"w": torch.full((3,), float(e))}, {"finite": True}) for e in range(1, epoch + 1)]
    store = StateStore(states, "model-a", on_save=states.push)
    Autosave(store)(epoch, True, lambda: ({"w": torch.full((3,), float(epoch))},
                                          {"identity": "a"}, kept))


def test_a_state_pushed_by_one_worker_resumes_in_another(s3_store):
    url = s3_store.url("states/state")
    first = StoreStates(url)
    saved(first, 1)
    saved(first, 2)
    keys = s3_store.keys("states/state")
    assert keys == ["model-a/checkpoint-1.safetensors", "model-a/checkpoint-2.safetensors",
                    "model-a/state-2.safetensors", "model-a/state.json"]  # state-1 removed
    elsewhere = copy.copy(first)  # rebuilt through __reduce__, as Ray's serializer does
    assert elsewhere.scratch != first.scratch and not any(elsewhere.scratch.iterdir())
    elsewhere.pull(["model-a", "model-b"])  # model-b has no state: nothing to pull
    state = load_state(StateStore(elsewhere, "model-a"))
    assert state.epoch == 2 and torch.equal(state.tensors["w"], torch.full((3,), 2.0))
    assert [entry[0] for entry in state.checkpoints] == [1, 2]
    assert not (elsewhere.scratch / "model-b").exists()
    first.clear("model-a")
    assert s3_store.keys("states/state") == [] and not (first.scratch / "model-a").exists()
