"""Hostile training states (issue 21, item 4): a state is resumed only when it is the one its
run saved. Shifted weights, a file name leaving the store, a link, a FIFO, a truncated file,
another model's state, a changed spooled checkpoint: each is discarded and the model trained
from scratch to the very weights of a clean run, said in one line; no byte outside the zoo
is read, written or deleted, and nothing blocks."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pytest
import torch
from safetensors.torch import load, save

from generators.cli import main
from tests.conftest import write_spec
from tests.test_confined_writes import drop_cell, one_line_error, snapshot
from zoo import datasets
from zoo.folder.names import SPOOL, STATE
from zoo.folder.reader import ZooReader
from zoo.specfile import load_spec
from zoo.train import STATE_JSON, StateStore, train_model, train_population
from zoo.train.spool import Spool
from zoo.train.state import population_key

DISCARDED = r"; discarded, trained again from scratch"


class Killed(Exception):
    """Raised from a store's hook: the run dies as a killed worker would."""


def kill_at(epoch: int) -> Callable[[int], None]:
    def hook(finished: int) -> None:
        if finished == epoch:
            raise Killed(f"killed after epoch {epoch}")
    return hook


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging: SIGALRM interrupts a blocked open or read."""
    def expire(*_: object) -> None:
        raise TimeoutError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def mnist1d():
    return datasets.load("mnist1d")


@pytest.fixture(scope="module")
def clean(tmp_path_factory, mnist1d):
    """The tiny spec, its first two jobs, and a clean spooled run of each (the reference)."""
    folder = tmp_path_factory.mktemp("clean")
    spec = load_spec(write_spec(folder))
    jobs = spec.jobs(mnist1d.fingerprint())[:2]
    spool = Spool(folder / "spool")
    runs = [train_model(spec, job, mnist1d, hand_off=spool.hand_off(job.model_id))
            for job in jobs]
    return spec, jobs, runs


def interrupt(spec, job, bundle, root: Path) -> StateStore:
    """Train `job` as generate does (state under root/state, checkpoints in its spool) and die
    after epoch 2 is trained but before it is saved: the state ends at epoch 1."""
    with pytest.raises(Killed):
        train_model(spec, job, bundle, store=StateStore(root / STATE, job.model_id,
                                                        on_epoch=kill_at(2)),
                    hand_off=Spool(root / SPOOL).hand_off(job.model_id))
    return StateStore(root / STATE, job.model_id)


def resume(spec, job, bundle, root: Path):
    with deadline(60):
        return train_model(spec, job, bundle, store=StateStore(root / STATE, job.model_id),
                           hand_off=Spool(root / SPOOL).hand_off(job.model_id))


def facts(trained) -> list[tuple]:
    """Every kept checkpoint's epoch, evaluations, finiteness and spooled file's sha256."""
    return [(c.epoch, c.train, c.test, c.finite, c.spooled) for c in trained.checkpoints]


def shifted(data: bytes) -> bytes:
    """A state file's bytes with every model weight moved by 0.5 (the issue's attack)."""
    return save({k: v + 0.5 if k.startswith("model/") or "." in k else v
                 for k, v in load(data).items()})


def body(store: StateStore) -> dict:
    return json.loads((store.path / STATE_JSON).read_text())


def rewrite(store: StateStore, **changes: object) -> None:
    (store.path / STATE_JSON).write_text(json.dumps({**body(store), **changes}))


def state_file(store: StateStore) -> Path:
    return store.path / body(store)["file"]


# --- the attacks: each changes a saved state (and may plant files in `outside`) -------------------

def shift_the_weights(store: StateStore, outside: Path, other: StateStore) -> None:
    state_file(store).write_bytes(shifted(state_file(store).read_bytes()))


def name_a_file_outside(store: StateStore, outside: Path, other: StateStore) -> None:
    evil = outside / "evil.safetensors"  # a valid state, recorded digest and all
    evil.write_bytes(shifted(state_file(store).read_bytes()))
    rewrite(store, file="../../outside/evil.safetensors",
            sha256=hashlib.sha256(evil.read_bytes()).hexdigest())


def name_a_checkpoint_outside(store: StateStore, outside: Path, other: StateStore) -> None:
    evil = outside / "evil.safetensors"
    evil.write_bytes(save({"w": torch.ones(2)}))
    saved = body(store)
    saved["checkpoints"][0].update(file="../../outside/evil.safetensors",
                                   sha256=hashlib.sha256(evil.read_bytes()).hexdigest())
    rewrite(store, checkpoints=saved["checkpoints"])


def link_the_state_file(store: StateStore, outside: Path, other: StateStore) -> None:
    target = outside / "state.safetensors"  # the very bytes: only the link is wrong
    shutil.copyfile(state_file(store), target)
    state_file(store).unlink()
    state_file(store).symlink_to(target)


def link_the_store(store: StateStore, outside: Path, other: StateStore) -> None:
    shutil.copytree(store.path, outside / "store")
    shutil.rmtree(store.path)
    store.path.symlink_to(outside / "store")


def fifo_state_file(store: StateStore, outside: Path, other: StateStore) -> None:
    path = state_file(store)
    path.unlink()
    os.mkfifo(path)


def fifo_state_json(store: StateStore, outside: Path, other: StateStore) -> None:
    (store.path / STATE_JSON).unlink()
    os.mkfifo(store.path / STATE_JSON)


def truncate_the_state_file(store: StateStore, outside: Path, other: StateStore) -> None:
    data = state_file(store).read_bytes()
    state_file(store).write_bytes(data[:len(data) // 2])


def truncate_state_json(store: StateStore, outside: Path, other: StateStore) -> None:
    data = (store.path / STATE_JSON).read_bytes()
    (store.path / STATE_JSON).write_bytes(data[:len(data) // 2])


def copy_another_models_state(store: StateStore, outside: Path, other: StateStore) -> None:
    shutil.rmtree(store.path)
    shutil.copytree(other.path, store.path)


def copy_another_models_state_renamed(store: StateStore, outside: Path,
                                      other: StateStore) -> None:
    copy_another_models_state(store, outside, other)
    rewrite(store, key=store.key)  # its key says this model; its identity does not


def shift_a_spooled_checkpoint(store: StateStore, outside: Path, other: StateStore) -> None:
    path = Spool(store.folder / "spool").path(store.key, 0)
    path.write_bytes(shifted(path.read_bytes()))


def an_older_format(store: StateStore, outside: Path, other: StateStore) -> None:
    rewrite(store, format_version=1)


ATTACKS = {  # attack: what the discarding line says
    shift_the_weights: r"sha256 differs",
    name_a_file_outside: r"not as a saved state has them",
    name_a_checkpoint_outside: r"is not a plain name of this store",
    link_the_state_file: r"is a symbolic link",
    link_the_store: r"is a symbolic link",
    fifo_state_file: r"is a FIFO, not a regular file",
    fifo_state_json: r"is a FIFO, not a regular file",
    truncate_the_state_file: r"sha256 differs",
    truncate_state_json: r"unreadable training state",
    copy_another_models_state: r"saved for '\w+', not for this store's",
    copy_another_models_state_renamed: r"saved by another run",
    shift_a_spooled_checkpoint: r"spooled checkpoint of epoch 0 is not the one this state saved",
    an_older_format: r"format version 1, this code reads 2",
}


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda attack: attack.__name__)
def test_a_hostile_state_is_discarded_and_the_model_trained_from_scratch(tmp_path, mnist1d,
                                                                         clean, attack):
    spec, (job, other_job), (reference, _) = clean
    root, outside = tmp_path / "zoo", tmp_path / "outside"
    outside.mkdir()
    (outside / "important.txt").write_text("keep me")
    store = interrupt(spec, job, mnist1d, root)
    other = interrupt(spec, other_job, mnist1d, root)
    attack(store, outside, other)
    before = snapshot(outside)
    resumed = resume(spec, job, mnist1d, root)
    [note] = resumed.notes
    assert "\n" not in note and re.search(ATTACKS[attack], note), note
    assert note.startswith(str(store.path / STATE_JSON)) and note.endswith(DISCARDED), note
    assert facts(resumed) == facts(reference)  # every spooled file the clean run's, bit for bit
    assert snapshot(outside) == before  # nothing outside written or deleted
    saved = body(StateStore(root / STATE, job.model_id))  # the retrained run's own state now
    assert saved["key"] == job.model_id and saved["epoch"] == spec.training.epochs
    assert not resume(spec, job, mnist1d, root).notes  # and it resumes as its own


def test_a_clean_state_resumes_without_a_word(tmp_path, mnist1d, clean):
    spec, (job, _), (reference, _) = clean
    interrupt(spec, job, mnist1d, tmp_path)
    resumed = resume(spec, job, mnist1d, tmp_path)
    assert resumed.notes == () and facts(resumed) == facts(reference)


# --- through `zoo generate` ----------------------------------------------------------------------

def _plant_interrupted_state(zoo: Path, spec_path: Path) -> list[StateStore]:
    """The states a generate killed inside the dropped cell's models would leave (epoch 1 of
    2), under the key generate uses (one per model, or the population's)."""
    from generators.plan import make_plan, plan_tasks

    spec, bundle = load_spec(spec_path), datasets.load("mnist1d")
    [task] = plan_tasks(make_plan(spec, bundle.fingerprint(), zoo), bundle, 2)
    jobs = [job for cell in task.cells for job in cell]
    spool = Spool(zoo / SPOOL)
    if task.stacked:
        stores = [StateStore(zoo / STATE, population_key(jobs), on_epoch=kill_at(2))]
        with pytest.raises(Killed):
            train_population(spec, jobs, bundle, store=stores[0],
                             hand_offs=[spool.hand_off(j.model_id) for j in jobs])
    else:
        stores = [StateStore(zoo / STATE, job.model_id, on_epoch=kill_at(2)) for job in jobs]
        for job, store in zip(jobs, stores):
            with pytest.raises(Killed):
                train_model(spec, job, bundle, store=store, hand_off=spool.hand_off(job.model_id))
    return [StateStore(s.folder, s.key) for s in stores]


def _tables(root: Path) -> dict:
    """Every row of the three tables, timings left out (wall-clock seconds vary)."""
    reader = ZooReader(root)
    out = {}
    for name in ("models", "cells", "pairs"):
        rows = reader.table(name).to_pylist()
        out[name] = sorted((json.dumps({k: v for k, v in row.items() if "seconds" not in k},
                                       sort_keys=True, default=str) for row in rows))
    return out


def test_generate_retrains_a_model_whose_state_was_shifted_to_the_clean_zoo(zoo, tiny_zoo,
                                                                          tmp_path, capsys):
    drop_cell(zoo)
    spec_path = write_spec(tmp_path)
    stores = _plant_interrupted_state(zoo, spec_path)
    for store in stores:
        state_file(store).write_bytes(shifted(state_file(store).read_bytes()))
    capsys.readouterr()
    with deadline(300):
        assert main(["generate", str(spec_path), "--out", str(zoo), "--no-progress"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines()
                if line.startswith("warning:")]
    assert len(warnings) == len(stores), warnings
    assert all("sha256 differs" in w and w.endswith(DISCARDED) for w in warnings), warnings
    assert _tables(zoo) == _tables(tiny_zoo)
    assert not (zoo / STATE).exists()
    assert main(["verify", str(zoo)]) == 0


@pytest.mark.parametrize("planted", ["link", "fifo"])
def test_generate_refuses_a_linked_or_fifo_state_file_before_training(zoo, tmp_path, capsys,
                                                                      planted):
    drop_cell(zoo)
    spec_path = write_spec(tmp_path)
    [store, *_] = _plant_interrupted_state(zoo, spec_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    named = state_file(store)
    if planted == "link":
        shutil.copyfile(named, outside / "state.safetensors")
        named.unlink()
        named.symlink_to(outside / "state.safetensors")
    else:
        named.unlink()
        os.mkfifo(named)
    before = snapshot(outside)
    with deadline(300):
        one_line_error(capsys, ["generate", str(spec_path), "--out", str(zoo),
                                "--no-progress"], named)
    assert snapshot(outside) == before
