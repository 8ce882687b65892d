"""Studies on the tiny zoo: averaging, fine-tuning and pruning reproduce what they must."""

import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from analysis.studies import run_study
from analysis.studies.averaging import averaged_metrics
from analysis.studies.common import StudyZoo
from analysis.studies.finetune import Recipe, finetune, transfer_data
from analysis.studies.prune import check_densities, magnitude_prune
from generators.cli import main
from zoo.errors import ZooError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study_zoo(tiny_zoo):
    return StudyZoo(tiny_zoo)


def final_rows(zoo):
    """model_id -> metadata of its last stored checkpoint."""
    rows = {}
    for index in range(len(zoo.columns["model_id"])):
        row = zoo.row(index)
        if row["epoch"] >= rows.get(row["model_id"], {"epoch": -1})["epoch"]:
            rows[row["model_id"]] = dict(row, index=index)
    return rows


def read(paths, name):
    table, figure = paths
    assert table.name == f"{name}.parquet" and figure.name == f"{name}.png"
    assert figure.read_bytes()[:8] == PNG_SIGNATURE and figure.stat().st_size > 10_000
    return pq.read_table(table).to_pylist()


def test_averaging_a_model_with_itself_gives_its_own_metrics(study_zoo):
    row = next(iter(final_rows(study_zoo).values()))
    model = study_zoo.models([row["index"]])[0]
    result = averaged_metrics([model, model], study_zoo.objective(row["index"]),
                              study_zoo.batchnorm_batches())
    assert result["test_accuracy"] == row["test_accuracy"]
    assert result["test_loss"] == row["test_loss"]
    assert result["batchnorm_reconditioned"] is False  # MLPs have no BatchNorm


def test_averaging_study_rows(tiny_zoo, tmp_path):
    rows = read(run_study("averaging", tiny_zoo, tmp_path, show_progress=False, last=1),
                "averaging")
    epoch_rows = [r for r in rows if r["kind"] == "epoch"]
    seed_rows = [r for r in rows if r["kind"] == "seed"]
    assert len(epoch_rows) == 8 and len(seed_rows) == 4
    recorded = {m["model_id"]: m for m in final_rows(StudyZoo(tiny_zoo)).values()}
    for row in epoch_rows:  # the average of one checkpoint is that checkpoint
        assert row["epochs"] == [2] and row["members"] == 1
        assert row["test_accuracy"] == recorded[row["model_id"]]["test_accuracy"]
        assert row["accuracy_change"] == 0.0
    for row in seed_rows:
        assert row["members"] == 2 and row["aligned"] is True and row["epoch"] == 2
        assert row["accuracy_change"] == pytest.approx(
            row["test_accuracy"] - row["single_test_accuracy_mean"])
        assert 0.0 <= row["unaligned_test_accuracy"] <= 1.0
        assert row["phase"] in {"I", "II", "III", "IV-A", "IV-B"}


def test_averaging_refuses_a_bad_last(study_zoo):
    from analysis.studies.averaging import measure

    with pytest.raises(ZooError, match=r"study averaging: last = 0 is not allowed"):
        measure(study_zoo, last=0, show_progress=False)


def test_prune_at_density_one_gives_the_recorded_accuracy_exactly(tiny_zoo, tmp_path):
    rows = read(run_study("prune", tiny_zoo, tmp_path, show_progress=False), "prune")
    assert len(rows) == 8 * 4
    recorded = {m["model_id"]: m for m in final_rows(StudyZoo(tiny_zoo)).values()}
    for row in rows:
        assert row["dense_test_accuracy"] == recorded[row["model_id"]]["test_accuracy"]
        assert row["kept_fraction"] == pytest.approx(row["density"], abs=1e-3)
        if row["density"] == 1.0:
            assert row["test_accuracy"] == row["dense_test_accuracy"]
            assert row["test_loss"] == recorded[row["model_id"]]["test_loss"]


def test_prune_keeps_the_largest_magnitudes_over_all_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned, kept = magnitude_prune(model, 0.5)
    assert kept == 9 / 18
    weights = torch.cat([pruned[0].weight.flatten(), pruned[2].weight.flatten()])
    original = torch.cat([before["0.weight"].flatten(), before["2.weight"].flatten()]).abs()
    survivors = weights != 0
    assert int(survivors.sum()) == 9
    assert original[survivors].min() >= original[~survivors].max()
    assert torch.equal(pruned[0].bias, before["0.bias"])  # biases are not pruned
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("densities,message", [([], "densities is empty"),
                                               ([0.0], "density 0.0 is not allowed"),
                                               ([1.5], "density 1.5 is not allowed")])
def test_prune_refuses_bad_densities(densities, message):
    with pytest.raises(ZooError, match=message):
        check_densities(densities)


def test_finetune_study_is_deterministic_and_changes_the_model(tiny_zoo, tmp_path, study_zoo):
    rows = read(run_study("finetune", tiny_zoo, tmp_path, show_progress=False, epochs=1),
                "finetune")
    assert len(rows) == 8 and {r["target"] for r in rows} == {"mnist1d-shifted"}
    assert all(r["finetune_epochs"] == 1 for r in rows)
    row = next(iter(final_rows(study_zoo).values()))
    model = study_zoo.models([row["index"]])[0]
    target = transfer_data("mnist1d", "classification")
    assert target.train[0].shape == (4000, 40) and target.test[0].shape == (1000, 40)
    first, second = (finetune(model, target, Recipe(epochs=1), row["seed"]) for _ in range(2))
    assert all(torch.equal(first.state_dict()[k], v) for k, v in second.state_dict().items())
    assert not torch.equal(first[1].weight, model[1].weight)


def test_transposed_digits_swap_rows_and_columns():
    from sklearn.datasets import load_digits

    target = transfer_data("digits", "classification")
    assert target.name == "digits-transposed" and target.train[0].shape == (1347, 1, 8, 8)
    from zoo import datasets

    stats = datasets.load("digits").normalization
    assert target.normalization == stats  # normalised as the zoo's inputs were
    digits = load_digits()
    raw = torch.tensor(digits.images / 16.0, dtype=torch.float32)[:, None]
    raw.sub_(torch.tensor(stats.mean, dtype=torch.float32)[:, None, None])
    raw.div_(torch.tensor(stats.std, dtype=torch.float32)[:, None, None])  # as normalize_images
    originals = sorted((image[0].numpy().tobytes(), int(label))
                       for image, label in zip(raw, digits.target))
    x = torch.cat([target.train[0], target.test[0]])[:, 0]
    y = torch.cat([target.train[1], target.test[1]])
    back = sorted((image.T.contiguous().numpy().tobytes(), int(label))
                  for image, label in zip(x, y))
    assert back == originals  # every digit, transposed back, with its own label
    assert not torch.equal(x, x.transpose(1, 2))  # and the transpose changed the images
    test, total = torch.bincount(target.test[1]), torch.bincount(y)
    assert (test - total * 0.25).abs().max() < 1  # stratified: a quarter of every class


@pytest.mark.parametrize("source,task", [("convection", "pinn"), ("cifar10", "classification")])
def test_finetune_refuses_zoos_without_a_transfer_target(source, task):
    with pytest.raises(ZooError, match=f"no transfer target for a {task} zoo on '{source}'"):
        transfer_data(source, task)


def test_unknown_study_is_refused(tiny_zoo):
    with pytest.raises(ZooError, match="'nope' is not a study"):
        run_study("nope", tiny_zoo)


def test_cli_study(tiny_zoo, tmp_path, capsys):
    out = tmp_path / "pruned"
    assert main(["study", "prune", str(tiny_zoo), "--out", str(out), "--densities", "1,0.5",
                 "--no-progress"]) == 0
    assert pq.read_table(out / "prune.parquet").num_rows == 16
    assert main(["study", "prune", str(tiny_zoo), "--out", str(out), "--densities", "2",
                 "--no-progress"]) == 2
    assert "density 2.0 is not allowed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["study", "prune", str(tiny_zoo), "--densities", "half"])
